"""The embedded default: indexes built from data that ships with the installed packages.

Documents: the docstrings of SciPy's public functions, labelled by
sub-package (``linalg``, ``stats``, ``signal``, ...): real technical prose
with real topics, no download. Images: scikit-learn's handwritten digits
(1,797 8x8 images, 10 classes). Each corpus is split 80/20; the 20 % are the
labelled queries of the side-by-side evaluation.
"""
from __future__ import annotations

import importlib
import inspect
import re
import warnings
from collections.abc import Iterator

import numpy as np

from .config import DEMO_PARTS, DocsConfig, ImagesConfig
from .errors import InputError
from .evaluate import Queries, evaluate_index
from .items import Item
from .modality import DOCS, IMAGES, PngList
from .progress import Progress
from .selfcheck import summary
from .sources.text import first_line
from .storage import Store

DEMO_DOCS = "demo-docs"
DEMO_IMAGES = "demo-images"
SCIPY_PACKAGES = ("cluster", "fft", "integrate", "interpolate", "io", "linalg", "ndimage", "optimize",
                  "signal", "sparse", "spatial", "special", "stats")
TEXT_QUERIES = ("solve a system of linear equations with a matrix",
                "find the minimum of a function of several variables",
                "probability distribution of a random variable")


#: Text in a few SciPy docstrings that changes from process to process: doc-example
#: output of random draws (marked "# may vary") and the repr of a set of argument
#: names (its order follows PYTHONHASHSEED). Left in, they change the demo's
#: vocabulary, and so its figures, from one run to the next.
_VARYING_LINE = re.compile(r"^.*#\s*may vary\s*$", re.MULTILINE)
_SET_REPR = re.compile(r"\{'[^'{}]*'(?:, '[^'{}]*')+\}")


def _steady(doc: str) -> str:
    """``doc`` without its per-process text: "# may vary" lines dropped, set reprs sorted."""
    doc = _VARYING_LINE.sub("", doc)
    return _SET_REPR.sub(lambda m: "{" + ", ".join(sorted(m.group(0)[1:-1].split(", "))) + "}", doc)


def scipy_docstrings(min_chars: int = 200) -> list[Item]:
    """Docstrings of SciPy's public callables, one item per distinct text (the same text in every process)."""
    items, seen = [], set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for package in SCIPY_PACKAGES:
            module = importlib.import_module(f"scipy.{package}")
            for attr in sorted(getattr(module, "__all__", dir(module))):
                if attr.startswith("_"):
                    continue
                obj = getattr(module, attr, None)
                doc = inspect.getdoc(obj) if callable(obj) else None
                doc = _steady(doc) if doc else None
                if not doc or len(doc) < min_chars or doc in seen:
                    continue
                seen.add(doc)
                items.append(Item(id=f"scipy.{package}.{attr}", text=doc, title=f"{attr}: {first_line(doc, 80)}",
                                  label=package, path=f"scipy.{package}.{attr}"))
    return items


#: The demo's digits autoencoder, chosen on validation splits of the demo's
#: training digits only (benchmarks/digits_validation.py; BENCHMARKS.md):
#: 32-d codes, two strided convolutions of 64 and 128 channels (an 8x8
#: digit leaves 2x2 after them; the narrower 32, 64 trailed the baselines),
#: one-pixel shifts as corruption but no mirroring (a mirrored digit is
#: another glyph), partial whitening. Patience 10: with 3, a bump of the
#: ~70-digit validation loss stopped a fit of all 1,437 digits after 10 epochs.
DIGITS_CONFIG = ImagesConfig(code_dim=32, filters=(64, 128), epochs=60, batch_size=64, patience=10, augment=0.125,
                             mirror=False, whiten=0.25)


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``uint8`` images ``(1797, 8, 8, 1)`` and their labels (strings)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    pixels = np.clip(data.images * (255 / 16), 0, 255).astype(np.uint8)[..., None]
    return pixels, data.target.astype(str)


def _split(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = int(n * 0.8)
    return np.sort(order[:cut]), np.sort(order[cut:])


def run(store: Store, part: str = "all", progress: Progress | None = None) -> Iterator[dict]:
    """Build, query and evaluate the demo indexes.

    Yields:
        Printable sections: ``{"title", "reports": [evaluation reports],
        "notes": [lines]}`` and, for documents, ``"queries"`` (example
        queries and their hits).
    """
    from .search import Retriever
    from .writer import build_index

    if part not in DEMO_PARTS:
        raise InputError(f"--part must be one of {', '.join(DEMO_PARTS)}; got {part!r}")
    if part in ("all", "docs"):
        items = scipy_docstrings()
        train, test = _split(len(items))
        config = DocsConfig(vocab_size=5000, hidden=(250, 125), epochs=30, neighbours=10)
        from .sources.documents import DocumentCorpus

        manifest = build_index(DOCS, DocumentCorpus([items[i] for i in train]), DEMO_DOCS, config,
                               store=store, force=True, progress=progress)
        retriever = Retriever(DEMO_DOCS, store)
        queries = [{"query": q, "hits": retriever.search(q, k=5)} for q in TEXT_QUERIES]
        test_items = [items[i] for i in test]
        report = evaluate_index(retriever, Queries.of_items(retriever, test_items), k=20, progress=progress)
        # The same held-out docstrings again, each reduced to its first sentence:
        # the few words a user types rather than a whole document.
        short = evaluate_index(retriever, Queries.of_items(retriever, test_items, query_field="first-line"),
                               k=20, progress=progress)
        yield {"title": f"documents: {len(train)} SciPy docstrings in {len(SCIPY_PACKAGES)} sub-packages "
                        f"(built in {manifest['build_seconds']:.0f} s)",
               "queries": queries, "reports": [report, short],
               "notes": [f"{len(test)} held-out docstrings were the queries, whole and then their first "
                         "sentence alone; a hit shares their sub-package.", summary(manifest["self_check"]),
                         f"try: retrieval query {DEMO_DOCS} \"interpolate between data points\""]}
    if part in ("all", "images"):
        from .sources.images import ImageCorpus

        pixels, labels = digits()
        train, test = _split(len(pixels))
        items = [Item(id=f"digit-{i}", title=f"digit #{i}", label=labels[i], path=f"sklearn digits #{i}")
                 for i in train]
        corpus = ImageCorpus(items=items, pixels=pixels[train], size=8, color="grey", skipped=[])
        manifest = build_index(IMAGES, corpus, DEMO_IMAGES, DIGITS_CONFIG, store=store, force=True, progress=progress)
        retriever = Retriever(DEMO_IMAGES, store)
        q = Queries(pixels[test], labels[test].astype(object), PngList(pixels[test]))
        report = evaluate_index(retriever, q, k=20, progress=progress)
        sheet = store.root / f"{DEMO_IMAGES}-query.png"
        hits = retriever.search_inputs(pixels[test[:1]], 8)[0]
        from .plots import make_contact_sheet

        make_contact_sheet(pixels[test[0]], [retriever.inputs()[h.position] for h in hits],
                           [f"{h.score:.2f} {h.label}" for h in hits], sheet,
                           query_caption=f"query ({labels[test[0]]})")
        yield {"title": f"images: {len(train)} handwritten digits, 8x8 "
                        f"(built in {manifest['build_seconds']:.0f} s)",
               "reports": [report],
               "notes": [f"{len(test)} held-out digits were the queries; a hit is the same digit.",
                         summary(manifest["self_check"]),
                         f"contact sheet of one query and its 8 nearest codes: {sheet}"]}
