"""Image decoding and preprocessing with guards (Pillow).

Everything that turns image files into pixel arrays lives here: the magic-byte
sniffer shared with the crawler, :func:`load_image` for one image,
:func:`read_idx` for (Fashion-)MNIST style IDX files, :func:`read_images` for a
whole corpus and :func:`make_contact_sheet` to look at search results.

Images come from untrusted places (crawls, downloads), so every decode is
guarded: magic bytes before parsing, a pixel cap checked on the header before
any decoding, and every decoder failure turned into :class:`InputError` (one
file) or a :class:`RetrievalWarning` plus a skip (corpus builds).
"""
from __future__ import annotations

import gzip
import io
import json
import math
import struct
import sys
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from ..config import BUILD_CHUNK_IMAGES, DEFAULT_IMAGE_SIZE, FITS
from ..errors import InputError, RetrievalWarning
from ..items import Item
from .files import json_line, open_regular_file, walk_files

__all__ = [
    "DEFAULT_SIZE",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "MIN_SIDE",
    "ImageCorpus",
    "corpus_from_arrays",
    "iter_images",
    "load_image",
    "read_idx",
    "read_images",
    "sniff_image_type",
]

#: Largest declared width*height accepted; checked on the header, before decoding.
MAX_PIXELS = 64_000_000
#: Smallest accepted side in pixels; smaller images carry no usable content.
MIN_SIDE = 4
#: Side of the square arrays when a folder is read without ``size``.
DEFAULT_SIZE = DEFAULT_IMAGE_SIZE
#: Extensions that claim to be images: such files are warned about when broken.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".dib", ".tif", ".tiff"}
)

# Magic numbers of the formats we accept; the crawler and the readers both
# trust these bytes over file names and Content-Type headers.
_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)

# Pillow format ids per sniffed kind: opening with only the sniffed plugin keeps
# a file from being parsed by some other, less hardened decoder.
_PIL_FORMATS = {
    "jpeg": "JPEG",
    "png": "PNG",
    "gif": "GIF",
    "webp": "WEBP",
    "bmp": "BMP",
    "tiff": "TIFF",
}

_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})
_COLORS = {"grey": "grey", "gray": "grey", "rgb": "rgb"}
_FITS = FITS

# LANCZOS is the sharpest of Pillow's antialiasing filters; reducing_gap=3 lets
# Pillow shrink big images by an integer factor first at no visible cost.
_RESAMPLE = Image.Resampling.LANCZOS
_REDUCING_GAP = 3.0

# IDX type codes (third magic byte) -> big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}



def sniff_image_type(data: bytes) -> str | None:
    """Return the image format named by the first bytes of ``data``.

    Args:
        data: At least the first 12 bytes of a file or HTTP body.

    Returns:
        One of ``"jpeg"``, ``"png"``, ``"gif"``, ``"webp"``, ``"bmp"``,
        ``"tiff"``, or ``None`` when the bytes are not a supported image.
    """
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    return None


# --------------------------------------------------------------------------
# Single images
# --------------------------------------------------------------------------


class _Reject(Exception):
    """Internal: why one image cannot be used (reason text, without the name).

    Kept apart from :class:`InputError` so corpus readers can put the bare reason
    in ``skipped`` while :func:`load_image` prefixes the file name.
    """


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit={limit!r} is not a positive integer; pass e.g. limit=1000")


def _check_options(size: int, color: str, fit: str, *, allow_auto: bool) -> str:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InputError(f"size={size!r} is not a positive integer; pass e.g. size=32")
    if fit not in _FITS:
        raise InputError(f"fit={fit!r} is not supported; use 'pad' or 'crop'")
    if allow_auto and color == "auto":
        return "auto"
    try:
        return _COLORS[color]
    except (KeyError, TypeError):
        choices = "'auto', 'grey' or 'rgb'" if allow_auto else "'grey' or 'rgb'"
        raise InputError(f"color={color!r} is not supported; use {choices}") from None


def _open_checked(fp: BinaryIO) -> tuple[Image.Image, str]:
    """Open ``fp`` lazily (header only) and apply every pre-decode guard.

    Returns:
        The lazily opened image (pixels not decoded yet) and its sniffed kind.

    Raises:
        _Reject: Not an image, unreadable header, bomb, or too small.
    """
    head = fp.read(16)
    kind = sniff_image_type(head)
    if kind is None:
        raise _Reject(
            "not an image (no JPEG/PNG/GIF/WebP/BMP/TIFF signature); "
            "delete it or re-save it in one of those formats"
        )
    fp.seek(0)
    try:
        # Pillow's own bomb check fires inside open() at its (higher) limit; as
        # an error it cannot slip through as a mere warning. The filter is
        # scoped and restored on exit (process-wide before Python 3.14, so
        # threads decoding concurrently may briefly share it; harmless here).
        with warnings.catch_warnings():
            # Pillow's UserWarnings at open are about metadata it skips (a malformed
            # TIFF/EXIF tag); the pixels are what is indexed, and a broken pixel
            # stream is still rejected when it is decoded.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp, formats=[_PIL_FORMATS[kind]])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _Reject(
            f"declared size exceeds the decompression-bomb limit ({exc}); "
            "downscale the image before indexing it"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any parser failure means a corrupt file
        raise _Reject(
            f"corrupt {kind.upper()} header ({type(exc).__name__}: {exc}); "
            "re-download or re-export the file"
        ) from None
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise _Reject(
            f"declared size {w}x{h} = {w * h:,} pixels exceeds the limit of "
            f"{MAX_PIXELS:,} (decompression-bomb guard); downscale the image first"
        )
    if min(w, h) < MIN_SIDE:
        raise _Reject(
            f"{w}x{h} px is too small (each side must be at least {MIN_SIDE} px); "
            "remove it or use a larger image"
        )
    return img, kind


