"""The record every corpus reader produces, for documents and images alike."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Item:
    """One document or image of a corpus.

    Attributes:
        id: Stable user-facing identifier (relative path, JSONL ``id``, ...).
        text: Document text (empty for images).
        title: Short human title (first non-empty line, ``title`` field, alt text).
        label: Class label used by ``evaluate`` (``None`` when unknown).
        path: Source path, relative to the corpus root when there is one.
        url: Source URL for crawled or downloaded items.
        extra: Further metadata stored beside the item (width, height, ...).
    """

    id: str
    text: str = ""
    title: str = ""
    label: str | None = None
    path: str = ""
    url: str = ""
    extra: dict = field(default_factory=dict)
