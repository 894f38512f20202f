"""Querying an index: the retriever (open, verify, refresh), two-stage re-ranking, hits."""
from .hits import Hit
from .rerank import DEFAULT_SHORTLIST
from .retriever import Retriever, check_k

__all__ = ["DEFAULT_SHORTLIST", "Hit", "Retriever", "check_k"]
