"""Query an index by text, image or item id."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .build import DOC_INPUTS, IMAGE_INPUTS
from .encoders import Encoder, load_encoder
from .errors import EmptyQueryError, IndexFormatError, InputError
from .index import VectorIndex, check_k, load_index
from .store import Metadata, Store, read_manifest
from .vectorize import TextVectorizer, empty_rows


@dataclass
class Hit:
    """One search result.

    ``score`` is higher-is-better: cosine similarity, or minus the Euclidean
    distance for ``l2`` methods.
    """

    rank: int
    score: float
    id: str
    title: str
    label: str | None
    path: str
    url: str
    snippet: str
    position: int

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


class Retriever:
    """An opened index: models loaded once, then any number of queries.

    Args:
        name: Index name.
        store: The store holding it (default home when omitted).
    """

    def __init__(self, name: str, store: Store | None = None) -> None:
        self.store = store or Store()
        self.name = name
        self.folder = self.store.require(name)
        self.manifest = read_manifest(self.folder)
        self.modality = self.manifest.get("modality")
        if self.modality not in ("docs", "images") or not self.manifest.get("methods"):
            raise IndexFormatError(f"{self.folder / 'manifest.json'} lacks modality or methods; rebuild the index")
        self.metadata = Metadata(self.folder)
        self._methods: dict[str, tuple[Encoder, VectorIndex]] = {}
        self._vectorizer: TextVectorizer | None = None
        self._inputs = None

    # -- loading -------------------------------------------------------------
    @property
    def methods(self) -> list[str]:
        """Method names in the index, the autoencoder first."""
        return list(self.manifest["methods"])

    def method(self, name: str | None = None) -> tuple[Encoder, VectorIndex]:
        """The (encoder, index) pair of a method, loaded on first use."""
        name = name or self.manifest.get("default_method", "ae")
        if name not in self.manifest["methods"]:
            raise InputError(f"index {self.name!r} has no method {name!r}; it has {', '.join(self.methods)}")
        if name not in self._methods:
            info = self.manifest["methods"][name]
            folder = self.folder / "methods" / name
            encoder = load_encoder(info["encoder"], folder)
            self._methods[name] = (encoder, load_index(info["index"], folder, info["metric"]))
        return self._methods[name]

    @property
    def vectorizer(self) -> TextVectorizer:
        """The document index's TF-IDF vectorizer."""
        if self.modality != "docs":
            raise InputError(f"index {self.name!r} holds images; query it with an image path or URL")
        if self._vectorizer is None:
            self._vectorizer = TextVectorizer.load(self.folder / "vectorizer")
        return self._vectorizer

    def inputs(self):
        """The stored corpus inputs: TF-IDF rows (docs) or pixels (images)."""
        if self._inputs is None:
            try:
                if self.modality == "docs":
                    self._inputs = sp.load_npz(self.folder / DOC_INPUTS).tocsr()
                else:
                    self._inputs = np.load(self.folder / IMAGE_INPUTS, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise IndexFormatError(f"stored inputs of {self.name!r} are unreadable ({exc}); rebuild the index") from None
        return self._inputs

    # -- turning queries into model inputs -------------------------------------
    def vectorize(self, texts: list[str]) -> sp.csr_matrix:
        """TF-IDF rows of query texts; raises when one has no known word."""
        X = self.vectorizer.transform(texts)
        empty = np.flatnonzero(empty_rows(X))
        if len(empty):
            text = " ".join(texts[empty[0]].split())[:60]
            raise EmptyQueryError(f"the query {text!r} has no word of the index vocabulary "
                                  "(only stop words or unknown words); use more specific words")
        return X

    @property
    def image_options(self) -> dict:
        """Preprocessing of the image index: size, color, fit."""
        return self.manifest["images"]

    def load_query_image(self, source: str | Path | bytes) -> np.ndarray:
        """Decode and preprocess a query image (path, http(s) URL or bytes)."""
        from .images import load_image

        if self.modality != "images":
            raise InputError(f"index {self.name!r} holds documents; query it with text")
        if isinstance(source, str) and source.startswith(("http://", "https://")):
            from .crawl import fetch_image_bytes

            name, source = source, fetch_image_bytes(source)
        else:
            name = str(source) if not isinstance(source, bytes) else "query image"
            if not isinstance(source, bytes) and not Path(source).expanduser().is_file():
                raise InputError(f"query image {source} does not exist")
            if not isinstance(source, bytes):
                source = Path(source).expanduser()
        opts = self.image_options
        pixels = load_image(source, size=opts["size"], color=opts["color"], fit=opts["fit"], name=name)
        return pixels[None]

    # -- searching -------------------------------------------------------------
    def search_inputs(self, inputs, k: int, method: str | None = None,
                      exclude: np.ndarray | None = None) -> list[list[Hit]]:
        """Encode model inputs and search; one list of hits per input row.

        Args:
            inputs: TF-IDF rows or image arrays, as stored in the index.
            k: Number of hits per query.
            method: Method name (default: the autoencoder).
            exclude: Per-row position to leave out (the query item itself).
        """
        k = check_k(k)
        encoder, index = self.method(method)
        extra = 0 if exclude is None else 1
        scores, positions = index.search(encoder.transform(inputs), k + extra)
        rows = self.metadata.rows(np.unique(positions[positions >= 0]))
        by_pos = {row["position"]: row for row in rows}
        out = []
        for qi in range(len(positions)):
            hits = []
            for score, pos in zip(scores[qi], positions[qi]):
                if pos < 0 or (exclude is not None and pos == exclude[qi]) or len(hits) == k:
                    continue
                row = by_pos[int(pos)]
                hits.append(Hit(rank=len(hits) + 1, score=float(score), id=row["id"], title=row["title"] or "",
                                label=row["label"], path=row["path"] or "", url=row["url"] or "",
                                snippet=row["snippet"] or "", position=int(pos)))
            out.append(hits)
        return out

    def query_text(self, text: str, k: int = 10, method: str | None = None) -> list[Hit]:
        """Documents most similar to ``text``."""
        if not text or not text.strip():
            raise EmptyQueryError("the query text is empty; give some words, --file PATH or --like ID")
        return self.search_inputs(self.vectorize([text]), k, method)[0]

    def query_image(self, source: str | Path | bytes, k: int = 10, method: str | None = None) -> list[Hit]:
        """Images most similar to an image file, URL or bytes."""
        return self.search_inputs(self.load_query_image(source), k, method)[0]

    def query_like(self, item_id: str, k: int = 10, method: str | None = None) -> list[Hit]:
        """Items most similar to an indexed item, the item itself left out."""
        pos = self.metadata.position(item_id)
        return self.search_inputs(self.inputs()[pos:pos + 1], k, method, exclude=np.array([pos]))[0]

    def close(self) -> None:
        """Release the metadata connection."""
        self.metadata.close()
