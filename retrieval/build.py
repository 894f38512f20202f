"""Build an index: read -> vectorize -> fit every method -> FAISS -> store.

Everything is written into the store's temporary folder and renamed into
place at the end, so a failed or interrupted build leaves nothing half-done.
"""
from __future__ import annotations

import hashlib
import platform
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .config import DocsConfig, ImagesConfig
from .corpus import DocumentCorpus, read_documents
from .encoders import Encoder, LSAEncoder, PCAEncoder, PixelEncoder, TfidfEncoder
from . import novelty
from .index import make_index
from .novelty import item_novelty
from .progress import Progress, report
from .store import FORMAT_VERSION, MANIFEST, Store, write_json_atomic, write_metadata
from .text import snippet
from .vectorize import TextVectorizer

#: The corpus inputs kept in the index (for ``--like`` and ``plot``).
DOC_INPUTS = "inputs.npz"
IMAGE_INPUTS = "pixels.npy"


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose formats an index depends on."""
    out = {"python": platform.python_version()}
    for dist in ("retrieval", "tensorflow-cpu", "tensorflow", "keras", "faiss-cpu", "scikit-learn", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _save_method(method: str, encoder: Encoder, X, folder: Path, index_kind: str, started: float) -> dict:
    """Index a fitted encoder's codes and save both; returns the manifest entry."""
    n = X.shape[0]
    index = make_index(index_kind, encoder.metric, n, sparse=encoder.sparse)
    index.add(encoder.transform(X))
    out = folder / "methods" / method
    encoder.save(out)
    index_file = index.save(out)
    entry = {
        "encoder": encoder.name,
        "params": encoder.get_params(),
        "dim": int(encoder.dim),
        "metric": encoder.metric,
        "binary": bool(encoder.binary),
        "index": index.kind,
        "index_bytes": index_file.stat().st_size,
        "bytes_per_item": index_file.stat().st_size / n,
        "fit_seconds": round(time.perf_counter() - started, 3),
    }
    history = getattr(encoder, "history_", None)
    if history and history.get("loss"):
        entry["training"] = {
            "epochs": len(history["loss"]), "loss": history["loss"][-1],
            "val_loss": history.get("val_loss", [None])[-1],
            "pretrain_layers": len(history.get("pretrain", [])),
            "binary_epochs": len(history.get("binary", {}).get("loss", []))}
    return entry


#: Methods derived from the float phase of a learned binary autoencoder:
#: its float codes and their median thresholding (the baseline of learned bits).
DERIVED = (("float", "none"), ("median", "median"))


def _fit_methods(encoders: dict[str, Encoder], X, folder: Path, index_kind: str,
                 progress: Progress | None) -> dict[str, dict]:
    """Fit each encoder, index its codes, save both; returns manifest entries.

    A learned binary autoencoder ``ae`` also yields ``ae-float`` and
    ``ae-median`` from its float phase, at no extra training.
    """
    methods = {}
    for method, encoder in encoders.items():
        started = time.perf_counter()
        report(progress, f"{method}: fit", 0, 1)
        encoder.fit(X, progress=progress)
        methods[method] = _save_method(method, encoder, X, folder, index_kind, started)
        report(progress, f"{method}: fit", 1, 1)
        if getattr(encoder, "binarize", "none") == "learned":
            for suffix, mode in DERIVED:
                started = time.perf_counter()
                entry = _save_method(f"{method}-{suffix}", encoder.derive(mode, X), X, folder, index_kind, started)
                methods[f"{method}-{suffix}"] = entry | {"derived_from": method}
    return methods


def _hashing_baselines(config) -> dict[str, Encoder]:
    """ITQ and LSH at the learned codes' bit count, when asked for."""
    from .encoders.hashing import ITQEncoder, LSHEncoder

    out: dict[str, Encoder] = {}
    if "itq" in config.baselines:
        out["itq"] = ITQEncoder(config.bits, seed=config.seed)
    if "lsh" in config.baselines:
        out["lsh"] = LSHEncoder(config.bits, seed=config.seed)
    return out


def _manifest(name: str, modality: str, source, config, items, skipped: int, methods: dict,
              started: float, **extra) -> dict:
    labels = [it.label for it in items if it.label is not None]
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "modality": modality,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": str(source),
        "source_root": str(Path(source).expanduser().resolve()) if not str(source).startswith("(") else None,
        "counts": {"items": len(items), "skipped": skipped, "labelled": len(labels),
                   "labels": len(set(labels))},
        "config": config.to_dict(),
        "methods": methods,
        "default_method": "ae",
        "versions": library_versions(),
        "build_seconds": round(time.perf_counter() - started, 2),
        **extra,
    }