def _palette_is_grey(img: Image.Image) -> bool:
    # getpalette() would decode the whole image; the raw palette parsed from the
    # header is enough. Unknown palette layouts count as colour (the safe side).
    pal = img.palette
    if pal is None:
        return False
    data = pal.palette
    raw = getattr(pal, "rawmode", None) or pal.mode
    stride = {"RGB": 3, "RGBX": 4, "RGBA": 4}.get(raw, 0)
    if not stride or not data or len(data) % stride:
        return False
    rgb = np.frombuffer(bytes(data), dtype=np.uint8).reshape(-1, stride)[:, :3]
    return bool(((rgb[:, 0] == rgb[:, 1]) & (rgb[:, 1] == rgb[:, 2])).all())


def _is_grey(img: Image.Image) -> bool:
    """Whether ``img`` is greyscale, judged from its header (no decoding)."""
    if img.mode in _GREY_MODES:
        return True
    if img.mode in ("P", "PA"):
        return _palette_is_grey(img)
    return False


def _wide_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16/32-bit or float greyscale array to uint8 without clipping."""
    if mode.startswith("I;16"):
        # The full 16-bit range is known: map 0..65535 linearly onto 0..255
        # with rounding (65535 / 257 == 255 exactly).
        return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return _to_uint8(arr)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Bring any numeric array into uint8, keeping 8-bit and 16-bit data as is.

    Integer data already within 0..255 is kept; within 0..65535 it is treated as
    16-bit; anything else (negative, float, wider) is stretched min..max.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.size == 0:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 255:
            return arr.astype(np.uint8)
        if lo >= 0 and hi <= 65535:
            return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    work = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(work.min()), float(work.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.rint((work - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _normalise_mode(img: Image.Image, color: str) -> Image.Image:
    """Convert a decoded image of any Pillow mode to ``"L"`` or ``"RGB"``."""
    if img.mode in _WIDE_MODES:
        img = Image.fromarray(_wide_to_uint8(np.asarray(img), img.mode))
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        # Transparent areas must not turn black (Pillow's default when alpha is
        # dropped): composite on the same white used for letterbox padding.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    if color == "grey":
        # Pillow has no direct path to L from some modes (CMYK, YCbCr, ...).
        if img.mode not in ("1", "L", "P", "RGB"):
            img = img.convert("RGB")
        return img if img.mode == "L" else img.convert("L")
    return img if img.mode == "RGB" else img.convert("RGB")


def _fit(img: Image.Image, size: int, fit: str) -> Image.Image:
    """Resize an ``L``/``RGB`` image to ``size`` x ``size`` by letterbox or crop."""
    w, h = img.size
    if fit == "crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        if side == size and w == h:
            return img
        # box= makes Pillow resample straight from the crop, with no copy.
        return img.resize(
            (size, size), _RESAMPLE, box=(left, top, left + side, top + side),
            reducing_gap=_REDUCING_GAP,
        )
    # Scaling first and padding after is the same geometry as padding to a
    # square and then scaling, but never resamples the padding and is cheaper.
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), _RESAMPLE, reducing_gap=_REDUCING_GAP)
    if (nw, nh) == (size, size):
        return img
    canvas = Image.new(img.mode, (size, size), 255 if img.mode == "L" else (255, 255, 255))
    canvas.paste(img, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def _to_array(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _decode(img: Image.Image, kind: str, size: int, color: str, fit: str) -> np.ndarray:
    """Decode a header-checked image and preprocess it to a square uint8 array."""
    if kind == "jpeg":
        # DCT-domain downscaling (1/2, 1/4, 1/8) makes big JPEGs many times
        # cheaper to decode; asking for twice the target keeps LANCZOS some
        # headroom so quality is unchanged.
        try:
            img.draft("L" if color == "grey" else None, (2 * size, 2 * size))
        except Exception:  # noqa: BLE001 - draft is only an optimisation
            pass
    try:
        # Animated GIF/WebP/APNG open on frame 0, which is the one we index.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # skipped metadata, as in _open_checked
            img.load()
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on bad data
        raise _Reject(
            f"corrupt or truncated {kind.upper()} data ({type(exc).__name__}: {exc}); "
            "re-download or re-export the file"
        ) from None
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - broken EXIF must not lose a good image
        pass
    try:
        img = _normalise_mode(img, color)
        return _to_array(_fit(img, size, fit))
    except Exception as exc:  # noqa: BLE001 - exotic modes/data in a corrupt file
        raise _Reject(
            f"cannot convert {kind.upper()} image of mode {img.mode} "
            f"({type(exc).__name__}: {exc}); re-save it as 8-bit RGB"
        ) from None


def load_image(
    source: str | Path | bytes,
    *,
    size: int,
    color: str = "rgb",
    fit: str = "pad",
    name: str | None = None,
) -> np.ndarray:
    """Decode one image and preprocess it to a fixed-size square array.

    The steps, in order: the magic bytes must name JPEG, PNG, GIF, WebP, BMP or
    TIFF; the header's declared size must be at most :data:`MAX_PIXELS` pixels
    and at least :data:`MIN_SIDE` on each side (both checked before decoding);
    the first frame is decoded (animated GIF/WebP); EXIF orientation is
    applied; alpha (RGBA, LA, palette transparency) is composited on white;
    CMYK and other modes become RGB; 16-bit greyscale is scaled linearly to
    8 bits; then the image is converted to grey or RGB and resized with LANCZOS.

    Two ways to make the image square:

    * ``fit="pad"`` (letterbox): keep the aspect ratio, scale the longer side
      to ``size`` and pad the shorter one with white. The whole object stays
      in view, at the cost of resolution spent on padding.
    * ``fit="crop"`` (centre crop): cut the largest centred square and scale it
      to ``size``. All pixels carry content (better resolution), but the edges
      of elongated images are lost.

    Args:
        source: Path of the image file, or its bytes.
        size: Side of the output square in pixels.
        color: ``"rgb"`` (3 channels) or ``"grey"`` (1 channel).
        fit: ``"pad"`` or ``"crop"``, see above.
        name: Name used in error messages; defaults to the path (or
            ``"<bytes>"``).

    Returns:
        A ``uint8`` array of shape ``(size, size, C)`` with C = 1 for grey and
        3 for RGB.

    Raises:
        InputError: Bad options, missing file, not an image, decompression
            bomb, image too small, or corrupt/truncated data. The message
            names the file and says what to do.
    """
    color = _check_options(size, color, fit, allow_auto=False)
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        opener: Callable[[], BinaryIO] = lambda: io.BytesIO(bytes(source))  # noqa: E731
    else:
        path = Path(source)
        label = name or str(path)
        if not path.exists():
            raise InputError(f"{label}: no such image file; check the path")
        # A folder, a device or a FIFO: InputError naming it, before any read.
        opener = lambda: open_regular_file(path, "image")  # noqa: E731
    try:
        with opener() as fp:
            img, kind = _open_checked(fp)
            with img:
                return _decode(img, kind, size, color, fit)
    except _Reject as exc:
        raise InputError(f"{label}: {exc}") from None
    except OSError as exc:
        raise InputError(f"{label}: cannot read the file ({exc}); check its permissions") from None


# --------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file ({exc}); check the path") from None
    # The gzip magic decides, not the suffix: downloads are often renamed.
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(
                f"{path}: corrupt or truncated gzip data ({exc}); download the file again"
            ) from None
    return raw


def _parse_idx_header(data: bytes, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    if len(data) < 4:
        raise InputError(f"{path}: too short for an IDX header; download the file again")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _IDX_DTYPES or not 1 <= ndim <= 8:
        raise InputError(
            f"{path}: not an IDX file (magic {data[:4].hex()}); expected e.g. "
            "train-images-idx3-ubyte.gz from (Fashion-)MNIST"
        )
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise InputError(f"{path}: truncated IDX header; download the file again")
    dims = struct.unpack(f">{ndim}I", data[4:offset])
    return _IDX_DTYPES[code], dims, offset


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the (Fashion-)MNIST format), gzipped or raw.

    Args:
        path: File such as ``train-images-idx3-ubyte.gz`` or
            ``train-labels-idx1-ubyte``. Gzip is recognised by its magic bytes.

    Returns:
        A writable array in native byte order with the dtype and shape declared
        by the header, e.g. ``uint8 (60000, 28, 28)`` for images and
        ``uint8 (60000,)`` for labels.

    Raises:
        InputError: Missing file, bad magic, or data shorter or longer than the
            header declares; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such IDX file; check the path")
    data = _read_maybe_gzip(path)
    dtype, dims, offset = _parse_idx_header(data, path)
    count = math.prod(dims)
    expected = count * dtype.itemsize
    have = len(data) - offset
    if have != expected:
        what = "truncated" if have < expected else "has trailing bytes"
        raise InputError(
            f"{path}: IDX data {what} (header declares {'x'.join(map(str, dims))} "
            f"= {expected:,} bytes, file has {have:,}); download the file again"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(dims)
    # astype copies: the result is writable and in native byte order.
    return arr.astype(dtype.newbyteorder("="))


def _idx_ndim(path: Path) -> int | None:
    """The ndim byte of an IDX file's magic, or ``None`` if it is not IDX."""
    try:
        with path.open("rb") as fp:
            head = fp.read(4)
            if head[:2] == b"\x1f\x8b":
                fp.seek(0)
                with gzip.GzipFile(fileobj=fp) as gz:
                    head = gz.read(4)
    except (OSError, EOFError, zlib.error):  # damaged gzip: not recognisable as IDX here
        return None
    if len(head) == 4 and head[:2] == b"\x00\x00" and head[2] in _IDX_DTYPES:
        return head[3]
    return None


