"""Figures: precision-recall curves and the 2-D map of a corpus."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .errors import InputError  # noqa: E402


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
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
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
    plt.close(fig)
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
    cmap = plt.get_cmap("tab20", max(len(names), 1))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 6), squeeze=False)
    for ax, (method, codes) in zip(axes[0], panels.items()):
        ax.scatter(codes[:, 0], codes[:, 1], c=c, cmap=cmap, s=3, alpha=0.6, vmin=-0.5, vmax=len(names) - 0.5)
        ax.set_title(f"{method} (2-d)")
        ax.set_xticks([])
        ax.set_yticks([])
    if 1 < len(names) <= 20:
        handles = [plt.Line2D([], [], marker="o", linestyle="", color=cmap(i), label=name)
                   for name, i in colour.items()]
        fig.legend(handles=handles, loc="lower center", ncol=min(5, len(names)), fontsize=8)
        fig.subplots_adjust(bottom=0.08 + 0.03 * (len(names) // 5))
    if title:
        fig.suptitle(title)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def corpus_map(retriever, out: str | Path, *, max_items: int = 5000, epochs: int = 10, seed: int = 0) -> Path:
    """The classic figure of Hinton & Salakhutdinov (2006): a 2-d autoencoder
    code beside the 2-d linear baseline (LSA for documents, PCA for images).

    A 2-d autoencoder is trained on (a sample of) the index's stored inputs
    with the index's own settings; the index itself is not changed.
    """
    from .encoders import LSAEncoder, PCAEncoder
    from .encoders.autoencoder import ConvAutoencoder, TextAutoencoder

    inputs = retriever.inputs()
    labels = retriever.metadata.labels()
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(labels), size=min(max_items, len(labels)), replace=False))
    inputs, labels = inputs[take], labels[take]
    params = dict(retriever.manifest["methods"]["ae"]["params"])
    params.update(code_dim=2, epochs=epochs, center=True, seed=seed)
    if retriever.modality == "docs":
        params["pretrain"] = "none"
        ae, linear, linear_name = TextAutoencoder(**params), LSAEncoder(2, seed=seed), "lsa"
    else:
        ae, linear, linear_name = ConvAutoencoder(**params), PCAEncoder(2, seed=seed), "pca"
    panels = {"autoencoder": ae.fit(inputs).transform(inputs),
              linear_name: linear.fit(inputs).transform(inputs)}
    return plot_map(panels, labels, out, title=f"{retriever.name}: {len(labels)} items")