def build_docs_index(source: str | Path | DocumentCorpus, name: str, config: DocsConfig = DocsConfig(), *,
                     store: Store | None = None, force: bool = False,
                     progress: Progress | None = None) -> dict:
    """Build a document index from a folder, archive or JSONL file.

    Args:
        source: Corpus location (see :func:`retrieval.corpus.read_documents`).
        name: Index name.
        config: Build options.
        store: Where to write (default: :class:`Store` at the default home).
        force: Replace an existing index of that name.
        progress: Progress callback.

    Returns:
        The manifest written.
    """
    store = store or Store()
    started = time.perf_counter()
    store.check_new(name, force)  # fail before minutes of training, not after
    report(progress, "read", 0, 1)
    if isinstance(source, DocumentCorpus):
        corpus, source = source, "(in-memory corpus)"
    else:
        corpus = read_documents(source, labels_from_folders=config.labels_from_folders, strip=config.strip)
    report(progress, "read", 1, 1, items=len(corpus.items))
    texts = [it.text for it in corpus.items]
    vectorizer = TextVectorizer(max_features=config.vocab_size)
    X = vectorizer.fit_transform(texts)
    encoders = docs_encoders(config)
    with store.writer(name, force) as folder:
        methods = _fit_methods(encoders, X, folder, config.index_kind, progress)
        oov = vectorizer.oov_fraction(texts)
        np.save(folder / novelty.OOV, oov)
        scores = item_novelty(encoders["ae"], X, oov)
        vectorizer.save(folder / "vectorizer")
        if config.keep_inputs:
            sp.save_npz(folder / DOC_INPUTS, X, compressed=True)
        write_metadata(folder, with_hashes(corpus.items, texts), [snippet(t) for t in texts])
        manifest = _manifest(name, "docs", source, config, corpus.items, len(corpus.skipped), methods,
                             started, vectorizer={"vocabulary": vectorizer.n_features},
                             novelty=novelty.save(folder, scores, scores), drift=novelty.drift(len(texts)))
        write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def docs_encoders(config: DocsConfig) -> dict[str, Encoder]:
    """The unfitted encoders of a document index: the autoencoder and the baselines."""
    from .encoders.autoencoder import TextAutoencoder

    encoders: dict[str, Encoder] = {"ae": TextAutoencoder(
        hidden=config.hidden, code_dim=config.bits or config.code_dim, epochs=config.epochs,
        batch_size=config.batch_size, learning_rate=config.learning_rate, noise=config.noise,
        decoder_hidden=config.decoder_hidden, code_norm=config.code_norm, neighbours=config.neighbours,
        neighbour_weight=config.neighbour_weight, pretrain=config.pretrain,
        binarize="learned" if config.bits else "none", binary_epochs=config.binary_epochs, seed=config.seed)}
    if "lsa" in config.baselines:
        encoders["lsa"] = LSAEncoder(config.baseline_dim or config.code_dim, seed=config.seed)
    if "tfidf" in config.baselines:
        encoders["tfidf"] = TfidfEncoder()
    encoders.update(_hashing_baselines(config))
    return encoders


def with_hashes(items, contents) -> list:
    """The items, each with the SHA-256 of its content in ``extra["sha256"]``.

    ``sync`` compares it to tell a changed file from an unchanged one.
    """
    for item, content in zip(items, contents):
        data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content.tobytes()
        item.extra = {**item.extra, "sha256": hashlib.sha256(data).hexdigest()}
    return items


def build_images_index(source, name: str, config: ImagesConfig = ImagesConfig(), *,
                       store: Store | None = None, force: bool = False,
                       progress: Progress | None = None) -> dict:
    """Build an image index from a folder, a crawl folder or an IDX file.

    Args:
        source: Image folder, crawl output folder or IDX images file.
        name: Index name.
        config: Build options.
        store: Where to write.
        force: Replace an existing index of that name.
        progress: Progress callback.

    Returns:
        The manifest written.
    """
    from .images import ImageCorpus, read_images

    store = store or Store()
    started = time.perf_counter()
    store.check_new(name, force)
    report(progress, "read", 0, 1)
    if isinstance(source, ImageCorpus):
        corpus, source = source, "(in-memory images)"
    else:
        corpus = read_images(Path(source).expanduser(), size=config.size, color=config.color, fit=config.fit,
                             labels_from_folders=config.labels_from_folders, limit=config.limit)
    report(progress, "read", 1, 1, items=len(corpus.items))
    pixels = corpus.pixels
    encoders = images_encoders(config)
    with store.writer(name, force) as folder:
        methods = _fit_methods(encoders, pixels, folder, config.index_kind, progress)
        scores = item_novelty(encoders["ae"], pixels)
        if config.keep_inputs:
            np.save(folder / IMAGE_INPUTS, pixels)
        write_metadata(folder, with_hashes(corpus.items, pixels), [it.title for it in corpus.items])
        manifest = _manifest(name, "images", source, config, corpus.items, len(corpus.skipped), methods,
                             started, images={"size": int(pixels.shape[1]), "color": corpus.color,
                                              "fit": config.fit},
                             novelty=novelty.save(folder, scores, scores), drift=novelty.drift(len(pixels)))
        write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def images_encoders(config: ImagesConfig) -> dict[str, Encoder]:
    """The unfitted encoders of an image index: the autoencoder and the baselines."""
    from .encoders.autoencoder import ConvAutoencoder

    encoders: dict[str, Encoder] = {"ae": ConvAutoencoder(
        filters=config.filters, code_dim=config.bits or config.code_dim, decoder=config.decoder,
        epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
        noise=config.noise, whiten=config.whiten, augment=config.augment,
        binarize="learned" if config.bits else "none", binary_epochs=config.binary_epochs, seed=config.seed)}
    if "pca" in config.baselines:
        encoders["pca"] = PCAEncoder(config.baseline_dim or config.code_dim, seed=config.seed)
    if "pixels" in config.baselines:
        encoders["pixels"] = PixelEncoder()
    encoders.update(_hashing_baselines(config))
    return encoders