# --------------------------------------------------------------------------
# Corpora
# --------------------------------------------------------------------------


@dataclass
class ImageCorpus:
    """Images of a corpus as one array, with one :class:`Item` per image.

    Attributes:
        items: One item per image, in the order of ``pixels``.
        pixels: ``uint8`` array of shape ``(n, size, size, C)``.
        size: Side of each square image in pixels.
        color: ``"grey"`` (C = 1) or ``"rgb"`` (C = 3).
        skipped: ``(path, reason)`` of every file or line that was left out.
    """

    items: list[Item]
    pixels: np.ndarray
    size: int
    color: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        channels = {"grey": 1, "rgb": 3}.get(self.color)
        expected = (len(self.items), self.size, self.size, channels)
        if self.pixels.dtype != np.uint8 or self.pixels.shape != expected:
            raise ValueError(
                f"pixels must be uint8 {expected}, got {self.pixels.dtype} {self.pixels.shape}"
            )

    def __len__(self) -> int:
        return len(self.items)


def _skip(skipped: list[tuple[str, str]], where: str, reason: str) -> None:
    skipped.append((where, reason))
    # Attribute the warning to the first frame outside this module (the caller
    # of read_images), so users can filter it by their own module.
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(f"skipped {where}: {reason}", RetrievalWarning, stacklevel=level)


