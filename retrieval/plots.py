"""Figures: precision-recall curves, the 2-D map of a corpus, and contact sheets of images.

matplotlib is imported when a figure is drawn, and its backend is chosen
there and then (``Agg``, files only), never at import: importing
:mod:`retrieval` leaves a notebook's backend alone. Contact sheets need only
Pillow.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .config import MAP_MAX_ITEMS, MAP_EPOCHS
from .errors import InputError

#: Hit thumbnails per row in :func:`make_contact_sheet`.
SHEET_COLUMNS = 5
_SHEET_PAD = 6
_SHEET_GAP = 12
_CAPTION_LINES = 2
_RESAMPLE = Image.Resampling.LANCZOS


def _figure(**kwargs):
    """A figure and axes drawn on an ``Agg`` canvas of its own.

    ``matplotlib.figure.Figure`` is used rather than ``plt.subplots`` so no
    GUI window or interactive backend is involved and nothing needs closing.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=kwargs.pop("figsize"))
    FigureCanvasAgg(fig)
    axes = fig.subplots(**kwargs)
    return fig, axes


def _check_png(out: str | Path) -> Path:
    out = Path(out).expanduser()
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise InputError(f"plot file {out} must end in .png, .svg or .pdf")
    if not out.parent.exists():
        raise InputError(f"folder {out.parent} of the plot file does not exist")
    return out


