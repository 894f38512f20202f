"""Everything that differs between documents and images, in one object each.

The rest of the package (the writer, the retriever, evaluation, plots, the
API) asks the index's :class:`Modality` instead of comparing strings: how to
read a source, how raw items become model inputs (TF-IDF rows or pixels),
how those inputs are stored, appended and sliced, which encoders and
re-rankers exist, and how a query is turned into inputs. A third modality is
one more subclass registered in :data:`MODALITIES`.
"""
from __future__ import annotations

import hashlib
import itertools
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import numpy as np

from .config import (BUILD_CHUNK_DOCS, BUILD_CHUNK_IMAGES, DOC_BASELINES, IMAGE_BASELINES, MIN_QUERY_WORDS,
                     QUERY_FIELDS, RERANKERS_DOCS, RERANKERS_IMAGES, DocsConfig, ImagesConfig, check_query_field)
from .errors import EmptyQueryError, IndexFormatError, InputError
from .items import Item
from .progress import report


@dataclass
class Batch:
    """Items of one source in the model's input space.

    Attributes:
        items: One item per row, each with ``extra["sha256"]`` of its content.
        inputs: TF-IDF rows (CSR) or ``uint8`` pixels ``(n, s, s, c)``.
        oov: Documents: the fraction of each text's tokens outside the
            vocabulary (novelty counts them); ``None`` for images.
        skipped: Unreadable files or records of the source (each warned about).
    """

    items: list[Item]
    inputs: Any
    oov: np.ndarray | None = None
    skipped: int = 0

    @staticmethod
    def join(modality: "Modality", batches: list["Batch"]) -> "Batch":
        """The batches one after the other (one batch of their items)."""
        oovs = [b.oov for b in batches]
        return Batch([it for b in batches for it in b.items], modality.concat_all([b.inputs for b in batches]),
                     None if any(o is None for o in oovs) else np.concatenate(oovs),
                     sum(b.skipped for b in batches))

    def take(self, rows) -> "Batch":
        """The batch restricted to ``rows`` (positions, in order)."""
        rows = np.asarray(rows, dtype=np.int64)
        return Batch([self.items[i] for i in rows], self.inputs[rows],
                     None if self.oov is None else self.oov[rows], self.skipped)


def _hashed(items: list[Item], contents) -> list[Item]:
    """Record the SHA-256 of every item's content in ``extra["sha256"]`` (``sync`` compares it)."""
    for item, content in zip(items, contents):
        data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content.tobytes()
        item.extra = {**item.extra, "sha256": hashlib.sha256(data).hexdigest()}
    return items


def _save_counts(path: Path, counts) -> None:
    import scipy.sparse as sp

    sp.save_npz(path, counts, compressed=False)  # scratch, read back once: not worth compressing


def _quietly(chunks: Iterator) -> Iterator:
    """``chunks`` without their :class:`~retrieval.errors.RetrievalWarning`: a second pass over a source
    would repeat every warning of the first."""
    import warnings

    from .errors import RetrievalWarning

    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RetrievalWarning)
            chunk = next(chunks, None)
        if chunk is None:
            return
        yield chunk


def encoder_options(config, cls, **overrides) -> dict:
    """The encoder's constructor options: the config fields of the same name, then ``overrides``.

    Options ``cls`` does not take are left out, so one call serves every
    modality's autoencoder (``pretrain`` exists only for documents).
    """
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    values = {f.name: getattr(config, f.name) for f in fields(config)} | overrides
    return {k: v for k, v in values.items() if k in accepted}