def _report(on_progress: Callable[[int, int], None] | None, done: int, total: int) -> None:
    if on_progress is not None:
        on_progress(done, total)


def _read_idx_corpus(
    source: Path,
    size: int | None,
    color: str,
    fit: str,
    limit: int | None,
    on_progress: Callable[[int, int], None] | None,
) -> ImageCorpus:
    arr = read_idx(source)
    arr = arr.reshape(_idx_image_dims(arr.shape, source))
    total = arr.shape[0]
    n = total if limit is None else min(limit, total)
    if n == 0:
        raise InputError(f"no readable images in {source}: the IDX file holds 0 images")
    skipped: list[tuple[str, str]] = []
    labels = _idx_labels(source, total, n, skipped)
    return _idx_corpus(source, arr[:n], 0, labels, size, color, fit, skipped, on_progress)


def _idx_image_dims(dims: tuple[int, ...], source: Path) -> tuple[int, int, int, int]:
    """The ``(n, rows, cols, 1|3)`` shape of IDX images of header dimensions ``dims``; anything else is refused."""
    if len(dims) == 3:
        dims = (*dims, 1)
    if len(dims) != 4 or dims[3] not in (1, 3):
        raise InputError(
            f"{source}: IDX shape {tuple(dims)} is not images (n, rows, cols[, 1|3]); "
            "pass the *-images-idx3-* file"
        )
    if min(dims[1:3]) < MIN_SIDE:
        raise InputError(f"{source}: IDX images of {dims[1]}x{dims[2]} pixels are too small (each side "
                         f"must be at least {MIN_SIDE}); pass the *-images-idx3-* file of the data set")
    return dims


def _idx_labels(source: Path, total: int, n: int, skipped: list[tuple[str, str]]) -> list[str | None]:
    """The labels of the first ``n`` images from the sibling ``labels-idx1`` file (``None`` without one)."""
    labels: list[str | None] = [None] * n
    sibling = source.with_name(source.name.replace("images-idx3", "labels-idx1"))
    if sibling != source and sibling.is_file():
        try:
            lab = read_idx(sibling)
            if lab.ndim != 1 or lab.shape[0] != total:
                raise InputError(
                    f"{sibling}: holds {lab.shape} labels for {total} images; "
                    "use the labels file of the same split"
                )
            labels = [str(v) for v in lab[:n].astype(np.int64).tolist()]
        except InputError as exc:
            # Unlabelled images are still searchable; only evaluate loses.
            _skip(skipped, str(sibling), str(exc))
    return labels


