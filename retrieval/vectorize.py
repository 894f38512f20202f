"""TF-IDF bag-of-words vectors, persisted as vocabulary + idf (no pickle)."""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from importlib import util as import_util
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .errors import IndexFormatError, InputError


class TextVectorizer:
    """TF-IDF over a capped vocabulary, English stop words, sublinear tf.

    Args:
        max_features: Vocabulary cap: the most frequent terms are kept.
        min_df: Minimum number of documents a term must occur in.
        stop_words: ``"english"`` or ``None``.
        sublinear_tf: Use ``1 + log(tf)``; long documents stop dominating.

    Attributes:
        vocabulary_: Terms in column order.
        idf_: Inverse document frequencies, float32, one per term.
    """

    def __init__(self, max_features: int = 10_000, min_df: int = 1,
                 stop_words: str | None = "english", sublinear_tf: bool = True) -> None:
        self.max_features = max_features
        self.min_df = min_df
        self.stop_words = stop_words
        self.sublinear_tf = sublinear_tf

    def _sklearn(self, vocabulary: dict[str, int] | None = None):
        from sklearn.feature_extraction.text import TfidfVectorizer  # imported on first use: ~0.5 s

        return TfidfVectorizer(max_features=self.max_features, min_df=self.min_df,
                               stop_words=self.stop_words, sublinear_tf=self.sublinear_tf,
                               vocabulary=vocabulary, dtype=np.float32)

    def fit(self, texts: list[str]) -> "TextVectorizer":
        """Learn the vocabulary and idf of ``texts``; returns self."""
        self.fit_transform(texts)
        return self

    def fit_transform(self, texts: list[str]) -> sp.csr_matrix:
        """Fit, then return the TF-IDF matrix of ``texts``."""
        if self.max_features is not None and self.max_features < 2:
            raise InputError(f"vocabulary size must be >= 2; got {self.max_features}")
        vec = self._sklearn()
        try:
            matrix = vec.fit_transform(texts)
        except ValueError as exc:  # "empty vocabulary; perhaps the documents only contain stop words"
            raise InputError(f"cannot build a vocabulary: {exc}") from None
        self._vec = vec
        self.vocabulary_ = vec.get_feature_names_out().tolist()
        self.idf_ = vec.idf_.astype(np.float32)
        return matrix.astype(np.float32).tocsr()

    def fit_counts(self, counts: "TermCounts") -> "TextVectorizer":
        """Learn the vocabulary and idf from streamed counts; returns self.

        The same vocabulary (columns in the same order) and idf as :meth:`fit`
        on the texts counted (a test compares them), without the corpus'
        count matrix: scikit-learn's selection re-done on the totals. Its
        terms sorted alphabetically, those in at least ``min_df`` documents
        kept, then the ``max_features`` most frequent of those (float32
        totals and the same ``argsort``, so ties fall the same way); idf
        smoothed, ``log((1 + n) / (1 + df)) + 1`` in float32.

        Raises:
            InputError: The vocabulary cap is below 2, or no term is left.
        """
        if self.max_features is not None and self.max_features < 2:
            raise InputError(f"vocabulary size must be >= 2; got {self.max_features}")
        if counts.stop_words != self.stop_words:
            raise ValueError(f"counts were taken with stop_words={counts.stop_words!r}, not {self.stop_words!r}")
        if not counts.documents or not len(counts.df):
            raise InputError("cannot build a vocabulary: empty vocabulary; perhaps the documents only contain "
                             "stop words")
        # scikit-learn orders its terms alphabetically before choosing: the same order here.
        known = counts.terms
        order = np.asarray(sorted(range(len(known)), key=known.__getitem__), np.int64)
        terms = [known[i] for i in order]
        df = counts.df[order]
        mask = df >= self.min_df
        if not mask.any():
            raise InputError(f"cannot build a vocabulary: no term is in {self.min_df} documents or more")
        if self.max_features is not None and mask.sum() > self.max_features:
            totals = counts.tf[order].astype(np.float32)
            best = (-totals[mask]).argsort()[:self.max_features]
            chosen = np.zeros(len(terms), bool)
            chosen[np.flatnonzero(mask)[best]] = True
            mask = chosen
        self.vocabulary_ = [t for t, keep in zip(terms, mask) if keep]
        df = df[mask].astype(np.float32) + 1
        idf = np.full_like(df, counts.documents + 1) / df
        self.idf_ = (np.log(idf) + 1).astype(np.float32)
        self._columns = {term: i for i, term in enumerate(self.vocabulary_)}
        self._analyze = _word_analyzer(self.stop_words)
        return self

    def transform_oov(self, texts: list[str]) -> tuple[sp.csr_matrix, np.ndarray]:
        """:meth:`transform` and :meth:`oov_fraction` of ``texts`` from one tokenisation of each.

        What a build and an update compute for every item; tokenising once
        halves their cost. The rows equal :meth:`transform`'s up to float32
        rounding (a test compares them).
        """
        if not hasattr(self, "_analyze"):
            self._analyze = self._vec.build_analyzer()
            self._columns = self._vec.vocabulary_
        columns, analyze = self._columns, self._analyze
        oov = np.ones(len(texts), np.float32)
        indptr = np.zeros(len(texts) + 1, np.int64)
        indices, counts = [], []
        for i, text in enumerate(texts):
            tokens = analyze(text)
            row = Counter(col for col in map(columns.get, tokens) if col is not None)
            if tokens:
                oov[i] = (len(tokens) - sum(row.values())) / len(tokens)
            cols = sorted(row)
            indices.extend(cols)
            counts.extend(row[c] for c in cols)
            indptr[i + 1] = len(indices)
        return self._weigh(np.asarray(counts, np.float32), np.asarray(indices, np.int32), indptr), oov

    def _weigh(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray) -> sp.csr_matrix:
        """TF-IDF rows from term counts (float32 ``data``, columns sorted within each row): tf, idf, L2 norm."""
        n = len(indptr) - 1
        if self.sublinear_tf:  # scikit-learn's arithmetic, in float32 as it does it
            np.log(data, out=data)
            data += 1.0
        data *= self.idf_[indices]
        rows = np.repeat(np.arange(n), np.diff(indptr))
        norms = np.sqrt(np.bincount(rows, weights=data.astype(np.float64) ** 2, minlength=n))
        norms[norms == 0] = 1.0  # a text without a known term stays an all-zero row
        data /= norms[rows].astype(np.float32)
        return sp.csr_matrix((data, indices, indptr), shape=(n, self.n_features))

    def columns_of(self, counts: "TermCounts") -> np.ndarray:
        """The column of each of ``counts``' term ids (``-1``: outside the vocabulary), for :meth:`transform_counts`."""
        columns = self._columns
        return np.fromiter((columns.get(term, -1) for term in counts.terms), np.int64, len(counts.terms))

    def transform_counts(self, counts: sp.csr_matrix, columns: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
        """:meth:`transform_oov` of texts already counted by :meth:`TermCounts.count`, without tokenising again.

        Args:
            counts: Token counts, one row per text, columns :class:`TermCounts` term ids.
            columns: :meth:`columns_of` the counts that made them.

        Returns:
            The TF-IDF rows and each text's out-of-vocabulary fraction, equal to
            :meth:`transform_oov`'s on the texts (a test compares them).
        """
        counts = sp.csr_matrix(counts)
        n = counts.shape[0]
        mapped = columns[counts.indices]
        known = mapped >= 0
        rows = np.repeat(np.arange(n), np.diff(counts.indptr))
        tokens = np.bincount(rows, weights=counts.data, minlength=n)
        inside = np.bincount(rows[known], weights=counts.data[known], minlength=n)
        oov = np.ones(n, np.float32)
        some = tokens > 0
        oov[some] = ((tokens[some] - inside[some]) / tokens[some]).astype(np.float32)
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(rows[known], minlength=n), out=indptr[1:])
        kept = sp.csr_matrix((counts.data[known].astype(np.float32), mapped[known].astype(np.int32), indptr),
                             shape=(n, self.n_features))
        kept.sort_indices()
        return self._weigh(kept.data, kept.indices, kept.indptr), oov

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        """Return L2-normalised TF-IDF rows, float32 CSR ``(n, vocabulary)``.

        A text without any known term gives an all-zero row; callers check
        :func:`empty_rows` rather than dividing by zero.
        """
        if len(texts) <= 8:
            return self._transform_few(texts)
        if not hasattr(self, "_vec"):  # loaded: scikit-learn comes in with the first large batch
            self._vec = self._sklearn(self._columns)
            self._vec.idf_ = self.idf_.astype(np.float64)
        return self._vec.transform(texts).astype(np.float32).tocsr()

    def _transform_few(self, texts: list[str]) -> sp.csr_matrix:
        # scikit-learn's transform costs ~1 ms of set-up per call; a query
        # is one short text, so the same arithmetic done directly is ~20x faster.
        if not hasattr(self, "_analyze"):
            self._analyze = self._vec.build_analyzer()
            self._columns = self._vec.vocabulary_
        indptr, indices, data = [0], [], []
        for text in texts:
            counts: dict[int, int] = {}
            for token in self._analyze(text):
                col = self._columns.get(token)
                if col is not None:
                    counts[col] = counts.get(col, 0) + 1
            cols = np.fromiter(sorted(counts), np.int64, len(counts))
            tf = np.array([counts[c] for c in cols], np.float64)
            if self.sublinear_tf:
                tf = np.log(tf) + 1
            values = tf * self.idf_[cols]
            norm = np.sqrt(values @ values)
            indices.append(cols)
            data.append(values / norm if norm > 0 else values)
            indptr.append(indptr[-1] + len(cols))
        return sp.csr_matrix((np.concatenate(data).astype(np.float32) if data else np.zeros(0, np.float32),
                              np.concatenate(indices) if indices else np.zeros(0, np.int64), indptr),
                             shape=(len(texts), self.n_features))

    def oov_fraction(self, texts: list[str]) -> np.ndarray:
        """Per text, the fraction of its (non-stop-word) tokens outside the vocabulary.

        TF-IDF cannot see such words at all; novelty scores count them
        (see :func:`retrieval.novelty.item_novelty`). A text without
        any token gives 1.0.
        """
        if not hasattr(self, "_analyze"):
            self._analyze = self._vec.build_analyzer()
            self._columns = self._vec.vocabulary_
        out = np.ones(len(texts), np.float32)
        for i, text in enumerate(texts):
            tokens = self._analyze(text)
            if tokens:
                out[i] = sum(token not in self._columns for token in tokens) / len(tokens)
        return out

    @property
    def n_features(self) -> int:
        """The vocabulary size."""
        return len(self.vocabulary_)

    def save(self, folder: Path) -> None:
        """Write ``vocabulary.json``, ``idf.npy`` and ``vectorizer.json``."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocabulary.json").write_text(json.dumps(self.vocabulary_))
        np.save(folder / "idf.npy", self.idf_)
        params = {"max_features": self.max_features, "min_df": self.min_df,
                  "stop_words": self.stop_words, "sublinear_tf": self.sublinear_tf}
        (folder / "vectorizer.json").write_text(json.dumps(params))

    @classmethod
    def load(cls, folder: Path) -> "TextVectorizer":
        """Rebuild a fitted vectorizer exactly from :meth:`save`'s files."""
        try:
            params = json.loads((folder / "vectorizer.json").read_text())
            vocabulary = json.loads((folder / "vocabulary.json").read_text())
            idf = np.load(folder / "idf.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"vectorizer files in {folder} are missing or corrupt ({exc}); rebuild the index") from None
        if len(vocabulary) != len(idf):
            raise IndexFormatError(f"{folder}: {len(vocabulary)} terms but {len(idf)} idf values; rebuild the index")
        self = cls(**params)
        # A query is a few words: scikit-learn's analyzer, rebuilt here, spares
        # the query process the ~0.5 s (seconds under load) of importing it.
        self._columns = {term: i for i, term in enumerate(vocabulary)}
        self._analyze = _word_analyzer(self.stop_words)
        self.vocabulary_ = vocabulary
        self.idf_ = idf.astype(np.float32)
        return self


class TermCounts:
    """What fitting TF-IDF counts, taken one chunk of texts at a time.

    Per term, the documents it occurs in (``df``) and its occurrences
    (``tf``), and the documents seen: all :meth:`TextVectorizer.fit_counts`
    needs, in memory proportional to the distinct terms rather than to the
    corpus. Terms get ids in the order first seen (:attr:`terms`);
    :meth:`count` also returns a chunk's counts by id, so a build tokenises
    every text once (:meth:`TextVectorizer.transform_counts`). Tokens are
    scikit-learn's (:func:`_word_analyzer`).

    Args:
        stop_words: ``"english"`` or ``None``, as the vectorizer's.

    Attributes:
        df: Documents per term id, ``int64``.
        tf: Occurrences per term id, ``int64``.
        documents: Texts counted.
    """

    def __init__(self, stop_words: str | None = "english") -> None:
        self.stop_words = stop_words
        self._analyze = _word_analyzer(stop_words)
        self._ids: defaultdict = defaultdict()
        self._ids.default_factory = self._ids.__len__  # a new term gets the next id, in one dict lookup
        self.df = np.zeros(0, np.int64)
        self.tf = np.zeros(0, np.int64)
        self.documents = 0

    @property
    def terms(self) -> list[str]:
        """Every term counted, by id."""
        return list(self._ids)

    def count(self, texts) -> sp.csr_matrix:
        """Count ``texts`` (an iterable of strings); returns their token counts, ``int32`` CSR ``(texts, term ids)``."""
        ids, analyze = self._ids, self._analyze
        flat: list[int] = []
        indptr = [0]
        for text in texts:
            flat.extend(map(ids.__getitem__, analyze(text)))
            indptr.append(len(flat))
        n_terms = len(ids)
        tokens = np.asarray(flat, np.int64)
        rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        counts = sp.csr_matrix((np.ones(len(tokens), np.int32), (rows, tokens)), shape=(len(indptr) - 1, n_terms))
        counts.sum_duplicates()  # also sorts each row's columns
        grow = n_terms - len(self.df)
        if grow:
            self.df = np.concatenate([self.df, np.zeros(grow, np.int64)])
            self.tf = np.concatenate([self.tf, np.zeros(grow, np.int64)])
        self.tf += np.bincount(tokens, minlength=n_terms)
        self.df += np.bincount(counts.indices, minlength=n_terms)
        self.documents += len(indptr) - 1
        return counts

    def update(self, texts) -> None:
        """Count ``texts`` (an iterable of strings)."""
        self.count(texts)


#: scikit-learn's default ``token_pattern`` (words of two or more characters).
_TOKENS = re.compile(r"(?u)\b\w\w+\b")


def _word_analyzer(stop_words: str | None):
    """scikit-learn's word analyzer as :class:`TextVectorizer` configures it: lowercase, its tokens, no stop words.

    Equal to ``TfidfVectorizer(...).build_analyzer()`` (a test compares them) without importing scikit-learn.
    """
    stop = _english_stop_words() if stop_words == "english" else frozenset(stop_words or ())

    def analyze(text: str) -> list[str]:
        return [token for token in _TOKENS.findall(text.lower()) if token not in stop]
    return analyze


def _english_stop_words() -> frozenset[str]:
    """scikit-learn's English stop-word list, read from its data module without importing the package.

    The same list as the vectorizer's at fit time, by construction; importing
    ``sklearn`` itself would cost what the analyzer above saves.
    """
    package = import_util.find_spec("sklearn")
    if package is None or not package.submodule_search_locations:  # pragma: no cover - sklearn is a dependency
        raise InputError("scikit-learn is not installed; install it (pip install scikit-learn)")
    path = Path(next(iter(package.submodule_search_locations))) / "feature_extraction" / "_stop_words.py"
    spec = import_util.spec_from_file_location("_retrieval_sklearn_stop_words", path)
    module = import_util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return frozenset(module.ENGLISH_STOP_WORDS)


def empty_rows(matrix: sp.csr_matrix) -> np.ndarray:
    """Boolean mask of rows with no non-zero entry (no known term)."""
    return np.diff(matrix.indptr) == 0


def word_distribution(counts: sp.csr_matrix) -> sp.csr_matrix:
    """Normalise each row to sum 1 (rows of zeros stay zero)."""
    sums = np.asarray(counts.sum(axis=1)).ravel()
    sums[sums == 0] = 1.0
    return sp.diags((1.0 / sums).astype(np.float32)) @ counts
