"""retrieval: document and image retrieval with deep-autoencoder codes and FAISS.

The public API::

    from retrieval import Index
    idx = Index.build_docs(["first text", "second text", ...], labels=[...], name="notes")
    idx.search("a query", k=5)

The pipeline, one sub-package or module per stage: :mod:`~retrieval.sources`
(read folders, archives, JSONL, images, crawls) -> :mod:`~retrieval.modality`
(documents or images: model inputs) -> :mod:`~retrieval.encoders` (the
autoencoders and baselines) -> :mod:`~retrieval.ann` (FAISS) ->
:mod:`~retrieval.storage` (the index folder) via :mod:`~retrieval.writer` ->
:mod:`~retrieval.search` -> :mod:`~retrieval.evaluate`.

Importing this package is cheap and touches no global state: the names
below load their modules on first use.
"""
from __future__ import annotations

from importlib import import_module

from .errors import (EmptyQueryError, FetchError, IndexExists, IndexFormatError, IndexLocked, IndexNotFound,
                     InputError, ItemNotFound, RetrievalError, RetrievalWarning)

__version__ = "0.2.0"

#: Public name -> the module that defines it (imported on first access).
_LAZY = {
    "Index": "api", "QueryResult": "api", "build_docs_index": "api", "build_images_index": "api",
    "run_evaluation": "api", "list_indexes": "api", "index_info": "api", "outliers": "api",
    "upgrade_index": "api", "corpus_map": "api",
    "DocsConfig": "config", "ImagesConfig": "config",
    "Retriever": "search", "Hit": "search", "Filter": "search.filters", "NoMatchingItems": "search.filters",
    "Store": "storage",
    "UpdateReport": "writer", "add_items": "writer", "remove_items": "writer", "sync_items": "writer",
    "retrain": "writer",
    "CrawlConfig": "sources.crawl",
}

__all__ = sorted([*_LAZY, "EmptyQueryError", "FetchError", "IndexExists", "IndexFormatError", "IndexLocked",
                  "IndexNotFound", "InputError", "ItemNotFound", "RetrievalError", "RetrievalWarning", "__version__"])


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'retrieval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
