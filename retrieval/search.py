"""Query an index by text, image or item id."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

import warnings

from .build import DOC_INPUTS, IMAGE_INPUTS
from .encoders import Encoder, load_encoder
from .errors import EmptyQueryError, IndexFormatError, InputError, RetrievalWarning
from .index import BinaryIndex, FaissIndex, VectorIndex, check_k, load_index

#: Re-rankers of a Hamming shortlist, per modality (``none``: Hamming order).
RERANKERS = {"docs": ("tfidf", "tfidf-prf", "float", "tfidf+float", "none"), "images": ("pixels", "float", "none")}
#: Hamming shortlist re-ranked by default. Measured on 20NG at 64 bits
#: (BENCHMARKS.md, shortlist table): TF-IDF re-ranks best on short lists,
#: the float codes are as good at 250 as at 1,000.
DEFAULT_SHORTLIST = 250
#: ``tfidf-prf``: the query is expanded by this many nearest codes' TF-IDF
#: centroid, with this weight (Rocchio pseudo-relevance feedback; measured
#: on 20NG at 64 bits: 20-50 documents, weight 1-2, BENCHMARKS.md).
PRF_DOCUMENTS = 50
PRF_WEIGHT = 2.0
from .store import Metadata, Store, read_manifest, verify_index
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
        verify: Check every file against the manifest's SHA-256 checksums first.
    """

    def __init__(self, name: str, store: Store | None = None, verify: bool = True) -> None:
        self.store = store or Store()
        self.name = name
        self.verify = verify
        self._open()

    def _open(self) -> None:
        self.folder = self.store.require(self.name)
        self._stamp = self._manifest_stamp()
        self.manifest = read_manifest(self.folder)
        if self.verify:
            verify_index(self.folder, self.manifest)
        self.modality = self.manifest.get("modality")
        if self.modality not in ("docs", "images") or not self.manifest.get("methods"):
            raise IndexFormatError(f"{self.folder / 'manifest.json'} lacks modality or methods; rebuild the index")
        self.metadata = Metadata(self.folder)
        self._methods: dict[str, tuple[Encoder, VectorIndex]] = {}
        self._vectorizer: TextVectorizer | None = None
        self._inputs = None
        self._reference = None

    def _manifest_stamp(self) -> tuple[int, int] | None:
        try:
            stat = (self.folder / "manifest.json").stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def refresh(self) -> bool:
        """Reopen the index if a writer swapped in a new version since it was opened.

        Methods load lazily; without this a long-lived retriever could pair
        the old manifest and metadata with the new version's files. Costs one
        ``stat`` per query.

        Returns:
            True when the index was reopened.
        """
        stamp = self._manifest_stamp()
        if stamp is None or stamp == self._stamp:
            return False
        self.metadata.close()
        self._open()
        return True

    # -- loading -------------------------------------------------------------
    @property
    def methods(self) -> list[str]:
        """Method names in the index, the autoencoder first."""
        return list(self.manifest["methods"])

    def method(self, name: str | None = None) -> tuple[Encoder, VectorIndex]:
        """The (encoder, index) pair of a method, loaded on first use."""
        name = name or self.manifest.get("default_method", "ae")
        if ">" in name:
            raise InputError(f"{name!r} is a two-stage method; pass it to rank() or use --rerank")
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
    @staticmethod
    def split_method(method: str | None) -> tuple[str | None, str | None]:
        """``"ae>tfidf"`` -> ``("ae", "tfidf")``: a method and its re-ranker."""
        if method and ">" in method:
            base, rerank = method.split(">", 1)
            return base or None, rerank
        return method, None

    def rank(self, inputs, k: int, method: str | None = None, rerank: str | None = None,
             shortlist: int | None = None, radius: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Encode model inputs and search: ``(scores, positions)``, best first.

        Args:
            inputs: TF-IDF rows or image arrays, as stored in the index.
            k: Results per query.
            method: Method name, or ``"METHOD>RERANKER"`` for two-stage search.
            rerank: Re-rank a Hamming shortlist by ``tfidf`` / ``pixels``
                (the stored inputs), ``tfidf-prf`` (TF-IDF cosine with the
                query expanded by the nearest codes' TF-IDF centroid),
                ``float`` (the method's float codes) or ``tfidf+float`` (the
                sum of both cosines); ``none`` or ``None`` keeps the Hamming
                order.
            shortlist: Shortlist size (default :data:`DEFAULT_SHORTLIST`).
            radius: Shortlist every item within this Hamming distance instead.
        """
        k = check_k(k)
        self.refresh()
        method, named = self.split_method(method)
        rerank = rerank or named
        encoder, index = self.method(method)
        codes = encoder.transform(inputs)
        if not len(index):  # every item was removed (sync --allow-empty)
            return np.zeros((codes.shape[0], 0), np.float32), np.zeros((codes.shape[0], 0), np.int64)
        if rerank in (None, "none") and radius is None:
            return index.search(codes, k)
        if not isinstance(index, BinaryIndex):
            raise InputError(f"--rerank and --radius need binary codes; method {method or 'ae'!r} of {self.name!r} "
                             "has float codes (build the index with --bits 64)")
        return self._two_stage(inputs, codes, index, k, method or self.manifest.get("default_method", "ae"),
                               rerank or "none", shortlist, radius)

    def _shortlist(self, index: BinaryIndex, codes: np.ndarray, size: int, radius: int | None) -> list[np.ndarray]:
        if radius is None:
            _, positions = index.search(codes, size)
            return [row[row >= 0] for row in positions]
        out = []
        for code in codes:
            _, positions = index.within(code[None], radius)
            if not len(positions):
                # An empty answer would look like "nothing similar exists";
                # the nearest codes are the honest fallback, said out loud.
                warnings.warn(f"no item within Hamming radius {radius} of the query; "
                              f"using the {size} nearest codes instead", RetrievalWarning, stacklevel=3)
                _, positions = index.search(code[None], size)
                positions = positions[0][positions[0] >= 0]
            out.append(positions)
        return out

    def _two_stage(self, inputs, codes, index: BinaryIndex, k: int, method: str, rerank: str,
                   shortlist: int | None, radius: int | None) -> tuple[np.ndarray, np.ndarray]:
        """A Hamming shortlist, re-scored by an exact scorer (semantic hashing as a filter)."""
        allowed = RERANKERS[self.modality]
        if rerank not in allowed:
            raise InputError(f"--rerank {rerank!r} does not apply to {self.modality}; use one of {', '.join(allowed)}")
        size = max(k, shortlist or DEFAULT_SHORTLIST)
        candidates = self._shortlist(index, codes, size, radius)
        scorer = self._scorer(rerank, method, inputs)
        scores = np.full((len(candidates), k), -np.inf, np.float32)
        positions = np.full((len(candidates), k), -1, np.int64)
        for qi, cand in enumerate(candidates):
            if rerank == "none":
                s = -np.arange(len(cand), dtype=np.float32)  # keep the Hamming order
            else:
                s = scorer(qi, cand)
            # Stable: equal exact scores keep their Hamming order.
            order = np.argsort(-s, kind="stable")[:k]
            scores[qi, :len(order)], positions[qi, :len(order)] = s[order], cand[order]
        return scores, positions

    def _scorer(self, rerank: str, method: str, inputs):
        """``f(query row, candidate positions) -> exact scores`` for a re-ranker."""
        if rerank == "none":
            return None
        if "+" in rerank:
            # Score fusion: TF-IDF cosine plus the float codes' cosine (equal
            # weights; measured on 20NG, BENCHMARKS.md): exact word overlap and
            # learned topical similarity correct each other's errors.
            parts = [self._scorer(part, method, inputs) for part in rerank.split("+")]
            return lambda qi, cand: sum(part(qi, cand) for part in parts)
        if rerank == "float":
            name = f"{method}-float"
            if name not in self.manifest["methods"]:
                raise InputError(f"index {self.name!r} has no float codes {name!r} to re-rank with; "
                                 "use --rerank tfidf/pixels or rebuild with --bits")
            encoder, index = self.method(name)
            if not isinstance(index, FaissIndex):
                raise IndexFormatError(f"the float codes of {name!r} are not in a FAISS index; rebuild the index")
            queries = index._prepare(encoder.transform(inputs))
            return lambda qi, cand: index.vectors(cand) @ queries[qi]
        stored = self._require_inputs(f"--rerank {rerank}")
        if rerank == "tfidf":
            queries = sp.csr_matrix(inputs, dtype=np.float32)
            return lambda qi, cand: np.asarray((stored[cand] @ queries[qi].T).todense()).ravel()
        if rerank == "tfidf-prf":
            queries = sp.csr_matrix(inputs, dtype=np.float32)

            def feedback(qi, cand):
                # The nearest codes come first in the shortlist: their TF-IDF
                # centroid adds the topic's vocabulary to a short query.
                centroid = np.asarray(stored[cand[:PRF_DOCUMENTS]].mean(axis=0)).ravel()
                expanded = queries[qi].toarray().ravel() + PRF_WEIGHT * centroid
                return np.asarray(stored[cand] @ expanded, dtype=np.float32).ravel()

            return feedback
        flat = np.asarray(inputs).reshape(len(inputs), -1).astype(np.float32)

        def pixels(qi, cand):
            diff = stored[cand].reshape(len(cand), -1).astype(np.float32) - flat[qi]
            return -np.sqrt(np.einsum("ij,ij->i", diff, diff)) / 255

        return pixels

    def _require_inputs(self, need: str):
        path = self.folder / (DOC_INPUTS if self.modality == "docs" else IMAGE_INPUTS)
        if not path.exists():
            what = "TF-IDF matrix" if self.modality == "docs" else "pixels"
            raise InputError(f"index {self.name!r} was built without keeping its {what} ({path.name}), which "
                             f"{need} needs; rebuild it without --no-keep-inputs "
                             f"('retrieval index {self.modality} SOURCE --name {self.name} --bits N --force')")
        return self.inputs()

    def search_inputs(self, inputs, k: int, method: str | None = None,
                      exclude: np.ndarray | None = None, rerank: str | None = None,
                      shortlist: int | None = None, radius: int | None = None) -> list[list[Hit]]:
        """Encode model inputs and search; one list of hits per input row.

        Args:
            inputs: TF-IDF rows or image arrays, as stored in the index.
            k: Number of hits per query.
            method: Method name (default: the autoencoder).
            exclude: Per-row position to leave out (the query item itself).
            rerank: Two-stage search; see :meth:`rank`.
            shortlist: Hamming shortlist size for ``rerank``.
            radius: Hamming radius of the shortlist instead of a size.
        """
        k = check_k(k)
        extra = 0 if exclude is None else 1
        scores, positions = self.rank(inputs, k + extra, method, rerank, shortlist, radius)
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

    def query_text(self, text: str, k: int = 10, method: str | None = None, **two_stage) -> list[Hit]:
        """Documents most similar to ``text`` (``two_stage``: rerank, shortlist, radius)."""
        if not text or not text.strip():
            raise EmptyQueryError("the query text is empty; give some words, --file PATH or --like ID")
        self.refresh()  # before vectorizing: a rebuilt index may have another vocabulary
        return self.search_inputs(self.vectorize([text]), k, method, **two_stage)[0]

    def query_image(self, source: str | Path | bytes, k: int = 10, method: str | None = None,
                    **two_stage) -> list[Hit]:
        """Images most similar to an image file, URL or bytes."""
        return self.search_inputs(self.load_query_image(source), k, method, **two_stage)[0]

    def query_like(self, item_id: str, k: int = 10, method: str | None = None, **two_stage) -> list[Hit]:
        """Items most similar to an indexed item, the item itself left out."""
        self.refresh()
        pos = self.metadata.position(item_id)
        inputs = self._require_inputs("--like")[pos:pos + 1]
        return self.search_inputs(inputs, k, method, exclude=np.array([pos]), **two_stage)[0]

    # -- novelty -----------------------------------------------------------------
    def novelty(self, inputs, texts: list[str] | None = None) -> list[dict]:
        """How unlike the indexed collection each query is.

        Args:
            inputs: TF-IDF rows or image arrays.
            texts: The query texts (documents: their out-of-vocabulary words count).

        Returns:
            One ``{"score", "percentile"}`` per row: the autoencoder's
            reconstruction error and its percentile among the items the models
            were trained on (100: worse than every one of them). Empty when
            the index has no novelty scores (built by an older version).
        """
        from . import novelty

        if not (self.folder / novelty.REFERENCE).exists():
            return []
        if self._reference is None:
            self._reference = np.load(self.folder / novelty.REFERENCE, allow_pickle=False)
        oov = self.vectorizer.oov_fraction(texts) if texts is not None else None
        scores = novelty.item_novelty(self.method("ae")[0], inputs, oov)
        return [{"score": float(s), "percentile": float(p)}
                for s, p in zip(scores, novelty.percentile(self._reference, scores))]

    def close(self) -> None:
        """Release the metadata connection."""
        self.metadata.close()