def plot_pr_curves(report: dict, out: str | Path) -> Path:
    """Draw the precision-recall curve of every method in one figure.

    Args:
        report: An :func:`retrieval.evaluate.evaluate_index` result with curves.
        out: Image file to write.
    """
    out = _check_png(out)
    fig, ax = _figure(figsize=(6.5, 4.5))
    for method, curve in report["curves"].items():
        ax.plot(curve["recall"], curve["precision"], marker=".", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("recall (log scale)")
    ax.set_ylabel("precision")
    ax.set_title(f"{report['index']}: {report['queries']} queries")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def plot_map(panels: dict[str, np.ndarray], labels: np.ndarray, out: str | Path, title: str = "") -> Path:
    """Scatter 2-D codes side by side, coloured by label.

    Args:
        panels: Method name -> ``(n, 2)`` codes.
        labels: Label per point (``None`` allowed).
        out: Image file to write.
        title: Figure title.
    """
    out = _check_png(out)
    names = sorted({str(label) for label in labels})
    colour = {name: i for i, name in enumerate(names)}
    c = np.array([colour[str(label)] for label in labels])
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    cmap = colormaps["tab20"].resampled(max(len(names), 1))
    fig, axes = _figure(nrows=1, ncols=len(panels), figsize=(6 * len(panels), 6), squeeze=False)
    for ax, (method, codes) in zip(axes[0], panels.items()):
        ax.scatter(codes[:, 0], codes[:, 1], c=c, cmap=cmap, s=3, alpha=0.6, vmin=-0.5, vmax=len(names) - 0.5)
        ax.set_title(f"{method} (2-d)")
        ax.set_xticks([])
        ax.set_yticks([])
    if 1 < len(names) <= 20:
        handles = [Line2D([], [], marker="o", linestyle="", color=cmap(i), label=name)
                   for name, i in colour.items()]
        fig.legend(handles=handles, loc="lower center", ncol=min(5, len(names)), fontsize=8)
        fig.subplots_adjust(bottom=0.08 + 0.03 * (len(names) // 5))
    if title:
        fig.suptitle(title)
    fig.savefig(out, dpi=100)
    return out


def map_codes(retriever, *, max_items: int = MAP_MAX_ITEMS, epochs: int = MAP_EPOCHS, seed: int = 0,
              linear: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The 2-d codes of (a sample of) an index: what :func:`corpus_map` draws and the server sends.

    A 2-d float autoencoder is trained on the sampled stored inputs with the
    index's own settings (a binary index's map uses float codes: two bits
    draw no map); the index itself is not changed.

    Args:
        retriever: The opened index (it must keep its inputs).
        max_items: Sample at most this many items.
        epochs: Epochs of the 2-d autoencoder.
        seed: Seed of the sample and of the models.
        linear: Also fit the 2-d linear baseline (LSA for documents, PCA for images).

    Returns:
        ``(positions, labels, panels)``: the sampled positions in order, their
        labels, and ``{"autoencoder": (n, 2) codes[, linear name: (n, 2) codes]}``.
    """
    inputs = retriever.inputs("plot")
    labels = retriever.metadata.labels()
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(labels), size=min(max_items, len(labels)), replace=False))
    inputs, labels = inputs[take], labels[take]
    modality = retriever.modality
    config = modality.config_class.from_dict(retriever.manifest.get("config", {}))
    ae = modality.autoencoder(config, code_dim=2, epochs=epochs, binarize="none", quantize="none", pretrain="none", seed=seed)
    panels = {"autoencoder": ae.fit(inputs).transform(inputs)}
    if linear:
        linear_name, baseline = modality.linear_baseline(2, seed)
        panels[linear_name] = baseline.fit(inputs).transform(inputs)
    return take, labels, panels


def corpus_map(retriever, out: str | Path, *, max_items: int = MAP_MAX_ITEMS, epochs: int = MAP_EPOCHS,
               seed: int = 0) -> Path:
    """The classic figure of Hinton & Salakhutdinov (2006): a 2-d autoencoder
    code beside the 2-d linear baseline (LSA for documents, PCA for images).

    The codes are those of :func:`map_codes`.
    """
    out = _check_png(out)
    _, labels, panels = map_codes(retriever, max_items=max_items, epochs=epochs, seed=seed)
    return plot_map(panels, labels, out, title=f"{retriever.name}: {len(labels)} items")


# --------------------------------------------------------------------------
# Contact sheets
# --------------------------------------------------------------------------


def _thumbnail(arr: np.ndarray, thumb: int, what: str) -> Image.Image:
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise InputError(
            f"{what}: expected a uint8 array (s, s, 1) or (s, s, 3), got "
            f"{arr.dtype} {arr.shape}; pass rows of ImageCorpus.pixels"
        )
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).convert("RGB")
    # Small images (MNIST's 28 px) are shown with crisp pixels, not blurred.
    scale = thumb / max(img.size)
    new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(new, Image.Resampling.NEAREST if scale > 1 else _RESAMPLE)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def make_contact_sheet(
    query: np.ndarray,
    hits: list[np.ndarray],
    captions: list[str],
    out: Path,
    query_caption: str = "query",
    thumb: int = 96,
) -> Path:
    """Draw a query and its hits side by side and save the sheet as PNG.

    Layout: the query in its own column on the left, a separator, then the hits
    in rank order, :data:`SHEET_COLUMNS` per row. Every cell is a
    ``thumb`` x ``thumb`` thumbnail (small images enlarged with nearest
    neighbour so pixels stay crisp) over up to two caption lines (split at
    ``"\\n"``, shortened with ``...`` to the cell width) in Pillow's default font.

    Args:
        query: The query image, ``uint8`` ``(s, s, 1)`` or ``(s, s, 3)``.
        hits: The top-k images, same format, best first.
        captions: One caption per hit, e.g. ``"0.93 shirt"``.
        out: Where to write the PNG; parent folders are created.
        query_caption: Caption under the query.
        thumb: Side of each thumbnail in pixels.

    Returns:
        ``out``.

    Raises:
        InputError: Bad array shapes/dtypes, or captions not matching hits.
    """
    if len(captions) != len(hits):
        raise InputError(
            f"make_contact_sheet: {len(hits)} hits but {len(captions)} captions; "
            "pass one caption per hit"
        )
    if isinstance(thumb, bool) or not isinstance(thumb, int) or thumb < 8:
        raise InputError(f"thumb={thumb!r} is too small; pass at least 8 (default 96)")
    thumbs = [_thumbnail(query, thumb, "query")]
    thumbs += [_thumbnail(h, thumb, f"hit {i}") for i, h in enumerate(hits)]

    font = ImageFont.load_default()
    bbox = font.getbbox("Ag|")
    line_h = int(bbox[3] - bbox[1]) + 3
    cell_w = thumb + 2 * _SHEET_PAD
    cell_h = thumb + 2 * _SHEET_PAD + _CAPTION_LINES * line_h
    cols = min(len(hits), SHEET_COLUMNS)
    rows = max(1, math.ceil(len(hits) / SHEET_COLUMNS))
    sheet = Image.new("RGB", (cell_w * (1 + cols) + _SHEET_GAP, cell_h * rows), "white")
    draw = ImageDraw.Draw(sheet)

    def cell(img: Image.Image, text: str, x: int, y: int) -> None:
        # Centre the thumbnail so non-square hits still line up.
        ox = x + _SHEET_PAD + (thumb - img.width) // 2
        oy = y + _SHEET_PAD + (thumb - img.height) // 2
        sheet.paste(img, (ox, oy))
        ty = y + _SHEET_PAD + thumb + 2
        for line in str(text).split("\n")[:_CAPTION_LINES]:
            draw.text((x + _SHEET_PAD, ty), _fit_text(draw, line, font, thumb),
                      fill=(0, 0, 0), font=font)
            ty += line_h

    cell(thumbs[0], query_caption, 0, 0)
    sep_x = cell_w + _SHEET_GAP // 2
    draw.line([(sep_x, 0), (sep_x, sheet.height)], fill=(160, 160, 160), width=1)
    for rank, (img, text) in enumerate(zip(thumbs[1:], captions)):
        r, c = divmod(rank, SHEET_COLUMNS)
        cell(img, text, cell_w + _SHEET_GAP + c * cell_w, r * cell_h)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG")
    return out


# --------------------------------------------------------------------------
# The decoder as a generator (retrieval/generate.py)
# --------------------------------------------------------------------------


def mosaic(images: np.ndarray, columns: int, gap: int = 1) -> np.ndarray:
    """Tile ``uint8`` images ``(n, s, s, c)`` row by row into one ``uint8`` array, ``gap`` white pixels apart."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise InputError(f"mosaic: expected uint8 images (n, s, s, c); got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    rows = max(1, math.ceil(n / columns))
    sheet = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        sheet[r * (h + gap):r * (h + gap) + h, col * (w + gap):col * (w + gap) + w] = img
    return sheet


def plot_generated_grid(tiles: np.ndarray, steps: int, coords: np.ndarray, labels: np.ndarray, xs: np.ndarray,
                        ys: np.ndarray, out: str | Path, title: str = "",
                        axis_names: tuple[str, str] = ("x", "y")) -> Path:
    """The decoder's images over a grid of the 2-d map, beside the items' positions on that map.

    Left: the ``steps x steps`` decoded tiles, the top-left tile decoded at
    ``(xs[0], ys[0])``. Right: the items' 2-d positions coloured by label
    (each label's name at its items' median), with the grid's extent and
    points drawn, on the same axes range: a tile and the items around its
    point line up.

    Args:
        tiles: ``(steps * steps, s, s, c)`` uint8 images, row by row.
        steps: Tiles per side.
        coords: ``(n, 2)`` positions of the items.
        labels: Label per item (``None`` allowed).
        xs, ys: The grid's x values (increasing) and y values (decreasing).
        out: Image file to write.
        title: Figure title.
        axis_names: Names of the two map axes.
    """
    out = _check_png(out)
    sheet = mosaic(tiles, steps, gap=1)
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    names = sorted({str(label) for label in labels})
    colour = {name: i for i, name in enumerate(names)}
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"].resampled(max(len(names), 1))
    fig, (left, right) = _figure(nrows=1, ncols=2, figsize=(12, 6.4))
    # Each tile is centred on its grid point: the image spans half a step beyond the outer points.
    dx, dy = (xs[1] - xs[0]) / 2, (ys[0] - ys[1]) / 2
    extent = (xs[0] - dx, xs[-1] + dx, ys[-1] - dy, ys[0] + dy)
    left.imshow(sheet[..., 0] if sheet.shape[2] == 1 else sheet, cmap="gray" if sheet.shape[2] == 1 else None,
                vmin=0, vmax=255, extent=extent, interpolation="nearest", aspect="auto")
    left.set_title(f"decoded at {steps}x{steps} grid points")
    c = np.array([colour[str(label)] for label in labels])
    right.scatter(coords[:, 0], coords[:, 1], c=c, cmap=cmap, s=4, alpha=0.5, vmin=-0.5, vmax=len(names) - 0.5)
    gx, gy = np.meshgrid(xs, ys)
    right.plot(gx.ravel(), gy.ravel(), "k+", markersize=4, alpha=0.5)
    right.add_patch(Rectangle((extent[0], extent[2]), extent[1] - extent[0], extent[3] - extent[2],
                              fill=False, edgecolor="black", linewidth=0.8))
    if 1 < len(names) <= 20:
        for name, i in colour.items():
            mine = coords[c == i]
            if len(mine):
                x, y = np.median(mine, axis=0)
                right.annotate(name, (x, y), fontsize=8, ha="center", va="center", color="black",
                               bbox={"boxstyle": "round,pad=0.2", "fc": cmap(i), "alpha": 0.8, "lw": 0})
    right.set_xlim(extent[0], extent[1])
    right.set_ylim(extent[2], extent[3])
    right.set_title(f"{len(coords)} items at their positions (+: grid points)")
    for ax in (left, right):
        ax.set_xlabel(axis_names[0])
        ax.set_ylabel(axis_names[1])
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    return out


def make_tile_sheet(images: list[np.ndarray], captions: list[str], out: str | Path, *, columns: int,
                    thumb: int = 64) -> Path:
    """Images in rows of ``columns`` cells, each over up to two caption lines (split at ``"\\n"``).

    Args:
        images: ``uint8`` ``(s, s, 1)`` or ``(s, s, 3)`` arrays.
        captions: One per image (``""`` for none).
        out: The PNG to write.
        columns: Cells per row.
        thumb: Side of each cell's image in pixels (small images enlarged with crisp pixels).
    """
    if len(captions) != len(images):
        raise InputError(f"make_tile_sheet: {len(images)} images but {len(captions)} captions")
    thumbs = [_thumbnail(img, thumb, f"image {i}") for i, img in enumerate(images)]
    font = ImageFont.load_default()
    bbox = font.getbbox("Ag|")
    line_h = int(bbox[3] - bbox[1]) + 3
    lines = max((len(str(c).split("\n")[:_CAPTION_LINES]) for c in captions if c), default=0)
    cell_w, cell_h = thumb + 2 * _SHEET_PAD, thumb + 2 * _SHEET_PAD + lines * line_h
    columns = max(1, min(columns, len(images)))
    rows = max(1, math.ceil(len(images) / columns))
    sheet = Image.new("RGB", (cell_w * columns, cell_h * rows), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (img, text) in enumerate(zip(thumbs, captions)):
        r, col = divmod(i, columns)
        x, y = col * cell_w, r * cell_h
        sheet.paste(img, (x + _SHEET_PAD + (thumb - img.width) // 2, y + _SHEET_PAD + (thumb - img.height) // 2))
        ty = y + _SHEET_PAD + thumb + 2
        for line in str(text).split("\n")[:_CAPTION_LINES] if text else []:
            draw.text((x + _SHEET_PAD, ty), _fit_text(draw, line, font, thumb), fill=(0, 0, 0), font=font)
            ty += line_h
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG")
    return out


def make_group_sheet(groups: list[list[np.ndarray]], captions: list[list[str]], out: Path, thumb: int = 64) -> Path:
    """Draw groups of images, one group per row (``duplicates --show``), and save the sheet as PNG.

    Args:
        groups: Each group's images, ``uint8`` ``(s, s, 1)`` or ``(s, s, 3)``.
        captions: One caption per image, in the same nesting.
        out: Where to write the PNG; parent folders are created.
        thumb: Side of each thumbnail in pixels.
    """
    if not groups:
        raise InputError("no groups to draw: nothing was found at this threshold, so --show has no sheet to write")
    font = ImageFont.load_default()
    bbox = font.getbbox("Ag|")
    line_h = int(bbox[3] - bbox[1]) + 3
    cell_w, cell_h = thumb + 2 * _SHEET_PAD, thumb + 2 * _SHEET_PAD + line_h
    cols = max(len(g) for g in groups)
    sheet = Image.new("RGB", (cell_w * cols, cell_h * len(groups)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (images, texts) in enumerate(zip(groups, captions)):
        for c, (arr, text) in enumerate(zip(images, texts)):
            img = _thumbnail(arr, thumb, f"group {r + 1} image {c + 1}")
            x, y = c * cell_w, r * cell_h
            sheet.paste(img, (x + _SHEET_PAD + (thumb - img.width) // 2, y + _SHEET_PAD + (thumb - img.height) // 2))
            draw.text((x + _SHEET_PAD, y + _SHEET_PAD + thumb + 2), _fit_text(draw, text, font, thumb),
                      fill=(0, 0, 0), font=font)
        draw.line([(0, (r + 1) * cell_h - 1), (sheet.width, (r + 1) * cell_h - 1)], fill=(200, 200, 200))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG")
    return out
