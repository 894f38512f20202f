"""retrieval: document and image retrieval with deep-autoencoder codes and FAISS.

The public API::

    from retrieval import DocsConfig, build_docs_index, Retriever
    build_docs_index("corpus/", "mail", DocsConfig(labels_from_folders=True))
    hits = Retriever("mail").query_text("cheap flights to the conference", k=10)
"""
from .api import (CrawlConfig, DocsConfig, ImagesConfig, QueryResult, Retriever, Store, UpdateReport, add_items,
                  build_docs_index, build_images_index, corpus_map, crawl, index_info, list_indexes, outliers,
                  remove_items, retrain, run_evaluation, run_query, search, sync_items)
from .errors import (EmptyQueryError, FetchError, IndexExists, IndexFormatError, IndexLocked, IndexNotFound,
                     InputError, RetrievalError, RetrievalWarning)

__version__ = "0.1.0"

__all__ = ["CrawlConfig", "DocsConfig", "EmptyQueryError", "FetchError", "ImagesConfig", "IndexExists",
           "IndexFormatError", "IndexLocked", "IndexNotFound", "InputError", "QueryResult", "RetrievalError",
           "RetrievalWarning", "Retriever", "Store", "UpdateReport", "add_items", "build_docs_index",
           "build_images_index", "corpus_map", "crawl", "index_info", "list_indexes", "outliers", "remove_items",
           "retrain", "run_evaluation", "run_query", "search", "sync_items"]
