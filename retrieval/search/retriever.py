"""An opened index: verified once, models loaded lazily, reopened when a writer changed it."""
from __future__ import annotations

import warnings

import numpy as np

from .. import novelty as novelty_scores
from ..ann import check_k
from ..config import DEFAULT_K, OUTLIERS_K, check_two_stage
from ..errors import IndexFormatError, InputError, RetrievalWarning
from ..modality import Modality, modality_of
from ..storage import IndexFolder, Store, migrate, read_raw_manifest, verify_index
from ..storage.segments import Items, Segments
from . import rerank as two_stage
from .filters import Filter, FilterResolver
from .hits import Hit, to_hits


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
        self.folder = IndexFolder(self.store.require(self.name))
        for attempt in range(3):
            self._stamp = self._manifest_stamp()
            try:
                self._read()
                break
            except IndexFormatError:
                # A writer committed (and the next one deleted what this manifest
                # listed) while it was being checked: read the new one.
                if attempt == 2 or self._manifest_stamp() == self._stamp:
                    raise
        self._methods: dict = {}
        self._state = None
        self._inputs = None
        self._reference = None

    def _read(self) -> None:
        raw = read_raw_manifest(self.folder.root)
        if self.verify:
            verify_index(self.folder.root, raw)  # the checksum covers the manifest as written
        self.manifest = migrate(raw)
        self.modality: Modality = modality_of(self.manifest, str(self.folder.manifest))
        if not self.manifest.get("methods"):
            raise IndexFormatError(f"{self.folder.manifest} lists no methods; rebuild the index")
        #: The segments of the index as opened (positions map to them).
        self.segments = Segments(self.folder, self.manifest, self.modality)
        self.metadata = Items(self.segments)
        self._filters = FilterResolver(self.metadata)  # its cache belongs to this version of the index

    def _manifest_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.folder.manifest.stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def refresh(self) -> bool:
        """Reopen the index if a writer committed a new version since it was opened.

        Methods load lazily; without this a long-lived retriever could pair
        the old manifest and metadata with the new version's files (or look
        for segments a compaction replaced). Costs one ``stat`` per query.

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

    @property
    def default_method(self) -> str:
        return self.manifest.get("default_method", "ae")

    def method(self, name: str | None = None):
        """The (encoder, nearest-neighbour index) pair of a method, loaded on first use."""
        from ..encoders import load_encoder

        name = name or self.default_method
        if ">" in name:
            raise InputError(f"{name!r} is a two-stage method; pass it to rank() or use --rerank")
        if name not in self.manifest["methods"]:
            raise InputError(f"index {self.name!r} has no method {name!r}; it has {', '.join(self.methods)}")
        if name not in self._methods:
            info = self.manifest["methods"][name]
            self._methods[name] = (load_encoder(info["encoder"], self.folder.method(name)),
                                   self.segments.index(name))
        return self._methods[name]

    @property
    def state(self):
        """The modality's preprocessing state (the TF-IDF vectorizer; the image size and colour)."""
        if self._state is None:
            self._state = self.modality.load_state(self.folder, self.manifest)
        return self._state

    def has_inputs(self) -> bool:
        """True when the index kept its model inputs (``--keep-inputs``)."""
        return self.segments.has_inputs()

    def inputs(self, need: str | None = None):
        """The stored model inputs: TF-IDF rows (documents) or pixels (images).

        Args:
            need: What needs them, named in the error when the index has none.
        """
        if self._inputs is None:
            if not self.has_inputs():
                need = need or "this"
                raise InputError(f"index {self.name!r} was built without keeping its {self.modality.inputs_noun} "
                                 f"({self.modality.inputs_file}), which {need} needs; rebuild it without "
                                 f"--no-keep-inputs ('retrieval index {self.modality.name} SOURCE --name "
                                 f"{self.name} --force')")
            try:
                self._inputs = self.segments.inputs(lambda: self.modality.empty(self.state, self.manifest).inputs)
            except (OSError, ValueError) as exc:
                raise IndexFormatError(f"stored inputs of {self.name!r} are unreadable ({exc}); "
                                       "rebuild the index") from None
        return self._inputs

    def query_inputs(self, queries: list):
        """Model inputs of raw queries: texts for documents; paths, URLs, bytes or arrays for images.

        Raises:
            EmptyQueryError: A text query has no word of the index vocabulary.
            InputError: A query of the wrong kind for the index.
        """
        self.refresh()  # before preprocessing: a rebuilt index may have another vocabulary
        return self.modality.concat_all([self.modality.query(self.state, q) for q in queries])

    # -- searching -------------------------------------------------------------
    @staticmethod
    def split_method(method: str | None) -> tuple[str | None, str | None]:
        """``"ae>tfidf"`` -> ``("ae", "tfidf")``: a method and its re-ranker."""
        if method and ">" in method:
            base, rerank = method.split(">", 1)
            return base or None, rerank
        return method, None

    def allowed(self, filter: Filter | None) -> np.ndarray | None:
        """Sorted positions of the items ``filter`` keeps (``None`` for no filter).

        Raises:
            NoMatchingItems: The filter keeps no item (an :class:`InputError`).
            InputError: A bad ``where`` condition.
        """
        if filter is None:
            return None
        self.refresh()
        positions = self._filters.positions(filter)
        if not len(positions):
            raise self._filters.no_match(filter, self.name)
        return positions

    def rank(self, inputs, k: int, method: str | None = None, rerank: str | None = None,
             shortlist: int | None = None, radius: int | None = None,
             filter: Filter | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Encode model inputs and search: ``(scores, positions)``, best first.

        Args:
            inputs: TF-IDF rows or image arrays, as stored in the index.
            k: Results per query.
            method: Method name, or ``"METHOD>RERANKER"`` for two-stage search.
            rerank: Re-rank a Hamming shortlist by one of the modality's
                re-rankers (:mod:`retrieval.search.rerank`); ``none`` or
                ``None`` keeps the Hamming order.
            shortlist: Shortlist size (default :data:`~retrieval.search.rerank.DEFAULT_SHORTLIST`).
            radius: Shortlist every item within this Hamming distance instead.
            filter: Rank only the items it keeps (:class:`~retrieval.search.filters.Filter`),
                chosen before the search: every item it keeps can be returned.
        """
        k = check_k(k)
        check_two_stage(shortlist, radius)  # before the float-code path, which ignores them
        self.refresh()
        method, named = self.split_method(method)
        method = method or self.default_method
        rerank = rerank or named
        encoder, index = self.method(method)
        if not len(index):  # every item was removed (sync --allow-empty)
            warnings.warn(f"index {self.name!r} holds no items (every item was removed); add some with "
                          f"'retrieval add {self.name} SOURCE'", RetrievalWarning, stacklevel=2)
            n = inputs.shape[0] if hasattr(inputs, "shape") else len(inputs)
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        allowed = self.allowed(filter)  # before encoding: a filter that keeps nothing costs no forward pass
        codes = encoder.transform(inputs)
        if rerank in (None, "none") and radius is None:
            return index.search(codes, k) if allowed is None else index.search_rows(codes, k, allowed)
        if not index.binary:
            raise InputError(f"--rerank and --radius need binary codes; method {method!r} of {self.name!r} "
                             "has float codes (build the index with --bits 64)")
        rerank = rerank or "none"
        if rerank not in self.modality.rerankers:
            raise InputError(f"--rerank {rerank!r} does not apply to {self.modality.noun}; use one of "
                             f"{', '.join(self.modality.rerankers)}")
        size = max(k, shortlist or two_stage.DEFAULT_SHORTLIST)
        candidates = two_stage.shortlist(index, codes, size, radius, allowed)
        score = two_stage.scorer(rerank, inputs, stored=self.inputs, float_method=lambda: self._float_codes(method))
        return two_stage.rerank(candidates, k, score)

    def _float_codes(self, method: str):
        name = f"{method}-float"
        if name not in self.manifest["methods"]:
            raise InputError(f"index {self.name!r} has no float codes {name!r} to re-rank with; "
                             "use another --rerank or rebuild with --bits")
        return self.method(name)

    def search_inputs(self, inputs, k: int, method: str | None = None, *,
                      exclude: np.ndarray | None = None, rerank: str | None = None,
                      shortlist: int | None = None, radius: int | None = None,
                      filter: Filter | None = None) -> list[list[Hit]]:
        """Encode model inputs and search; one list of hits per input row.

        Args:
            inputs: TF-IDF rows or image arrays, as stored in the index.
            k: Number of hits per query.
            method: Method name (default: the autoencoder).
            exclude: Per-row position to leave out (the query item itself).
            rerank: Two-stage search; see :meth:`rank`.
            shortlist: Hamming shortlist size for ``rerank``.
            radius: Hamming radius of the shortlist instead of a size.
            filter: Return only items this filter keeps (see :meth:`rank`).
        """
        k = check_k(k)
        extra = 0 if exclude is None else 1
        scores, positions = self.rank(inputs, k + extra, method, rerank, shortlist, radius, filter)
        return to_hits(self.metadata, scores, positions, k, exclude)

    def search(self, query, k: int = DEFAULT_K, method: str | None = None, **two_stage_options) -> list[Hit]:
        """Items most similar to one raw query (a text; an image path, URL, bytes or array)."""
        return self.search_inputs(self.query_inputs([query]), k, method, **two_stage_options)[0]

    def like(self, item_id: str, k: int = DEFAULT_K, method: str | None = None, **two_stage_options) -> list[Hit]:
        """Items most similar to an indexed item, the item itself left out."""
        self.refresh()
        pos = self.metadata.position(item_id)
        inputs = self.inputs("--like")[pos:pos + 1]
        return self.search_inputs(inputs, k, method, exclude=np.array([pos]), **two_stage_options)[0]

    # -- novelty -----------------------------------------------------------------
    def novelty(self, inputs, queries: list | None = None) -> list[dict]:
        """How unlike the indexed collection each query is.

        Args:
            inputs: TF-IDF rows or image arrays.
            queries: The raw queries (documents: their out-of-vocabulary words count).

        Returns:
            One ``{"score", "percentile", "reference_items", "verdict"}`` per
            row: the autoencoder's reconstruction error, its percentile among
            the items the models were trained on (100: worse than every one of
            them), their number, and what that says
            (:func:`retrieval.novelty.judge`; ``unjudged`` below
            :data:`~retrieval.config.NOVELTY_MIN_ITEMS` of them). Empty when
            the index has no novelty scores (built by an older version).
        """
        if self.manifest.get("novelty") is None or not self.folder.novelty_reference.exists():
            return []
        if self._reference is None:
            self._reference = np.load(self.folder.novelty_reference, allow_pickle=False)
        oov = None
        if queries is not None and hasattr(self.state, "oov_fraction"):
            oov = self.state.oov_fraction([str(q) for q in queries])
        return novelty_scores.judge(self._reference, novelty_scores.item_novelty(self.method("ae")[0], inputs, oov))

    def stored_novelty(self, item_id: str) -> dict | None:
        """The stored novelty of an indexed item (``None`` for an index without scores)."""
        if self.manifest.get("novelty") is None:
            return None
        scores, reference = self._stored_scores()
        return novelty_scores.judge(reference, scores[self.metadata.position(item_id)])[0]

    def outliers(self, k: int = OUTLIERS_K) -> list[dict]:
        """The ``k`` items the autoencoder reconstructs worst, most novel first.

        Returns:
            Dicts with rank, id, title, label, path, position, novelty (the
            score) and percentile (among the items the models were trained on).
        """
        k = check_k(k)
        scores, reference = self._stored_scores()
        order = np.argsort(-scores, kind="stable")[:k]
        rows = self.metadata.rows(order)
        pct = novelty_scores.percentile(reference, scores[order])
        return [{"rank": r + 1, "id": row["id"], "title": row["title"] or "", "label": row["label"],
                 "path": row["path"] or "", "position": int(pos), "novelty": float(scores[pos]),
                 "percentile": float(p)} for r, (row, pos, p) in enumerate(zip(rows, order, pct))]

    def _stored_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """``(every item's novelty score in position order, the sorted reference)``."""
        if self.manifest.get("novelty") is None:
            raise novelty_scores.missing(self.name)
        try:
            scores = self.segments.per_item(lambda seg: np.load(seg.novelty, allow_pickle=False))
        except FileNotFoundError:
            raise novelty_scores.missing(self.name) from None
        return scores, novelty_scores.load_reference(self.folder)

    def close(self) -> None:
        """Release the metadata connections."""
        self.metadata.close()

    def __enter__(self) -> "Retriever":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