class Modality:
    """The behaviour of one kind of item; subclasses are singletons in :data:`MODALITIES`."""

    #: The manifest's ``modality`` value.
    name: ClassVar[str] = ""
    #: Plural noun used in messages ("documents").
    noun: ClassVar[str] = ""
    #: What the stored inputs are, in messages ("TF-IDF matrix").
    inputs_noun: ClassVar[str] = ""
    #: File name of the stored model inputs inside a segment folder (its first shard).
    inputs_file: ClassVar[str] = ""
    #: Items a build reads, vectorises and encodes at a time; the rows of a shard of stored inputs
    #: that a compaction or a retrain writes (``BUILD_CHUNK_*``).
    chunk_size: ClassVar[int] = 0
    config_class: ClassVar[type] = object
    #: The autoencoder's encoder registry name (:func:`retrieval.encoders.encoder_class`).
    autoencoder_name: ClassVar[str] = ""
    #: The linear baseline (LSA, PCA) and the exact one (TF-IDF cosine, pixel distance): method and
    #: encoder registry names alike.
    linear: ClassVar[str] = ""
    exact: ClassVar[str] = ""
    #: Re-rankers of a Hamming shortlist (``none`` keeps the Hamming order).
    rerankers: ClassVar[tuple[str, ...]] = ()
    #: What a query is, in messages.
    #: The field of an in-memory record that holds the item itself.
    record_key: ClassVar[str] = ""
    #: Queries are texts (documents) rather than images; a server must not hand
    #: a text to :meth:`query` of an image index, which reads a string as a path.
    text_queries: ClassVar[bool] = False
    #: The stored inputs are pictures (the server sends them as PNG thumbnails).
    pictures: ClassVar[bool] = False
    #: Baselines a compare view puts beside the autoencoder, preferred first.
    compared_with: ClassVar[tuple[str, ...]] = ()

    # -- the index's preprocessing state ------------------------------------------
    def prepare_chunks(self, source, config, *, chunk_size: int | None = None,
                       progress=None) -> tuple[Any, Iterator[Batch], dict]:
        """Fit the preprocessing on a source and stream its items: ``(state, chunks, manifest entries)``.

        ``chunks`` reads the source (again, for documents) and yields its items
        as batches of at most ``chunk_size`` (default: :attr:`chunk_size`):
        a build never holds every item's inputs at once.
        """
        raise NotImplementedError

    def prepare(self, source, config, *, store_root: Path | None = None) -> tuple[Any, Batch, dict]:
        """Read a source and fit the preprocessing: ``(state, batch, manifest entries)``, the batch in memory."""
        state, chunks, extra = self.prepare_chunks(source, config)
        return state, Batch.join(self, list(chunks)), extra

    def save_state(self, state, folder) -> None:
        """Write the preprocessing state into the index folder (may write nothing)."""

    def load_state(self, folder, manifest: dict):
        """The preprocessing state of an opened index."""
        raise NotImplementedError

    def read(self, state, source, config, *, labels_from_folders: bool) -> Batch:
        """Read new items with the index's own preprocessing (``add``/``sync``)."""
        raise NotImplementedError

    def from_memory(self, state, data, config) -> Batch:
        """A batch of in-memory items (see :class:`retrieval.api.Index`)."""
        raise NotImplementedError

    # -- stored inputs ----------------------------------------------------------------
    # The inputs of a segment are stored in shards, so that a build writes them
    # as it reads and a compaction or a retrain copies them a chunk at a time:
    # ``path`` itself (``inputs.npz``, the only file of an index written
    # before shards), then ``inputs.1.npz``, ``inputs.2.npz``, ... They load as one.
    def shard_number(self, name: str) -> int | None:
        """The rank of the stored-inputs shard called ``name`` (``inputs.npz``: 0, ``inputs.2.npz``: 2), else ``None``."""
        stem, suffix = Path(self.inputs_file).stem, Path(self.inputs_file).suffix
        if name == self.inputs_file:
            return 0
        middle = name[len(stem) + 1:len(name) - len(suffix)] if len(name) > len(self.inputs_file) else ""
        ok = name.startswith(stem + ".") and name.endswith(suffix) and middle.isdigit() and middle[0] != "0"
        return int(middle) if ok else None

    def input_shards(self, path: Path) -> list[Path]:
        """The files of the inputs stored at ``path``, in row order (none when ``path`` does not exist)."""
        path = Path(path)
        if not path.exists():
            return []
        numbered = {}
        for shard in path.parent.glob(f"{path.stem}.*{path.suffix}"):
            number = self.shard_number(shard.name)
            if number:
                numbered[number] = shard
        return [path] + [numbered[k] for k in sorted(numbered)]

    def save_inputs(self, path: Path, inputs) -> None:
        """Store ``inputs`` as the only shard at ``path`` (other shards are removed)."""
        for shard in self.input_shards(path)[1:]:
            shard.unlink()
        self._save_shard(Path(path), inputs)

    def append_inputs(self, path: Path, inputs) -> None:
        """Store ``inputs`` after the inputs at ``path``, as a new shard."""
        path = Path(path)
        count = len(self.input_shards(path))
        self._save_shard(path.with_name(f"{path.stem}.{count}{path.suffix}") if count else path, inputs)

    def load_inputs(self, path: Path):
        """Every shard at ``path``, as one array (rows in order)."""
        shards = self.input_shards(path) or [Path(path)]  # a missing file fails here, as the caller expects
        parts = [self._load_shard(shard) for shard in shards]
        return parts[0] if len(parts) == 1 else self.concat_all(parts)

    def iter_inputs(self, path: Path) -> Iterator:
        """The shards at ``path`` one at a time."""
        return self.iter_shards(self.input_shards(path))

    def iter_shards(self, shards: list[Path]) -> Iterator:
        """The inputs of the given shard files, one at a time."""
        for shard in shards:
            yield self._load_shard(shard)

    def take_inputs(self, path: Path, rows) -> Any:
        """The rows ``rows`` (sorted positions) of the inputs at ``path``, reading one shard at a time."""
        return self.take(self.iter_inputs(path), rows)

    def take(self, parts: Iterable, rows) -> Any:
        """The rows ``rows`` (sorted positions) of the inputs ``parts`` yields in row order, one part held at a time."""
        rows = np.asarray(rows, np.int64)
        taken, start = [], 0
        for part in parts:
            stop = start + part.shape[0]
            lo, hi = np.searchsorted(rows, [start, stop])
            taken.append(part[rows[lo:hi] - start])
            start = stop
        return self.concat_all(taken)

    def rechunk(self, parts: Iterable, size: int | None = None) -> Iterator:
        """The rows ``parts`` yields, regrouped in order into blocks of at least ``size`` rows (the last one smaller).

        A compaction of many small segments, or a retrain, writes a few shards of
        about :attr:`chunk_size` rows rather than one per part; a block holds
        less than ``size`` plus one part.
        """
        size = size or self.chunk_size
        held, rows = [], 0
        for part in parts:
            if not part.shape[0]:
                continue
            held.append(part)
            rows += part.shape[0]
            if rows >= size:
                yield held[0] if len(held) == 1 else self.concat_all(held)
                held, rows = [], 0
        if held:
            yield held[0] if len(held) == 1 else self.concat_all(held)

    def _save_shard(self, path: Path, inputs) -> None:
        raise NotImplementedError

    def _load_shard(self, path: Path):
        raise NotImplementedError

    def concat_all(self, parts: list):
        """The rows of every part, in order."""
        raise NotImplementedError

    def concat(self, a, b):
        """Rows of ``a`` followed by rows of ``b``."""
        return self.concat_all([a, b])

    def empty(self, state, manifest: dict) -> Batch:
        """A batch of no items of the index's input shape."""
        raise NotImplementedError

    # -- models -------------------------------------------------------------------------
    def encoders(self, config, shape: tuple[int, ...] | None = None) -> dict:
        """The unfitted encoders of an index: the autoencoder, the baselines, the hashing baselines.

        Args:
            config: The build options.
            shape: The shape of the training inputs. A linear baseline has at
                most ``min(items, features) - 1`` dimensions; on a smaller
                corpus its dimension is lowered, with a warning, rather than
                failing the build.
        """
        from .encoders.hashing import ITQEncoder, LSHEncoder

        dim = config.baseline_dim or config.code_dim
        if shape is not None:
            limit = min(shape[0], int(np.prod(shape[1:]))) - 1
            if 1 <= limit < dim:
                import warnings

                from .errors import RetrievalWarning

                warnings.warn(f"{shape[0]} items are too few for a {dim}-d {self.linear} baseline; "
                              f"it uses {limit} dimensions", RetrievalWarning, stacklevel=3)
                dim = limit
        encoders = {"ae": self.autoencoder(config)}
        encoders.update(self.baseline_encoders(config, dim))
        if getattr(config, "quantize", "none") == "vq" and self.linear in config.baselines:
            # The linear baseline in FAISS' product quantiser, at the VQ codes' bytes (pq-lsa, pq-pca).
            pq = self.linear_baseline(dim, config.seed)[1]
            pq.pq_groups = config.groups
            encoders[f"pq-{self.linear}"] = pq
        if "itq" in config.baselines:
            encoders["itq"] = ITQEncoder(config.bits, seed=config.seed)
        if "lsh" in config.baselines:
            encoders["lsh"] = LSHEncoder(config.bits, seed=config.seed)
        return encoders

    @property
    def baselines(self) -> tuple[str, ...]:
        """The float baselines built beside the autoencoder by default."""
        return (self.linear, self.exact)

    def autoencoder_class(self) -> type:
        from .encoders import encoder_class

        return encoder_class(self.autoencoder_name)

    def autoencoder(self, config, **overrides):
        """The unfitted autoencoder of ``config`` (``overrides`` replace options, e.g. for the 2-D map)."""
        cls = self.autoencoder_class()
        base = {"code_dim": config.bits or config.code_dim, "binarize": "learned" if config.bits else "none"}
        return cls(**encoder_options(config, cls, **(base | overrides)))

    def baseline_encoders(self, config, dim: int) -> dict:
        """The float baselines of ``config`` (the linear one with ``dim`` dimensions)."""
        from .encoders import encoder_class

        out = {}
        if self.linear in config.baselines:
            out[self.linear] = self.linear_baseline(dim, config.seed)[1]
        if self.exact in config.baselines:
            out[self.exact] = encoder_class(self.exact)()
        return out

    def linear_baseline(self, dim: int, seed: int):
        """``(name, unfitted encoder)`` of the linear baseline (the 2-D map is drawn beside it too)."""
        from .encoders import encoder_class

        return self.linear, encoder_class(self.linear)(dim, seed=seed)

    # -- items and queries -----------------------------------------------------------------
    def snippet(self, item: Item) -> str:
        """The text shown under a hit."""
        raise NotImplementedError

    def query(self, state, query, *, options: dict | None = None):
        """Model inputs ``(1, ...)`` of one query (text, or an image path / URL / bytes)."""
        raise NotImplementedError

    def read_queries(self, state, source, *, labels_from_folders: bool, strip: str | None,
                     limit: int | None, query_field: str = QUERY_FIELDS[0]) -> tuple[Any, list[Item], list]:
        """Labelled evaluation queries: ``(inputs, items, raw queries for the latency sample)``.

        ``query_field`` is the part of each item that is the query (see
        :meth:`select_queries`).
        """
        raise NotImplementedError

    def select_queries(self, state, items: list[Item], inputs, *,
                       query_field: str = QUERY_FIELDS[0]) -> tuple[Any, list[Item], list]:
        """Labelled items as evaluation queries: ``(inputs, items kept, raw queries)``.

        Args:
            state: The index's preprocessing state.
            items: The query items (labelled).
            inputs: Their model inputs as read (images), or ``None``.
            query_field: One of :data:`retrieval.config.QUERY_FIELDS`; only
                documents have other fields than ``text``.

        Raises:
            InputError: An unknown field, or a field the modality does not have.
        """
        self.check_query_field(query_field)
        return inputs, items, list(inputs)

    def check_query_field(self, query_field: str) -> str:
        """Validate ``query_field`` for this modality (only documents have fields other than ``text``)."""
        check_query_field(query_field)
        if query_field != QUERY_FIELDS[0]:
            raise InputError(f"--query-field {query_field} needs documents; {self.noun} are queried whole "
                             f"(leave --query-field at {QUERY_FIELDS[0]})")
        return query_field


