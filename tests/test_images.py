"""Tests of retrieval.images: guarded decoding, IDX, corpora and contact sheets.

Every image is generated inside the test (Pillow or raw bytes in tmp_path), so
the suite needs no fixtures on disk except the optional Fashion-MNIST check.
"""
from __future__ import annotations

import gzip
import io
import json
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from retrieval.errors import InputError, RetrievalWarning
from retrieval.plots import SHEET_COLUMNS, make_contact_sheet
from retrieval.sources.images import (
    DEFAULT_SIZE,
    MAX_PIXELS,
    ImageCorpus,
    load_image,
    read_idx,
    read_images,
    sniff_image_type,
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GREEN = (0, 255, 0)
FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


# ---------------------------------------------------------------- helpers


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def solid(color=RED, size=(16, 16), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def png_declaring(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose IHDR is patched to declare ``width`` x ``height``."""
    data = bytearray(encode(solid(size=(8, 8)), "PNG"))
    # Signature (8) + length (4) + b"IHDR" (4), then width and height.
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def stripes(size=(60, 20), colors=(BLUE, RED, GREEN)) -> Image.Image:
    """Vertical stripes of equal width, left to right."""
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    step = w // len(colors)
    for i, c in enumerate(colors):
        arr[:, i * step:(i + 1) * step] = c
    return Image.fromarray(arr)


def near(pixel, color, tol=40) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel, int) - np.asarray(color, int)) <= tol))


def write_idx(path: Path, arr: np.ndarray, code: int = 0x08, gz: bool = True) -> Path:
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    raw = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw += arr.astype(dtype).tobytes()
    return write(path, gzip.compress(raw) if gz else raw)


# ---------------------------------------------------------------- sniffing


def test_sniff_image_type_reads_magic_not_names():
    assert sniff_image_type(encode(solid(), "PNG")) == "png"
    assert sniff_image_type(encode(solid(), "JPEG")) == "jpeg"
    assert sniff_image_type(encode(solid(), "WEBP")) == "webp"
    assert sniff_image_type(b"hello world, this is text") is None


# ---------------------------------------------------------------- bad inputs


def test_text_file_named_jpg_is_not_an_image(tmp_path):
    path = write(tmp_path / "photo.jpg", b"just some text pretending to be a JPEG\n")
    with pytest.raises(InputError, match="not an image") as exc:
        load_image(path, size=8)
    assert "photo.jpg" in str(exc.value)


def test_corrupt_jpeg_garbage_after_header(tmp_path):
    good = encode(solid(size=(32, 32)), "JPEG")
    garbage = bytes(np.random.default_rng(0).integers(0, 255, 2000, dtype=np.uint8))
    path = write(tmp_path / "corrupt.jpg", good[:20] + garbage)  # SOI + APP0, then junk
    with pytest.raises(InputError, match="corrupt") as exc:
        load_image(path, size=8)
    assert "corrupt.jpg" in str(exc.value)


def test_jpeg_cut_after_scan_header_is_truncated(tmp_path):
    good = encode(Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)),
                  "JPEG")
    sos = good.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(good[sos + 2:sos + 4], "big")
    path = write(tmp_path / "cut.jpg", good[:start] + b"\x00" * 10)
    with pytest.raises(InputError, match="truncated"):
        load_image(path, size=8)


def test_truncated_png(tmp_path):
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), np.uint8)
    data = encode(Image.fromarray(noise), "PNG")
    path = write(tmp_path / "half.png", data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated") as exc:
        load_image(path, size=8)
    assert "half.png" in str(exc.value)


def test_one_pixel_image_is_too_small(tmp_path):
    path = write(tmp_path / "dot.png", encode(solid(size=(1, 1)), "PNG"))
    with pytest.raises(InputError, match="too small"):
        load_image(path, size=8)


@pytest.mark.parametrize(
    "width,height",
    [
        (9_000, 9_000),  # above our cap, below Pillow's own warning threshold
        (10_000, 10_000),  # Pillow's DecompressionBombWarning range
        (100_000, 100_000),  # Pillow's DecompressionBombError range
    ],
)
def test_decompression_bomb_rejected_from_header(tmp_path, width, height):
    assert width * height > MAX_PIXELS
    path = write(tmp_path / "bomb.png", png_declaring(width, height))
    start = time.perf_counter()
    with warnings.catch_warnings():
        # A leaked Pillow warning would become an error here and fail the match.
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="decompression-bomb") as exc:
            load_image(path, size=8)
    assert time.perf_counter() - start < 1.0  # rejected before any decoding
    assert "bomb.png" in str(exc.value)


def test_missing_file_and_bad_options(tmp_path):
    with pytest.raises(InputError, match="no such"):
        load_image(tmp_path / "nope.png", size=8)
    data = encode(solid(), "PNG")
    with pytest.raises(InputError, match="fit"):
        load_image(data, size=8, fit="stretch")
    with pytest.raises(InputError, match="color"):
        load_image(data, size=8, color="cmyk")
    with pytest.raises(InputError, match="size"):
        load_image(data, size=0)


def test_bytes_source_uses_given_name_in_errors():
    assert load_image(encode(solid(), "PNG"), size=4).shape == (4, 4, 3)
    with pytest.raises(InputError, match="upload-7"):
        load_image(b"not an image at all", size=4, name="upload-7")


# ---------------------------------------------------------------- modes


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = write(tmp_path / "cmyk.jpg", encode(solid((0, 255, 255, 0), mode="CMYK"), "JPEG"))
    arr = load_image(path, size=8)
    assert arr.shape == (8, 8, 3) and arr.dtype == np.uint8
    assert near(arr[4, 4], RED, tol=60)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    path = write(tmp_path / "deep.png", encode(img, "PNG"))
    arr = load_image(path, size=16, color="grey")[:, :, 0]
    assert arr.min() == 0 and arr.max() == 255
    # Clipping would saturate almost everything at 255; scaling keeps the ramp.
    assert np.all(np.diff(arr.ravel().astype(int)) >= 0)
    assert abs(int(arr[8, 0]) - 128) <= 2
    np.testing.assert_array_equal(arr, np.rint(values / 257).astype(np.uint8))


def test_palette_transparency_becomes_white(tmp_path):
    img = Image.new("P", (16, 16), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)  # 0 = black, 1 = red
    img.paste(1, (8, 0, 16, 16))
    path = write(tmp_path / "pal.png", encode(img, "PNG", transparency=0))
    arr = load_image(path, size=16)
    assert near(arr[8, 2], (255, 255, 255), tol=0)  # transparent black -> white
    assert near(arr[8, 13], RED, tol=0)


@pytest.mark.parametrize("mode,color", [("RGBA", (0, 0, 0, 0)), ("LA", (0, 0))])
def test_alpha_composited_on_white(mode, color):
    arr = load_image(encode(solid(color, mode=mode), "PNG"), size=8, color="grey")
    assert np.all(arr == 255)


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [solid(RED), solid(BLUE), solid(GREEN)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    path = write(tmp_path / "anim.gif", buf.getvalue())
    with Image.open(path) as gif:
        assert gif.n_frames == 3
    arr = load_image(path, size=8)
    assert near(arr[4, 4], RED, tol=10)


def test_exif_orientation_is_applied(tmp_path):
    # Stored wide: red left, blue right. Orientation 6 means "rotate 90 degrees
    # clockwise to display", which turns it tall with red on top.
    img = stripes((40, 20), colors=(RED, BLUE))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = write(tmp_path / "rotated.jpg", encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    arr = load_image(path, size=40, fit="pad")
    assert near(arr[5, 20], RED) and near(arr[35, 20], BLUE)
    # Tall content is letterboxed left and right, not top and bottom.
    assert near(arr[20, 2], (255, 255, 255), tol=5) and near(arr[2, 20], RED)


@pytest.mark.parametrize(
    "fmt,kw", [("WEBP", {"lossless": True}), ("BMP", {}), ("TIFF", {})]
)
def test_webp_bmp_tiff_load(tmp_path, fmt, kw):
    path = write(tmp_path / f"img.{fmt.lower()}", encode(solid(GREEN, (20, 20)), fmt, **kw))
    arr = load_image(path, size=10)
    assert arr.shape == (10, 10, 3)
    assert near(arr[5, 5], GREEN, tol=2)


def test_grey_output_has_one_channel():
    arr = load_image(encode(solid(RED), "PNG"), size=8, color="grey")
    assert arr.shape == (8, 8, 1)
    assert abs(int(arr[4, 4, 0]) - 76) <= 1  # ITU-R 601 luma of pure red


# ---------------------------------------------------------------- geometry


def test_pad_letterboxes_whole_image_with_white():
    data = encode(stripes((60, 20)), "PNG")  # blue | red | green, 3:1 aspect
    arr = load_image(data, size=30, fit="pad")
    assert arr.shape == (30, 30, 3)
    # Content is 30 x 10 centred vertically; rows above and below are white.
    assert np.all(arr[:9] == 255) and np.all(arr[21:] == 255)
    assert near(arr[15, 2], BLUE) and near(arr[15, 15], RED) and near(arr[15, 27], GREEN)


def test_crop_keeps_centre_square_only():
    data = encode(stripes((60, 20)), "PNG")
    arr = load_image(data, size=20, fit="crop")
    assert arr.shape == (20, 20, 3)
    # The centre square is exactly the red stripe: no white, no blue/green.
    assert np.all(arr[..., 0] == 255) and np.all(arr[..., 1:] == 0)


@settings(max_examples=25, deadline=None)
@given(
    w=st.integers(4, 80),
    h=st.integers(4, 80),
    size=st.integers(1, 48),
    fit=st.sampled_from(["pad", "crop"]),
    color=st.sampled_from(["grey", "rgb"]),
)
def test_any_geometry_gives_requested_square(w, h, size, fit, color):
    arr = load_image(encode(solid(BLUE, (w, h)), "PNG"), size=size, fit=fit, color=color)
    assert arr.shape == (size, size, 1 if color == "grey" else 3)
    assert arr.dtype == np.uint8


# ---------------------------------------------------------------- folders


def test_folder_mixed_good_and_bad_files(tmp_path, recwarn):
    root = tmp_path / "imgs"
    write(root / "a.png", encode(solid(RED, (20, 10)), "PNG"))
    write(root / "b.jpg", encode(solid(BLUE), "JPEG"))
    write(root / "sub" / "c.gif", encode(solid(GREEN), "GIF"))
    write(root / "blob", encode(solid(RED), "PNG"))  # no extension: found by magic
    write(root / "fake.jpg", b"this is text")
    png = encode(Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), np.uint8)),
                 "PNG")
    write(root / "half.png", png[: len(png) // 2])
    write(root / "dot.png", encode(solid(size=(1, 1)), "PNG"))
    write(root / "notes.txt", b"some notes")  # not claiming to be an image: silent
    write(root / "meta.json", b"{}")
    write(root / ".DS_Store", b"\x00\x00\x00\x01Bud1")

    corpus = read_images(root, size=8, color="rgb")

    assert isinstance(corpus, ImageCorpus)
    assert [it.id for it in corpus.items] == ["a.png", "b.jpg", "blob", "sub/c.gif"]
    assert corpus.pixels.shape == (4, 8, 8, 3) and corpus.pixels.dtype == np.uint8
    assert near(corpus.pixels[1, 4, 4], BLUE) and near(corpus.pixels[3, 4, 4], GREEN)
    assert corpus.items[0].extra == {"width": 20, "height": 10}
    assert corpus.items[0].title == "a.png" and corpus.items[0].path == "a.png"

    bad = {"fake.jpg", "half.png", "dot.png"}
    messages = [str(w.message) for w in recwarn if issubclass(w.category, RetrievalWarning)]
    assert len(messages) == len(bad)
    for name in bad:
        assert sum(name in m for m in messages) == 1
    assert not any("notes.txt" in m or "meta.json" in m or "DS_Store" in m for m in messages)
    assert {Path(p).name for p, _ in corpus.skipped} == bad


def test_warning_category_and_text(tmp_path):
    root = tmp_path / "imgs"
    write(root / "ok.png", encode(solid(), "PNG"))
    write(root / "broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    with pytest.warns(RetrievalWarning, match=r"skipped .*broken\.png: "):
        corpus = read_images(root, size=8)
    assert len(corpus) == 1


def test_auto_color_grey_collection_stays_grey(tmp_path):
    root = tmp_path / "grey"
    write(root / "l.png", encode(solid(128, mode="L"), "PNG"))
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([v for g in range(256) for v in (g, g, g)])
    write(root / "p.png", encode(pal, "PNG"))
    write(root / "deep.png", encode(Image.fromarray(np.full((16, 16), 40000, np.uint16)), "PNG"))
    corpus = read_images(root, size=8)
    assert corpus.color == "grey" and corpus.pixels.shape == (3, 8, 8, 1)


def test_grey_image_in_colour_collection_becomes_rgb(tmp_path):
    root = tmp_path / "mixed"
    write(root / "a_grey.png", encode(solid(100, mode="L"), "PNG"))
    write(root / "b_red.png", encode(solid(RED), "PNG"))
    corpus = read_images(root, size=8)
    assert corpus.color == "rgb" and corpus.pixels.shape == (2, 8, 8, 3)
    grey = corpus.pixels[0].astype(int)
    assert np.all(grey[..., 0] == grey[..., 1]) and np.all(grey[..., 1] == grey[..., 2])
    assert np.all(grey == 100)


def test_labels_from_folders(tmp_path):
    root = tmp_path / "pets"
    write(root / "cat" / "1.png", encode(solid(RED), "PNG"))
    write(root / "cat" / "deep" / "2.png", encode(solid(RED), "PNG"))
    write(root / "dog" / "3.png", encode(solid(BLUE), "PNG"))
    write(root / "loose.png", encode(solid(GREEN), "PNG"))
    corpus = read_images(root, size=8, labels_from_folders=True)
    labels = {it.id: it.label for it in corpus.items}
    assert labels == {"cat/1.png": "cat", "cat/deep/2.png": "cat", "dog/3.png": "dog",
                      "loose.png": None}
    assert all(it.label is None for it in read_images(root, size=8).items)


def test_crawl_manifest_fields(tmp_path, recwarn):
    root = tmp_path / "crawl"
    write(root / "img" / "a.jpg", encode(solid(RED, (30, 20)), "JPEG"))
    write(root / "img" / "b.png", encode(solid(BLUE), "PNG"))
    rec = {"file": "img/a.jpg", "url": "https://example.org/a.jpg",
           "page_url": "https://example.org/page", "alt": "A red square", "sha256": "ab" * 32,
           "bytes": 1234, "width": 30, "height": 20, "content_type": "image/jpeg",
           "fetched_at": "2024-01-01T00:00:00Z"}
    lines = [json.dumps(rec), "{not json", json.dumps({"url": "https://x/y.png"}), ""]
    write(root / "manifest.jsonl", "\n".join(lines).encode())

    corpus = read_images(root, size=8)

    a, b = corpus.items
    assert a.id == "img/a.jpg" and a.url == rec["url"] and a.title == "A red square"
    assert a.extra == {"width": 30, "height": 20, "page_url": rec["page_url"],
                       "sha256": rec["sha256"]}
    assert b.title == "b.png" and b.url == "" and "page_url" not in b.extra
    messages = [str(w.message) for w in recwarn if issubclass(w.category, RetrievalWarning)]
    assert len(messages) == 2
    assert any("manifest.jsonl:2" in m for m in messages)
    assert any("manifest.jsonl:3" in m for m in messages)


def test_limit_and_progress(tmp_path):
    root = tmp_path / "many"
    for i in range(5):
        write(root / f"{i}.png", encode(solid((i * 50, 0, 0)), "PNG"))
    calls = []
    corpus = read_images(root, size=4, limit=3, on_progress=lambda d, t: calls.append((d, t)))
    assert [it.id for it in corpus.items] == ["0.png", "1.png", "2.png"]
    assert calls and calls[-1] == (3, 3)
    assert read_images(root).size == DEFAULT_SIZE


def test_empty_or_all_bad_folder_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no readable images in .*empty"):
        read_images(tmp_path / "empty")
    write(tmp_path / "bad" / "x.jpg", b"text")
    with pytest.warns(RetrievalWarning), pytest.raises(InputError, match="no readable images"):
        read_images(tmp_path / "bad")
    with pytest.raises(InputError, match="no such file or folder"):
        read_images(tmp_path / "does-not-exist")
    with pytest.raises(InputError, match="color"):
        read_images(tmp_path / "empty", color="sepia")


# ---------------------------------------------------------------- IDX


@pytest.fixture
def idx_pair(tmp_path):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (5, 6, 6), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    img_path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    return img_path, images, labels


def test_read_idx_roundtrip_gz_and_raw(tmp_path, idx_pair):
    img_path, images, labels = idx_pair
    got = read_idx(img_path)
    np.testing.assert_array_equal(got, images)
    assert got.dtype == np.uint8 and got.flags.writeable
    np.testing.assert_array_equal(read_idx(tmp_path / "train-labels-idx1-ubyte.gz"), labels)
    wide = np.arange(-3, 3, dtype=np.int16).reshape(2, 3)
    got = read_idx(write_idx(tmp_path / "wide.idx", wide, code=0x0B, gz=False))
    np.testing.assert_array_equal(got, wide)
    assert got.dtype.byteorder in ("=", "<") or got.dtype.isnative


def test_read_idx_bad_files(tmp_path):
    bad_magic = write(tmp_path / "bad-magic", b"\x01\x02\x08\x03" + b"\x00" * 12)
    with pytest.raises(InputError, match="bad-magic"):
        read_idx(bad_magic)
    images = np.zeros((4, 5, 5), np.uint8)
    full = gzip.decompress(write_idx(tmp_path / "ok.gz", images).read_bytes())
    cut = write(tmp_path / "cut-idx3", full[:-7])
    with pytest.raises(InputError, match=r"cut-idx3.*truncated"):
        read_idx(cut)
    short_header = write(tmp_path / "short-idx3", full[:9])
    with pytest.raises(InputError, match="short-idx3"):
        read_idx(short_header)
    broken_gz = write(tmp_path / "broken.gz", gzip.compress(full)[:-20])
    with pytest.raises(InputError, match="broken.gz"):
        read_idx(broken_gz)
    with pytest.raises(InputError, match="no such"):
        read_idx(tmp_path / "absent.gz")


def test_read_images_idx_native_with_labels(idx_pair):
    img_path, images, labels = idx_pair
    corpus = read_images(img_path)
    assert corpus.size == 6 and corpus.color == "grey"
    assert corpus.pixels.shape == (5, 6, 6, 1)
    np.testing.assert_array_equal(corpus.pixels[..., 0], images)
    assert [it.id for it in corpus.items] == ["0", "1", "2", "3", "4"]
    assert [it.label for it in corpus.items] == ["3", "1", "4", "1", "5"]
    assert corpus.items[2].title == "train-images-idx3-ubyte.gz#2"
    assert corpus.items[2].path == "train-images-idx3-ubyte.gz"


def test_read_images_idx_resize_rgb_limit(idx_pair):
    img_path, images, _ = idx_pair
    calls = []
    corpus = read_images(img_path, size=12, color="rgb", limit=3,
                         on_progress=lambda d, t: calls.append((d, t)))
    assert corpus.pixels.shape == (3, 12, 12, 3) and len(corpus.items) == 3
    px = corpus.pixels.astype(int)
    assert np.all(px[..., 0] == px[..., 1]) and np.all(px[..., 1] == px[..., 2])
    assert calls[-1] == (3, 3)


def test_read_images_idx_detected_by_magic_and_label_mismatch(tmp_path):
    images = np.full((3, 4, 4), 7, np.uint8)
    data = write_idx(tmp_path / "digits-images-idx3-ubyte", images, gz=False)
    write_idx(tmp_path / "digits-labels-idx1-ubyte", np.arange(2, dtype=np.uint8), gz=False)
    with pytest.warns(RetrievalWarning, match="labels-idx1"):
        corpus = read_images(data)
    assert all(it.label is None for it in corpus.items)
    renamed = data.rename(tmp_path / "digits.bin")  # no "idx3" in the name
    assert read_images(renamed).pixels.shape == (3, 4, 4, 1)
    with pytest.raises(InputError, match="labels file"):
        read_images(tmp_path / "digits-labels-idx1-ubyte")
    other = write(tmp_path / "notes.txt", b"hello")
    with pytest.raises(InputError, match="notes.txt"):
        read_images(other)


@pytest.mark.skipif(not FASHION.exists(), reason="Fashion-MNIST test split not installed")
def test_fashion_mnist_test_split():
    corpus = read_images(FASHION)
    assert corpus.pixels.shape == (10000, 28, 28, 1)
    assert {it.label for it in corpus.items} == {str(i) for i in range(10)}
    assert corpus.pixels.max() == 255 and corpus.pixels.min() == 0


# ---------------------------------------------------------------- contact sheet


def test_contact_sheet_layout_and_content(tmp_path):
    query = np.zeros((28, 28, 1), np.uint8)  # black query
    hits = [np.tile(np.array(BLUE, np.uint8), (32, 32, 1)) for _ in range(SHEET_COLUMNS + 2)]
    captions = [f"{0.9 - i / 10:.2f} label-{i}" for i in range(len(hits))]

    one_row = make_contact_sheet(query, hits[:SHEET_COLUMNS], captions[:SHEET_COLUMNS],
                                 tmp_path / "one.png")
    two_rows = make_contact_sheet(query, hits, captions, tmp_path / "out" / "two.png", thumb=96)

    assert two_rows == tmp_path / "out" / "two.png"
    with Image.open(one_row) as a, Image.open(two_rows) as b:
        assert a.format == b.format == "PNG"
        # (1 query + SHEET_COLUMNS) cells per row; a second row doubles the height.
        assert a.width == b.width >= (1 + SHEET_COLUMNS) * 96
        assert a.height >= 96 and b.height == 2 * a.height
        px = np.asarray(b.convert("RGB"))
        row_h = a.height
    # Query thumbnail (enlarged to 96 px) sits in the top-left cell.
    assert np.all(px[20:80, 20:80] == 0)
    # Hits are blue, each thumbnail enlarged to (almost) 96 x 96.
    blue = np.all(px == BLUE, axis=-1)
    assert blue.sum() >= len(hits) * 90 * 90
    # Captions: dark text in the band under the thumbnails, left (query) and right.
    dark = px.sum(axis=-1) < 200
    assert dark[100:row_h, :100].any() and dark[100:row_h, 120:].any()
    assert dark[row_h + 104:, 120:].any() and not blue[row_h + 104:].any()


def test_contact_sheet_rejects_mismatch(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InputError, match="captions"):
        make_contact_sheet(img, [img, img], ["only one"], tmp_path / "x.png")
    with pytest.raises(InputError, match="uint8"):
        make_contact_sheet(img.astype(np.float32), [], [], tmp_path / "x.png")