def _idx_corpus(
    source: Path,
    arr: np.ndarray,
    start: int,
    labels: list[str | None],
    size: int | None,
    color: str,
    fit: str,
    skipped: list[tuple[str, str]],
    on_progress: Callable[[int, int], None] | None = None,
) -> ImageCorpus:
    """Images ``start, start + 1, ...`` of an IDX file (``arr``: ``(n, rows, cols, 1|3)``) as a corpus."""
    n = arr.shape[0]
    arr = _to_uint8(arr)
    rows, cols, channels = arr.shape[1:]

    want = ("grey" if channels == 1 else "rgb") if color == "auto" else color
    if want == "grey" and channels == 3:
        # ITU-R 601 luma, the same weights Pillow's convert("L") uses.
        luma = arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        arr = np.rint(luma).astype(np.uint8)[..., None]
    elif want == "rgb" and channels == 1:
        arr = np.repeat(arr, 3, axis=3)

    if size is None and rows == cols:
        size = rows
        pixels = np.ascontiguousarray(arr)
        _report(on_progress, n, n)
    else:
        size = size or max(rows, cols)
        c = arr.shape[3]
        pixels = np.empty((n, size, size, c), dtype=np.uint8)
        step = max(1, n // 100)
        for i in range(n):
            img = Image.fromarray(arr[i, :, :, 0] if c == 1 else arr[i])
            pixels[i] = _to_array(_fit(img, size, fit))
            if (i + 1) % step == 0 or i + 1 == n:
                _report(on_progress, i + 1, n)

    name = source.name
    items = [
        Item(
            id=str(i),
            title=f"{name}#{i}",
            label=labels[i],
            path=name,
            extra={"width": cols, "height": rows},
        )
        for i in range(start, start + n)
    ]
    return ImageCorpus(items=items, pixels=pixels, size=size, color=want, skipped=skipped)


def _idx_chunks(
    source: Path, size: int | None, color: str, fit: str, limit: int | None, chunk_size: int
) -> Iterator[ImageCorpus]:
    """The images of an IDX file, ``chunk_size`` at a time, read through (gzip) without holding the file.

    The same corpus as :func:`_read_idx_corpus` in pieces: the header, size
    and trailing-bytes checks of :func:`read_idx`, the labels from the sibling
    file, the conversion of :func:`_idx_corpus`.
    """
    try:
        raw = source.open("rb")
    except OSError as exc:
        raise InputError(f"{source}: cannot read the file ({exc}); check the path") from None
    with raw:
        fp = gzip.GzipFile(fileobj=raw) if raw.read(2) == b"\x1f\x8b" else raw
        raw.seek(0)
        try:
            head = fp.read(4)
            head += fp.read(4 * head[3]) if len(head) == 4 else b""
            dtype, dims, _ = _parse_idx_header(head, source)
            shape = _idx_image_dims(dims, source)[1:]
            total = dims[0]
            n = total if limit is None else min(limit, total)
            if n == 0:
                raise InputError(f"no readable images in {source}: the IDX file holds 0 images")
            skipped: list[tuple[str, str]] = []
            labels = _idx_labels(source, total, n, skipped)
            width = math.prod(shape) * dtype.itemsize
            for start in range(0, n, chunk_size):
                count = min(chunk_size, n - start)
                data = fp.read(count * width)
                if len(data) < count * width:
                    raise InputError(f"{source}: IDX data truncated (header declares "
                                     f"{'x'.join(map(str, dims))}); download the file again")
                arr = np.frombuffer(data, dtype=dtype).reshape((count, *shape)).astype(dtype.newbyteorder("="))
                yield _idx_corpus(source, arr, start, labels, size, color, fit, skipped if not start else [])
            if n == total and fp.read(1):
                raise InputError(f"{source}: IDX data has trailing bytes (header declares "
                                 f"{'x'.join(map(str, dims))}); download the file again")
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{source}: corrupt or truncated gzip data ({exc}); download the file again") from None


def iter_images(
    source: Path,
    *,
    size: int | None = None,
    color: str = "auto",
    fit: str = "pad",
    labels_from_folders: bool = False,
    limit: int | None = None,
    chunk_size: int = BUILD_CHUNK_IMAGES,
) -> Iterator[ImageCorpus]:
    """Read an image corpus in chunks of at most ``chunk_size`` images.

    The images, items, skips and warnings of :func:`read_images` (arguments
    alike), in the same order, each chunk an :class:`ImageCorpus` of its own
    (the skips recorded before it). An IDX file is read through in pieces;
    a folder is listed (and its headers probed, for ``color="auto"``) first,
    then decoded a chunk at a time.

    Raises:
        InputError: As :func:`read_images`.
    """
    if chunk_size < 1:
        raise InputError(f"chunk size must be >= 1; got {chunk_size}")
    source = Path(source)
    color = _check_options(size if size is not None else 1, color, fit, allow_auto=True)
    _check_limit(limit)
    if source.is_dir():
        yield from _folder_chunks(source, size or DEFAULT_SIZE, color, fit, labels_from_folders, limit, chunk_size)
    elif source.is_file() and ("idx3" in source.name or _idx_ndim(source) == 3):
        yield from _idx_chunks(source, size, color, fit, limit, chunk_size)
    else:
        yield read_images(source, size=size, color=color, fit=fit, labels_from_folders=labels_from_folders,
                          limit=limit)  # its errors: missing source, an IDX labels file, not images


def _read_manifest(source: Path, skipped: list[tuple[str, str]]) -> dict[str, dict]:
    """Records of the crawler's ``manifest.jsonl`` keyed by relative posix path."""
    path = source / "manifest.jsonl"
    if not path.is_file():
        return {}
    records: dict[str, dict] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        _skip(skipped, str(path), f"cannot read the manifest ({exc}); items get no URLs")
        return {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json_line(line)
        except json.JSONDecodeError as exc:
            _skip(skipped, where, f"invalid JSON ({exc.msg}); fix or delete the line")
            continue
        file = rec.get("file") if isinstance(rec, dict) else None
        if not isinstance(file, str) or not file.strip():
            _skip(skipped, where, "no 'file' field naming the image; fix or delete the line")
            continue
        records[PurePosixPath(file.replace("\\", "/")).as_posix()] = rec
    return records


def _list_candidates(source: Path, skipped: list[tuple[str, str]]) -> list[tuple[Path, str]]:
    """Image files under ``source`` as ``(path, relative posix id)``, sorted.

    Hidden files (.DS_Store, macOS "._x.jpg" forks, .git) are never content;
    links out of ``source`` are skipped (see :func:`walk_files`).
    """
    found = walk_files(source, lambda rel, reason: _skip(skipped, str(source / rel), reason))
    out = []
    for rel, path in found:
        claims = path.suffix.lower() in IMAGE_EXTENSIONS
        try:
            with path.open("rb") as fp:
                kind = sniff_image_type(fp.read(16))
        except OSError as exc:
            if claims:
                _skip(skipped, str(path), f"cannot read the file ({exc}); check its permissions")
            continue
        if kind is not None:
            out.append((path, rel))
        elif claims:
            _skip(
                skipped, str(path),
                "not an image (no JPEG/PNG/GIF/WebP/BMP/TIFF signature); "
                "delete it or re-save it in one of those formats",
            )
    return out


def _read_folder(
    source: Path,
    size: int,
    color: str,
    fit: str,
    labels_from_folders: bool,
    limit: int | None,
    on_progress: Callable[[int, int], None] | None,
) -> ImageCorpus:
    skipped: list[tuple[str, str]] = []
    manifest, candidates, color = _folder_plan(source, color, limit, skipped)
    total = len(candidates) if limit is None else min(limit, len(candidates))
    channels = 1 if color == "grey" else 3
    pixels = np.empty((total, size, size, channels), dtype=np.uint8)
    items: list[Item] = []
    for item, image in _folder_images(candidates, manifest, total, size, color, fit, labels_from_folders, skipped,
                                      on_progress):
        pixels[len(items)] = image
        items.append(item)
    _check_found(source, len(items), len(skipped))
    return ImageCorpus(
        items=items, pixels=pixels[: len(items)], size=size, color=color, skipped=skipped
    )


def _folder_chunks(
    source: Path, size: int, color: str, fit: str, labels_from_folders: bool, limit: int | None, chunk_size: int
) -> Iterator[ImageCorpus]:
    """The corpus of :func:`_read_folder` in chunks of ``chunk_size`` images, each decoded when it is reached."""
    skipped: list[tuple[str, str]] = []
    manifest, candidates, color = _folder_plan(source, color, limit, skipped)
    total = len(candidates) if limit is None else min(limit, len(candidates))
    items, pixels, found, dropped = [], [], 0, 0
    for item, image in _folder_images(candidates, manifest, total, size, color, fit, labels_from_folders, skipped):
        items.append(item)
        pixels.append(image)
        if len(items) == chunk_size:
            found, dropped = found + len(items), dropped + len(skipped)
            yield ImageCorpus(items=items, pixels=np.stack(pixels), size=size, color=color, skipped=list(skipped))
            items, pixels = [], []
            skipped.clear()  # the decoder appends to this list: the next chunk's skips start afresh
    _check_found(source, found + len(items), dropped + len(skipped))
    if items or skipped:
        channels = 1 if color == "grey" else 3
        yield ImageCorpus(items=items, pixels=np.stack(pixels) if pixels else
                          np.zeros((0, size, size, channels), np.uint8), size=size, color=color, skipped=skipped)


def _folder_plan(source: Path, color: str, limit: int | None,
                 skipped: list[tuple[str, str]]) -> tuple[dict[str, dict], list[tuple[Path, str]], str]:
    """The crawler manifest, the image files to decode and the colour they are read in."""
    manifest = _read_manifest(source, skipped)
    candidates = _list_candidates(source, skipped)

    if color == "auto":
        # Header-only pass: the output mode must be known before the first
        # decode, and reading headers costs a few KB per file.
        probed, all_grey = [], True
        for path, rel in candidates:
            if limit is not None and len(probed) >= limit:
                break
            try:
                with path.open("rb") as fp:
                    img, _ = _open_checked(fp)
                    with img:
                        all_grey = all_grey and _is_grey(img)
            except _Reject as exc:
                _skip(skipped, str(path), str(exc))
                continue
            except OSError as exc:
                _skip(skipped, str(path), f"cannot read the file ({exc}); check its permissions")
                continue
            probed.append((path, rel))
        candidates = probed
        color = "grey" if probed and all_grey else "rgb"
    return manifest, candidates, color


def _folder_images(
    candidates: list[tuple[Path, str]],
    manifest: dict[str, dict],
    total: int,
    size: int,
    color: str,
    fit: str,
    labels_from_folders: bool,
    skipped: list[tuple[str, str]],
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[Item, np.ndarray]]:
    """Decode the candidates in order until ``total`` images are read: ``(item, pixels)`` of each.

    Unreadable files are recorded in ``skipped`` (which a caller may empty between images).
    """
    read = 0
    for done, (path, rel) in enumerate(candidates, 1):
        if read >= total:
            break
        try:
            with path.open("rb") as fp:
                img, kind = _open_checked(fp)
                with img:
                    w, h = img.size
                    pixels = _decode(img, kind, size, color, fit)
        except _Reject as exc:
            _skip(skipped, str(path), str(exc))
            _report(on_progress, min(done, total), total)
            continue
        except OSError as exc:
            _skip(skipped, str(path), f"cannot read the file ({exc}); check its permissions")
            _report(on_progress, min(done, total), total)
            continue
        rec = manifest.get(rel, {})
        alt, url = rec.get("alt"), rec.get("url")
        extra: dict = {"width": w, "height": h}
        for key in ("page_url", "sha256"):
            if rec.get(key):
                extra[key] = rec[key]
        parts = PurePosixPath(rel).parts
        read += 1
        yield Item(
            id=rel,
            title=alt.strip() if isinstance(alt, str) and alt.strip() else path.name,
            label=parts[0] if labels_from_folders and len(parts) > 1 else None,
            path=rel,
            url=url if isinstance(url, str) else "",
            extra=extra,
        ), pixels
        _report(on_progress, min(done, total), total)


def _check_found(source: Path, found: int, skipped: int) -> None:
    if not found:
        why = f"{skipped} file(s) skipped" if skipped else "no JPEG/PNG/GIF/WebP/BMP/TIFF files found"
        raise InputError(
            f"no readable images in {source} ({why}); add image files or check the path"
        )


def read_images(
    source: Path,
    *,
    size: int | None = None,
    color: str = "auto",
    fit: str = "pad",
    labels_from_folders: bool = False,
    limit: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImageCorpus:
    """Read an image corpus: a folder of image files or an IDX images file.

    **IDX** (``source`` is a file whose name contains ``idx3`` or whose magic
    says 3 dimensions): all images are read at once; labels come from the
    sibling file named with ``labels-idx1`` instead of ``images-idx3`` when it
    exists. Item ids are positions (``"0"``, ``"1"``, ...), titles
    ``"<file name>#<i>"``. ``size=None`` keeps the native size.

    **Folder**: every file below ``source`` (recursively, sorted by relative
    path, hidden files ignored) whose magic bytes name JPEG, PNG, GIF, WebP,
    BMP or TIFF. Files with an image extension but no image signature are
    skipped with a warning; other files (``.txt``, ``.json``, ...) silently.
    Item ids and paths are the posix paths relative to ``source``;
    ``extra`` holds the original ``width``/``height``. A crawler
    ``manifest.jsonl`` in ``source`` supplies ``url``, the ``alt`` text as
    title (else the file name) and ``page_url``/``sha256`` in ``extra``.
    ``size=None`` means :data:`DEFAULT_SIZE`.

    Every unusable file (corrupt, truncated, bomb, too small, ...) and every bad
    manifest line is skipped with a :class:`RetrievalWarning` naming it and
    recorded in ``skipped``; one bad file never stops the build.

    Args:
        source: Folder of images or IDX images file (``.gz`` or raw).
        size: Side of the square output images; see above for ``None``.
        color: ``"grey"``, ``"rgb"`` or ``"auto"``: grey when every readable
            image is greyscale by its header's mode (L, LA, I, I;16, 1, or a
            palette of greys), else RGB (grey images then get 3 equal channels).
        fit: ``"pad"`` (letterbox) or ``"crop"`` (centre crop); see
            :func:`load_image`.
        labels_from_folders: Use the first-level sub-folder name as label
            (files directly in ``source`` get no label). Folders only.
        limit: Read at most this many images (the first in sorted order).
        on_progress: Called as ``on_progress(done, total)`` while decoding.

    Returns:
        The :class:`ImageCorpus`.

    Raises:
        InputError: Missing source, bad options, a file that is neither a
            folder nor an IDX images file, or no readable image at all.
    """
    source = Path(source)
    color = _check_options(size if size is not None else 1, color, fit, allow_auto=True)
    _check_limit(limit)
    if not source.exists():
        raise InputError(f"{source}: no such file or folder; check the path")
    if source.is_dir():
        return _read_folder(
            source, size or DEFAULT_SIZE, color, fit, labels_from_folders, limit, on_progress
        )
    if not source.is_file():  # opening a FIFO would wait for a writer
        raise InputError(
            f"{source}: not a folder or a regular file (a device, FIFO or socket); "
            "pass a folder of images or an IDX images file"
        )
    ndim = _idx_ndim(source)
    if "idx3" in source.name or ndim == 3:
        return _read_idx_corpus(source, size, color, fit, limit, on_progress)
    if ndim == 1:
        raise InputError(
            f"{source}: is an IDX labels file; pass the matching *-images-idx3-* file "
            "(labels are picked up from beside it)"
        )
    raise InputError(
        f"{source}: not a folder of images or an IDX images file; pass a folder "
        "or e.g. train-images-idx3-ubyte.gz"
    )


# --------------------------------------------------------------------------
# Images already in memory
# --------------------------------------------------------------------------


def _array_to_pil(arr: np.ndarray, where: str) -> Image.Image:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InputError(f"{where}: an image array must be (height, width), (height, width, 1), "
                         f"(height, width, 3) or (height, width, 4); got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number):
            raise InputError(f"{where}: image arrays hold numbers; got dtype {arr.dtype}")
        values = arr.astype(np.float64)
        if not np.isfinite(values).all():
            raise InputError(f"{where}: the image array holds NaN or infinite values")
        # Floats in [0, 1] are the usual scaled form; anything else is read as 0-255.
        scale = 255.0 if values.size and values.min() >= 0 and values.max() <= 1 else 1.0
        arr = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def corpus_from_arrays(data, *, size: int | None = None, color: str = "auto", fit: str = "pad") -> ImageCorpus:
    """An image corpus from images in memory.

    Args:
        data: A ``(n, h, w[, c])`` array, or an iterable whose elements are
            arrays, image file paths, encoded image bytes, or dicts with
            ``image`` (any of those) and optional ``id``, ``label``, ``title``,
            ``path`` (default: the image's file path, if given one).
            Float arrays in [0, 1] are scaled to 0-255.
        size: Side of the square arrays (default: the images' own side when
            they are square arrays of one size, else :data:`DEFAULT_SIZE`).
        color: ``"grey"``, ``"rgb"`` or ``"auto"``.
        fit: ``"pad"`` or ``"crop"``.

    Raises:
        InputError: An element that is not an image (named by position),
            duplicate ids, or no image.
    """
    records = list(data) if not isinstance(data, np.ndarray) else [a for a in data]
    if not records:
        raise InputError("no images were given; pass a non-empty array or list of images")
    entries = []
    for i, record in enumerate(records):
        record = record if isinstance(record, dict) else {"image": record}
        if "image" not in record:
            raise InputError(f"image {i} is a dict without an 'image' field")
        entries.append((str(record.get("id", i)), record))
    ids = [e[0] for e in entries]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"duplicate image id {dup!r}; every image needs a distinct 'id'")
    arrays = [r["image"] for _, r in entries if isinstance(r["image"], np.ndarray)]
    if size is None:
        sides = {a.shape[0] for a in arrays if a.ndim >= 2 and a.shape[0] == a.shape[1]}
        size = sides.pop() if len(sides) == 1 and len(arrays) == len(entries) else DEFAULT_SIZE
    color = _check_options(size, color, fit, allow_auto=True)
    images, kinds = [], []
    for item_id, record in entries:
        where = f"image {item_id}"
        source = record["image"]
        if isinstance(source, np.ndarray):
            images.append(_array_to_pil(source, where))
            kinds.append("png")
        else:
            images.append(source)
            kinds.append(None)
    if color == "auto":
        color = "grey" if all(isinstance(im, Image.Image) and _is_grey(im) for im in images) else "rgb"
    pixels, items = [], []
    for (item_id, record), image in zip(entries, images):
        where = f"image {item_id}"
        if isinstance(image, Image.Image):
            try:
                arr = _to_array(_fit(_normalise_mode(image, color), size, fit))
            except Exception as exc:  # noqa: BLE001 - exotic modes
                raise InputError(f"{where}: cannot convert the array ({type(exc).__name__}: {exc})") from None
        else:
            if not isinstance(image, (str, Path, bytes, bytearray)):
                raise InputError(f"{where} is a {type(image).__name__}; give an array, a file path or bytes")
            arr = load_image(image, size=size, color=color, fit=fit, name=where)
        pixels.append(arr)
        label = record.get("label")
        path = record.get("path") or (record["image"] if isinstance(record["image"], (str, Path)) else "")
        items.append(Item(id=item_id, title=str(record.get("title") or item_id),
                          label=None if label is None else str(label), path=str(path)))
    return ImageCorpus(items=items, pixels=np.stack(pixels), size=size, color=color)