class Docs(Modality):
    """Text documents: TF-IDF bag of words -> dense autoencoder; LSA and TF-IDF cosine baselines."""

    name = "docs"
    noun = "documents"
    inputs_noun = "TF-IDF matrix"
    inputs_file = "inputs.npz"
    chunk_size = BUILD_CHUNK_DOCS
    config_class = DocsConfig
    autoencoder_name = "text_autoencoder"
    linear, exact = DOC_BASELINES
    rerankers = RERANKERS_DOCS
    record_key = "text"
    text_queries = True
    compared_with = (linear, exact)  # LSA: the classic comparison of Hinton & Salakhutdinov

    def _corpus(self, source, config, labels_from_folders: bool):
        from .sources.documents import DocumentCorpus, corpus_from_records, read_documents

        if isinstance(source, DocumentCorpus):
            return source
        if not isinstance(source, (str, Path)):  # texts or records in memory
            return corpus_from_records(source, strip=config.strip)
        return read_documents(source, labels_from_folders=labels_from_folders, strip=config.strip)

    def _batch(self, vectorizer, corpus) -> Batch:
        texts = [it.text for it in corpus.items]
        X, oov = vectorizer.transform_oov(texts)
        return Batch(_hashed(corpus.items, texts), X, oov, len(corpus.skipped))

    def _chunks(self, source, config, chunk_size: int):
        """A function reading ``source`` afresh, chunk by chunk (a corpus in memory is sliced)."""
        from .sources.documents import DocumentCorpus, iter_documents

        if isinstance(source, (str, Path)):
            return lambda: iter_documents(source, labels_from_folders=config.labels_from_folders, strip=config.strip,
                                          chunk_size=chunk_size)
        corpus = self._corpus(source, config, config.labels_from_folders)
        return lambda: (DocumentCorpus(corpus.items[start:start + chunk_size], corpus.skipped if not start else [])
                        for start in range(0, len(corpus.items), chunk_size))

    def prepare_chunks(self, source, config, *, chunk_size=None, progress=None):
        """Documents: a first pass counts the terms (the vocabulary and idf); ``chunks`` is a second pass.

        Each text is tokenised once: the first pass keeps every chunk's term
        counts in a scratch folder, and the second reads the source again
        only for its items, weighing the saved counts with the fitted idf.
        """
        from .vectorize import TermCounts, TextVectorizer

        read = self._chunks(source, config, chunk_size or self.chunk_size)
        vectorizer = TextVectorizer(max_features=config.vocab_size)
        counts = TermCounts(vectorizer.stop_words)
        scratch = Path(tempfile.mkdtemp(prefix="retrieval-counts-"))
        try:
            saved = []
            for corpus in read():
                path = scratch / f"{len(saved):06d}.npz"
                _save_counts(path, counts.count(it.text for it in corpus.items))
                saved.append(path)
                report(progress, "vocabulary", 0, 1, items=counts.documents)
            report(progress, "vocabulary", 1, 1, items=counts.documents)
            vectorizer.fit_counts(counts)
            columns = vectorizer.columns_of(counts)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        del counts
        return vectorizer, self._counted(vectorizer, columns, read, saved, scratch), \
            {"vectorizer": {"vocabulary": vectorizer.n_features}}

    def _counted(self, vectorizer, columns, read, saved: list[Path], scratch: Path) -> Iterator[Batch]:
        """The second pass: the source's chunks again, weighed from the first pass' counts; removes ``scratch``."""
        import scipy.sparse as sp

        try:
            chunks = _quietly(read())
            for path, corpus in itertools.zip_longest(saved, chunks):
                if path is None or corpus is None:
                    raise InputError("the source changed while it was read (its chunks differ between the two "
                                     "passes); index it again once it stops changing")
                counts = sp.load_npz(path)
                if counts.shape[0] != len(corpus.items):
                    raise InputError("the source changed while it was read (a chunk had "
                                     f"{counts.shape[0]} documents, now {len(corpus.items)}); index it again "
                                     "once it stops changing")
                X, oov = vectorizer.transform_counts(counts, columns)
                yield Batch(_hashed(corpus.items, [it.text for it in corpus.items]), X, oov, len(corpus.skipped))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def save_state(self, state, folder) -> None:
        state.save(folder.vectorizer)

    def load_state(self, folder, manifest):
        from .vectorize import TextVectorizer

        return TextVectorizer.load(folder.vectorizer)

    def read(self, state, source, config, *, labels_from_folders):
        return self._batch(state, self._corpus(source, config, labels_from_folders))

    def from_memory(self, state, data, config):
        from .sources.documents import corpus_from_records

        corpus = corpus_from_records(data, strip=config.strip)
        if state is None:
            return corpus
        return self._batch(state, corpus)

    def _save_shard(self, path, inputs):
        import scipy.sparse as sp

        sp.save_npz(path, sp.csr_matrix(inputs), compressed=True)

    def _load_shard(self, path):
        import scipy.sparse as sp

        return sp.load_npz(path).tocsr()

    def concat_all(self, parts):
        import scipy.sparse as sp

        if len(parts) == 1 and sp.isspmatrix_csr(parts[0]):  # one query: no copy (vstack costs ~0.3 ms)
            return parts[0]
        return sp.vstack(parts).tocsr()

    def empty(self, state, manifest):
        import scipy.sparse as sp

        vocabulary = manifest["vectorizer"]["vocabulary"]
        return Batch([], sp.csr_matrix((0, vocabulary), dtype=np.float32), np.zeros(0, np.float32), 0)

    def snippet(self, item):
        from .sources.text import snippet

        return snippet(item.text)

    def query(self, state, query, *, options=None):
        from .vectorize import empty_rows

        if not isinstance(query, str):
            raise InputError(f"a document index is queried with text; got a {type(query).__name__} "
                             "(give the words, --file PATH or --like ID)")
        if not query or not str(query).strip():
            raise EmptyQueryError("the query text is empty; give some words, --file PATH or --like ID")
        X = state.transform([query])
        if empty_rows(X)[0]:
            text = " ".join(query.split())[:60]
            raise EmptyQueryError(f"the query {text!r} has no word of the index vocabulary "
                                  "(only stop words or unknown words); use more specific words")
        return X

    def read_queries(self, state, source, *, labels_from_folders, strip, limit, query_field=QUERY_FIELDS[0]):
        from .sources.documents import read_documents

        self.check_query_field(query_field)  # before reading a large query folder
        items = read_documents(source, labels_from_folders=labels_from_folders, strip=strip).items
        items = [it for it in items if it.label is not None][:limit]
        if not items:
            return None, [], []
        return self.select_queries(state, items, None, query_field=query_field)

    def check_query_field(self, query_field):
        return check_query_field(query_field)

    def select_queries(self, state, items, inputs, *, query_field=QUERY_FIELDS[0]):
        """The query text of each item (:func:`~retrieval.sources.documents.query_text`) as TF-IDF rows.

        Queries without a word of the vocabulary are left out; short queries
        (``title``, ``first-line``) also when they have fewer than
        :data:`~retrieval.config.MIN_QUERY_WORDS` words. One warning counts them.
        """
        import re
        import warnings

        from .errors import RetrievalWarning
        from .sources.documents import query_text
        from .vectorize import empty_rows

        self.check_query_field(query_field)
        texts = [query_text(it, query_field) for it in items]
        X = state.transform(texts)
        keep = ~empty_rows(X)
        short = query_field != QUERY_FIELDS[0]
        if short:
            keep &= np.array([len(re.findall(r"\w+", t)) >= MIN_QUERY_WORDS for t in texts], dtype=bool)
        if not keep.all():
            why = (f"their {query_field} has fewer than {MIN_QUERY_WORDS} words or no word of the index vocabulary"
                   if short else "they have no word of the index vocabulary")
            warnings.warn(f"{int((~keep).sum())} of {len(items)} queries were left out: {why}",
                          RetrievalWarning, stacklevel=3)
            rows = np.flatnonzero(keep)
            X, items, texts = X[rows], [items[i] for i in rows], [texts[i] for i in rows]
        return X, items, texts


@dataclass(frozen=True)
class ImageShape:
    """The preprocessing of an image index: every image becomes ``size x size`` in ``color``."""

    size: int
    color: str
    fit: str

    @property
    def channels(self) -> int:
        return 1 if self.color == "grey" else 3


class Images(Modality):
    """Images: pixels -> convolutional autoencoder; PCA and pixel-distance baselines."""

    name = "images"
    noun = "images"
    inputs_noun = "pixels"
    inputs_file = "pixels.npy"
    chunk_size = BUILD_CHUNK_IMAGES
    config_class = ImagesConfig
    autoencoder_name = "conv_autoencoder"
    linear, exact = IMAGE_BASELINES
    rerankers = RERANKERS_IMAGES
    record_key = "image"
    pictures = True
    compared_with = (exact, linear)  # raw pixel distance: what a user would otherwise get

    def _corpus(self, source, *, size, color, fit, labels_from_folders, limit=None):
        from .sources.images import ImageCorpus, corpus_from_arrays, read_images

        if isinstance(source, ImageCorpus):
            return source
        if not isinstance(source, (str, Path)):  # arrays, bytes or records in memory
            return corpus_from_arrays(source, size=size, color=color, fit=fit)
        return read_images(Path(source).expanduser(), size=size, color=color, fit=fit,
                           labels_from_folders=labels_from_folders, limit=limit)

    @staticmethod
    def _batch(corpus) -> Batch:
        return Batch(_hashed(corpus.items, corpus.pixels), corpus.pixels, None, len(corpus.skipped))

    def prepare_chunks(self, source, config, *, chunk_size=None, progress=None):
        """Images: a single pass; the first chunk gives the size and colour (an IDX header, or a folder's headers)."""
        from .sources.images import ImageCorpus, iter_images

        chunk_size = chunk_size or self.chunk_size
        options = {"size": config.size, "color": config.color, "fit": config.fit}
        if isinstance(source, (str, Path)):
            chunks = iter_images(Path(source).expanduser(), labels_from_folders=config.labels_from_folders,
                                 limit=config.limit, chunk_size=chunk_size, **options)
        else:
            corpus = self._corpus(source, labels_from_folders=config.labels_from_folders, limit=config.limit,
                                  **options)
            chunks = (ImageCorpus(corpus.items[start:start + chunk_size], corpus.pixels[start:start + chunk_size],
                                  corpus.size, corpus.color, corpus.skipped if not start else [])
                      for start in range(0, len(corpus.items), chunk_size))
        first = next(chunks)
        shape = ImageShape(first.size, first.color, config.fit)
        batches = (self._batch(corpus) for corpus in itertools.chain([first], chunks))
        return shape, batches, {"images": {"size": shape.size, "color": shape.color, "fit": shape.fit}}

    def load_state(self, folder, manifest):
        try:
            return ImageShape(**manifest["images"])
        except (KeyError, TypeError):
            raise IndexFormatError(f"{folder.manifest} lacks the image size and colour; rebuild the index") from None

    def read(self, state, source, config, *, labels_from_folders):
        return self._batch(self._corpus(source, size=state.size, color=state.color, fit=state.fit,
                                        labels_from_folders=labels_from_folders))

    def from_memory(self, state, data, config):
        from .sources.images import corpus_from_arrays

        if state is None:
            corpus = corpus_from_arrays(data, size=config.size, color=config.color, fit=config.fit)
        else:
            corpus = corpus_from_arrays(data, size=state.size, color=state.color, fit=state.fit)
        return corpus if state is None else self._batch(corpus)

    def _save_shard(self, path, inputs):
        np.save(path, np.asarray(inputs))

    def _load_shard(self, path):
        return np.load(path, allow_pickle=False)

    def concat_all(self, parts):
        return np.concatenate(parts)

    def empty(self, state, manifest):
        return Batch([], np.zeros((0, state.size, state.size, state.channels), np.uint8), None, 0)

    def snippet(self, item):
        return item.title

    def query(self, state, query, *, options=None):
        """Decode and preprocess a query image: a path, an http(s) URL, raw bytes or an array."""
        from .sources.images import load_image

        if isinstance(query, np.ndarray):
            from .sources.images import corpus_from_arrays

            return corpus_from_arrays([query], size=state.size, color=state.color, fit=state.fit).pixels
        if isinstance(query, str) and query.startswith(("http://", "https://")):
            from .sources.crawl import fetch_image_bytes

            name, query = query, fetch_image_bytes(query)
        elif isinstance(query, bytes):
            name = "query image"
        elif not isinstance(query, (str, Path)):
            raise InputError(f"an image query is a file path, an http(s) URL, encoded bytes or an array; "
                             f"got a {type(query).__name__}")
        else:
            name = str(query)
            path = Path(query).expanduser()
            if not path.exists():  # a folder or device: load_image says which
                raise InputError(f"query image {query} does not exist; this index holds images: give an image "
                                 "file, an http(s) URL or --like ID")
            query = path
        return load_image(query, size=state.size, color=state.color, fit=state.fit, name=name)[None]

    def read_queries(self, state, source, *, labels_from_folders, strip, limit, query_field=QUERY_FIELDS[0]):
        self.check_query_field(query_field)  # before reading a large query folder
        corpus = self._corpus(source, size=state.size, color=state.color, fit=state.fit,
                              labels_from_folders=labels_from_folders, limit=limit)
        keep = [i for i, it in enumerate(corpus.items) if it.label is not None]
        return self.select_queries(state, [corpus.items[i] for i in keep], corpus.pixels[keep],
                                   query_field=query_field)

    def select_queries(self, state, items, inputs, *, query_field=QUERY_FIELDS[0]):
        """The images themselves; the raw queries are PNG-encoded on demand (decoding is timed too)."""
        inputs, items, _ = super().select_queries(state, items, inputs, query_field=query_field)
        return inputs, items, PngList(inputs)


class PngList:
    """Query images PNG-encoded on demand: what a user would send, so decoding is timed too."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> bytes:
        import io

        from PIL import Image

        arr = self.pixels[i]
        buf = io.BytesIO()
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
        return buf.getvalue()


DOCS = Docs()
IMAGES = Images()
#: Every modality by its manifest name.
MODALITIES: dict[str, Modality] = {m.name: m for m in (DOCS, IMAGES)}


def modality_of(manifest: dict, where: str = "the index") -> Modality:
    """The modality object of a manifest.

    Raises:
        IndexFormatError: The manifest names no known modality.
    """
    name = manifest.get("modality")
    if name not in MODALITIES:
        raise IndexFormatError(f"{where} has modality {name!r}, which this version does not know "
                               f"({', '.join(MODALITIES)}); rebuild the index")
    return MODALITIES[name]
