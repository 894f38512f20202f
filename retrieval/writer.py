"""The one way an index is written: :class:`IndexWriter` (fit, append, keep), and the operations on it.

Every write holds the index's writer lock and publishes its result
atomically; a failure leaves the previous index as it was. The operations
are compositions of a few steps:

* build = read the source in chunks, their inputs written as shards of the
  one new segment (:meth:`IndexWriter.spool`), ``fit`` the encoders on a
  sample, then ``append`` the shards one at a time, in a staging folder
  swapped in whole (:meth:`Store.writer`);
* add / sync / remove-items = plan on the live index, then ``keep`` (deletion
  marks) + ``append`` (one new segment) written beside the live segments, and
  a new manifest (:meth:`Store.segment_writer`); then the automatic
  compaction policy (:func:`compaction_plan`);
* compact = ``merge`` segments into one, dropping removed items;
* retrain = ``fit`` on (a sample of) the stored inputs, then re-encode them
  a shard at a time, copying them into one new segment, in a staging
  folder swapped in whole.
"""
from __future__ import annotations

import platform
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

from . import novelty
from .config import COMPACT_DELETED_FRACTION, COMPACT_TIER_SEGMENTS, LABEL_COUNTS_MAX, SYNC_MAX_REMOVED_FRACTION
from .errors import IndexFormatError, InputError, ItemNotFound
from .modality import Batch, Modality, modality_of
from .progress import Progress, report
from .storage import FORMAT_VERSION, IndexFolder, Store, read_manifest, seal_update, verify_index
from .storage import metadata as item_table
from .storage.layout import (INDEX_STEM, LEGACY_SEGMENT, SEGMENTS, SPOOL, SegmentFolder, deletions_name,
                             is_segment_file, read_raw_manifest, segment_name)
from .storage.segments import Items, Segments

#: Ids an update report (and its error messages) names as examples.
EXAMPLES = 5
#: Methods derived from the float phase of a learned binary autoencoder:
#: its float codes and their median thresholding (the baseline of learned bits).
DERIVED = (("float", "none"), ("median", "median"))


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose formats an index depends on."""
    out = {"python": platform.python_version()}
    for dist in ("retrieval", "tensorflow-cpu", "tensorflow", "keras", "faiss-cpu", "scikit-learn", "numpy"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class UpdateReport:
    """What an add / remove / sync did.

    Attributes:
        added: New items indexed.
        replaced: Items whose content changed, re-encoded.
        unchanged: Items of the source already indexed with the same content.
        removed: Items removed.
        items: Items in the index afterwards.
        skipped: Unreadable files of the source (each reported by a warning).
        seconds: Wall time.
        drift: The manifest's drift record afterwards.
        segments: Segments of the index afterwards.
        compacted: Segments the automatic compaction merged (0: none).
        replaced_examples: The ids of the first replaced items (at most :data:`EXAMPLES`).
    """

    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    removed: int = 0
    items: int = 0
    skipped: int = 0
    seconds: float = 0.0
    drift: dict = field(default_factory=dict)
    segments: int = 0
    compacted: int = 0
    replaced_examples: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


class IndexWriter:
    """Writes an index: fitted encoders and one new segment; marks removed items.

    A build or a retrain opens it on a staging folder (:meth:`Store.writer`),
    calls :meth:`fit` and :meth:`append` (or :meth:`reencode`), then
    :meth:`save`; the store seals and swaps the folder. An update opens it on
    the live folder (:meth:`Store.segment_writer`), calls :meth:`keep` and
    :meth:`append`, then :meth:`commit`: only the new segment and the new
    deletion marks are written, and the manifest is replaced atomically.
    :meth:`merge` (compaction) rewrites chosen segments as one.

    Args:
        root: The index folder (staging or live).
        manifest: Its manifest (current format).
        state: The modality's preprocessing state (the vectorizer, the image shape).
    """

    def __init__(self, root: Path, manifest: dict, state) -> None:
        self.folder = IndexFolder(Path(root))
        self.manifest = manifest
        self.modality: Modality = modality_of(manifest)
        self.state = state
        self._encoders: dict = {}
        self._indexes: dict = {}  # the new segment's, by method
        self._fitted: set[str] = set()
        self._removed: np.ndarray | None = None  # positions keep() drops
        self._new_items: list = []
        self._streamed: item_table.TableWriter | None = None  # a build's items, written as they come
        self._streamed_labels: Counter = Counter()
        self._inputs = None  # the new segment's model inputs, novelty scores, OOV fractions
        self._scores: np.ndarray | None = None
        self._oov: np.ndarray | None = None
        self._reference: np.ndarray | None = None
        self._carried: Segments | None = None  # a retrain's new segment holds these items
        self._segments: Segments | None = None
        self._templates: list[str] = []  # template files derived for an index written before them
        self._target: SegmentFolder | None = None  # the new segment's folder, once spool() made it
        self._models_saved = False  # an engine's build wrote them before encoding

    @classmethod
    def open(cls, root: Path) -> "IndexWriter":
        """A writer on an existing index folder."""
        folder = IndexFolder(Path(root))
        manifest = read_manifest(folder.root)
        modality = modality_of(manifest, str(folder.manifest))
        return cls(folder.root, manifest, modality.load_state(folder, manifest))

    # -- state, loaded on first use --------------------------------------------------
    @property
    def segments(self) -> Segments:
        """The segments of the index as opened (none for a build)."""
        if self._segments is None:
            self._segments = Segments(self.folder, self.manifest, self.modality)
        return self._segments

    def items(self) -> Items:
        """The item table of the index as opened (close it after use)."""
        return Items(self.segments)

    @property
    def count(self) -> int:
        """Items in the index after this write."""
        if self._carried is not None:  # a retrain: the items of the index, re-encoded
            return len(self._carried)
        before = 0 if self._fitted else len(self.segments)  # a build starts from nothing
        removed = 0 if self._removed is None else len(self._removed)
        streamed = 0 if self._streamed is None else self._streamed.count
        return before - removed + len(self._new_items) + streamed

    def _index(self, method: str):
        """The new segment's index of ``method`` (empty until :meth:`append`)."""
        if method not in self._indexes:
            self._indexes[method] = self._empty_index(method)
        return self._indexes[method]

    def _empty_index(self, method: str):
        from .ann import empty_index, load_index

        info = self.manifest["methods"][method]
        folder = self.folder.method(method)

        def source():  # an index written before templates: take the cells from its first segment
            if not self.segments.folders:
                raise IndexFormatError(f"index {self.manifest['name']!r} has no segment to take the {method} "
                                       "index's cells from; rebuild it with --force")
            return load_index(info["index"], self.segments.folders[0].method(method), info["metric"],
                              info.get("search"), info.get("factory"))

        index = empty_index(info["index"], folder, info["metric"], info.get("search"), info.get("factory"), source)
        if index.trained and not index.template_path(folder).exists():  # derived: kept from now on
            self._templates.append(self._rel(index.save_template(folder)))
        return index

    def _encoder(self, method: str):
        if method not in self._encoders:
            from .encoders import load_encoder

            self._encoders[method] = load_encoder(self.manifest["methods"][method]["encoder"],
                                                  self.folder.method(method))
        return self._encoders[method]

    def _rel(self, path: Path) -> str:
        return Path(path).relative_to(self.folder.root).as_posix()

    def stored_inputs(self, need: str) -> Segments:
        """The segments, whose :meth:`~Segments.iter_inputs` reads the stored inputs of every item a shard at a time.

        Raises:
            InputError: The index was built without them (``--no-keep-inputs``).
        """
        if not self.segments.has_inputs():
            raise InputError(f"index {self.manifest['name']!r} was built with --no-keep-inputs, so {need} "
                             "cannot re-encode its items; rebuild it from its source with --force")
        return self.segments

    def stored_oov(self) -> np.ndarray | None:
        """The OOV fractions of every item (``None`` when a segment has none: images, old indexes)."""
        segments = self.segments
        if not segments.folders or not all(segments.listed(seg.oov) for seg in segments.folders):
            return None
        return segments.per_item(lambda seg: np.load(seg.oov, allow_pickle=False))

    # -- the steps ----------------------------------------------------------------
    def spool(self, keep: bool) -> Path:
        """Where a build or a retrain writes the model inputs of its one segment as it reads them, shard by shard.

        Args:
            keep: The index keeps them: the new segment's own inputs (the
                segment's folder is made now, and :meth:`save` writes the
                rest of the segment around them). Else a spool, which
                :meth:`save` deletes (``--no-keep-inputs``).
        """
        self._target = self._fresh_segment(segment_name(1))
        if keep:
            return self._target.inputs(self.modality)
        path = self.folder.root / SPOOL / self.modality.inputs_file
        path.parent.mkdir(exist_ok=True)
        return path

    def stream_items(self) -> None:
        """Write the items a build appends straight into the new segment's table (after :meth:`spool`).

        A build of millions of documents then never holds their texts: each
        chunk's rows are written as it is appended.
        """
        if self._target is None:
            raise RuntimeError("stream_items() needs spool() first")
        self._streamed = item_table.TableWriter(self._target.metadata)

    def stream(self, items: list) -> None:
        """Write ``items`` (a build's, in order, as read) into the new segment's table (:meth:`stream_items`).

        :meth:`append` then takes their encoded batches with ``training=True``
        and any sequence of the same length in place of the items.

        Raises:
            InputError: An item shares an id with one written before.
        """
        self._streamed.extend(items, [self.modality.snippet(it) for it in items])
        self._streamed_labels.update(it.label for it in items if it.label is not None)

    def fit(self, encoders: dict, batch: Batch, *, index_kind: str, items: int | None = None,
            progress: Progress | None = None) -> np.ndarray:
        """Fit every encoder on ``batch`` and give each an empty nearest-neighbour index.

        A learned binary autoencoder ``ae`` also yields ``ae-float`` and
        ``ae-median`` from its float phase, at no extra training.

        Args:
            encoders: The unfitted encoders by method.
            batch: The training items (the collection, or a sample of it).
            index_kind: The nearest-neighbour index type (``auto`` picks by ``items``).
            items: Items the indexes will hold (default: the training items).
            progress: Progress callback.

        Returns:
            The novelty scores of the training items (the reference of every
            later score); ``None`` without ``score``.
        """
        from .ann import make_index

        X = batch.inputs
        items = X.shape[0] if items is None else items
        methods = {}
        def timed(make):
            started = time.perf_counter()
            return make(), round(time.perf_counter() - started, 3)

        for method, encoder in encoders.items():
            report(progress, f"{method}: fit", 0, 1)
            family = {method: timed(lambda: encoder.fit(X, progress=progress))}
            if getattr(encoder, "binarize", "none") == "learned":
                # The float phase's codes and their median thresholding, at no extra training.
                family.update({f"{method}-{suffix}": timed(lambda mode=mode: encoder.derive(mode, X))
                               for suffix, mode in DERIVED})
            vq = getattr(encoder, "quantized", False)
            if vq:  # the float phase's codes in FAISS' product quantiser: VQ's baseline at equal bytes
                family[f"pq-{method}"] = timed(lambda: _pq(encoder.derive("none", X), encoder.groups))
            for name, (enc, seconds) in family.items():
                codebook = {"codebook": enc.codebook_} if name == method and vq else {}
                index = make_index(index_kind, enc.metric, items, sparse=enc.sparse,
                                   pq_groups=enc.groups if codebook else enc.pq_groups)
                if index.trained:  # IVF cells, PQ centroids: from the training items, before the first chunk
                    index.train(enc.transform(X), items, **codebook)
                self._encoders[name], self._indexes[name] = enc, index
                self._fitted.add(name)
                methods[name] = _method_entry(enc, seconds)
                if name != method:
                    methods[name]["derived_from"] = method
            report(progress, f"{method}: fit", 1, 1)
        self.manifest["methods"] = methods
        reference = novelty.item_novelty(self._encoders["ae"], X, batch.oov)
        self._reference = np.sort(reference)
        self.manifest["novelty"] = novelty.summary(self._reference)
        # Drift measures growth against the collection the models were fitted for, sampled or not.
        self.manifest["drift"] = novelty.drift(items)
        self.manifest["training"] = {"items": int(X.shape[0]), "of": int(items)}
        return reference

    def save_models(self) -> dict[str, tuple[str, Path]]:
        """Write the fitted encoders into the staging folder now, for other processes to load.

        An engine's workers load them from these files (with the NumPy
        forward pass: no TensorFlow); :meth:`save` does not write them again.

        Returns:
            ``{method: (encoder registry name, folder)}`` of every fitted method.
        """
        out = {}
        for method in self._fitted:
            folder = self.folder.method(method)
            folder.mkdir(parents=True, exist_ok=True)
            self._encoders[method].save(folder)
            out[method] = (self.manifest["methods"][method]["encoder"], folder)
        self._models_saved = True
        return out

    def self_check(self, inputs, seed: int) -> dict:
        """Run the label-free self-check on the fitted, filled indexes (see :mod:`retrieval.selfcheck`).

        Stores it as the manifest's ``self_check`` entry; each failure is a warning.
        """
        from . import selfcheck

        self.manifest["self_check"] = selfcheck.run(self._encoders, self._indexes, inputs,
                                                    linear=self.modality.linear, exact=self.modality.exact,
                                                    seed=seed)
        return self.manifest["self_check"]

    def keep(self, mask: np.ndarray) -> None:
        """Remove the items where ``mask`` (over the positions of the index as opened) is false.

        Nothing is rewritten: :meth:`commit` writes deletion marks.
        """
        mask = np.asarray(mask, bool)
        if self._removed is not None or self._new_items:
            raise RuntimeError("keep() comes before append() and only once per writer")
        if len(mask) != len(self.segments):
            raise IndexFormatError(f"index {self.manifest['name']!r}: a mask of {len(mask)} items for "
                                   f"{len(self.segments)}; rebuild it with --force")
        self._removed = np.flatnonzero(~mask)
        if not len(self._removed):
            return
        drift = self.manifest["drift"]
        self.manifest["drift"] = novelty.drift(
            drift["trained_items"], drift["added_since_training"], drift["removed_since_training"] + len(self._removed),
            drift.get("added_novelty_percentile_sum", 0.0), drift.get("added_novelty_sum", 0.0))

    def append(self, batch: Batch, *, scores: np.ndarray | None = None, codes: dict | None = None,
               training: bool = False, progress: Progress | None = None) -> None:
        """Encode ``batch`` with every method and append it to the new segment.

        Args:
            batch: The items and their model inputs.
            scores: Their novelty scores when already computed (a build has them from :meth:`fit`).
            training: The batch is part of the collection the models were fitted for (a build, which
                appends its chunks in turn): it does not count as drift, and its inputs are not held
                here (the build wrote them to :meth:`spool` as it read them).
            codes: Codes already computed, by method (an engine's); the other methods encode here.
            progress: Progress callback.
        """
        if not len(batch.items):
            return
        if self._reference is None and not training:
            self._reference = novelty.load_reference(self.folder)
        methods = list(self.manifest["methods"])
        for step, method in enumerate(methods):
            report(progress, "encode", step, len(methods), method=method)
            given = (codes or {}).get(method)
            self._index(method).add(self._encoder(method).transform(batch.inputs) if given is None else given)
        report(progress, "encode", len(methods), len(methods))
        if scores is None:
            scores = novelty.item_novelty(self._encoder("ae"), batch.inputs, batch.oov)
        scores = np.asarray(scores, np.float32)
        first = self._scores is None
        self._scores = scores if first else np.concatenate([self._scores, scores])
        if batch.oov is not None:
            self._oov = batch.oov if first else np.concatenate([self._oov, batch.oov])
        if self._streamed is None:
            self._new_items.extend(batch.items)
        elif not training:
            raise RuntimeError("a build's writer streams its items (stream()); append them with training=True")
        if not training:  # a build stores the inputs of its chunks itself, as it reads them (spool())
            self._inputs = batch.inputs if first else self.modality.concat(self._inputs, batch.inputs)
            drift = self.manifest["drift"]
            self.manifest["drift"] = novelty.drift(
                drift["trained_items"], drift["added_since_training"] + len(batch.items),
                drift["removed_since_training"],
                drift.get("added_novelty_percentile_sum", 0.0)
                + float(novelty.percentile(self._reference, scores).sum()),
                drift.get("added_novelty_sum", 0.0) + float(np.sum(scores)))

    def reencode(self, shards, scores: np.ndarray | None, oov: np.ndarray | None = None,
                 progress: Progress | None = None, *, keep: Path | None = None) -> None:
        """Fill the freshly fitted indexes with every stored item again (retrain), one shard at a time.

        Args:
            shards: The stored inputs, shard after shard in position order.
            scores: Their novelty scores as :meth:`fit` returned them (fitted on every item), or
                ``None`` to score each shard here (fitted on a sample).
            oov: Documents: every item's out-of-vocabulary fraction.
            progress: Progress callback.
            keep: Also store each shard there (the new segment's inputs, :meth:`spool`).
        """
        parts, start = [], 0
        for inputs in shards:
            stop = start + inputs.shape[0]
            report(progress, "encode", start, self.count, items=stop)
            if keep is not None:
                self.modality.append_inputs(keep, inputs)
            for method in self.manifest["methods"]:
                self._indexes[method].add(self._encoders[method].transform(inputs))
            if scores is None:
                parts.append(novelty.item_novelty(self._encoders["ae"], inputs,
                                                  None if oov is None else oov[start:stop]))
            start = stop
        report(progress, "encode", self.count, self.count)
        self._scores = np.asarray(np.concatenate(parts) if scores is None else scores, np.float32)

    def carry(self, segments: Segments, oov: np.ndarray | None) -> None:
        """The new segment holds the items of ``segments`` (a retrain: their rows and OOV fractions).

        Their inputs are copied into the new segment by :meth:`reencode` (``keep``).
        """
        self._carried = segments
        self._oov = oov

    def settle(self) -> None:
        """Every row is in: each fitted index relearns what its training sample gave it (:meth:`VectorIndex.settled`)."""
        for method in self._fitted:
            self._indexes[method] = self._indexes[method].settled()

    # -- writing -------------------------------------------------------------------------
    def save(self, *, keep_inputs: bool = True) -> dict:
        """Write a fitted index (a build, a retrain): models, its one segment, the manifest.

        The folder is a staging folder; the store seals and swaps it.

        Returns:
            The manifest.
        """
        for method in self._fitted:
            out = self.folder.method(method)
            if not self._models_saved:
                self._encoders[method].save(out)
            self._indexes[method] = self._indexes[method].settled()  # no-op after settle()
            self._indexes[method].save_template(out)
        self.manifest["novelty"] = novelty.save_reference(self.folder, self._reference)
        self.manifest["generation"] = 1
        self.manifest["segments"] = []
        shutil.rmtree(self.folder.root / SPOOL, ignore_errors=True)
        if self._streamed is not None and not self.count:
            self._streamed.close()
        if self.count:
            self.manifest["segments"].append(self._write_segment(segment_name(1), keep_inputs)[0])
        elif self._target is not None:
            shutil.rmtree(self._target.root)
        self._update_counts()
        self.folder.write_manifest(self.manifest)
        return self.manifest

    def commit(self) -> dict:
        """Write the new segment and the deletion marks into the live folder, then the manifest (atomically).

        Returns:
            The manifest written.
        """
        generation = self._next_generation()
        entries = [dict(entry) for entry in self.manifest["segments"]]
        added, dropped = [], []
        if self._removed is not None and len(self._removed):
            seg, local = self.segments.locate(self._removed)
            with closing(self.items()) as table:
                for s in np.unique(seg):
                    entry, folder = entries[s], self.segments.folders[s]
                    removed = local[seg == s]
                    marks = np.union1d(self.segments.deleted[s], removed).astype(np.int64)
                    path = folder.deletions(deletions_name(generation))
                    np.save(path, marks)
                    if entry.get("deletions"):
                        dropped.append(self._rel(folder.deletions(entry["deletions"])))
                    added.append(self._rel(path))
                    entry["labels"] = _minus(entry.get("labels"), table.table(s).labels_at(removed))
                    entry.update(deleted=len(marks), deletions=path.name)
        if self._new_items:
            entry, files = self._write_segment(segment_name(generation), self.segments.has_inputs())
            entries.append(entry)
            added += files
        self.manifest["segments"] = entries
        self._update_counts()
        return seal_update(self.folder.root, self.manifest, added + self._templates, dropped)

    def merge(self, chosen: list[int]) -> dict:
        """Rewrite segments ``chosen`` (indexes into the manifest's list) as one, without their removed items.

        Nothing is re-encoded: the codes are copied from the segments'
        indexes. The merged segment takes the place of the first chosen one;
        the chosen segments' files stay on disk until the next write (readers
        of the previous manifest may still use them).

        Returns:
            The manifest written.
        """
        from .ann import load_index, merge

        segments, chosen = self.segments, sorted(chosen)
        generation = self._next_generation()
        name = segment_name(generation)
        added, entry = [], None
        if sum(segments.live(s) for s in chosen):  # else the segments are dropped, nothing replaces them
            target = self._fresh_segment(name)
            for method, info in self.manifest["methods"].items():
                parts = [(load_index(info["index"], segments.folders[s].method(method), info["metric"],
                                     info.get("search"), info.get("factory")), segments.live_rows(s))
                         for s in chosen]
                out = target.method(method)
                out.mkdir(parents=True)
                merge(self._empty_index(method), parts).save(out)
            item_table.copy_live(target.metadata, [(segments.folders[s].metadata, segments.deleted[s])
                                                   for s in chosen])
            picked = Segments(self.folder, self.manifest | {"segments": [segments.entries[s] for s in chosen]},
                              self.modality)
            if self.manifest.get("novelty") is not None:
                np.save(target.novelty, picked.per_item(lambda seg: np.load(seg.novelty, allow_pickle=False)))
            if picked.folders and all(picked.listed(seg.oov) for seg in picked.folders):
                np.save(target.oov, picked.per_item(lambda seg: np.load(seg.oov, allow_pickle=False)))
            if picked.has_inputs():  # a chunk at a time: the segments' inputs are never held whole
                for inputs in self.modality.rechunk(picked.iter_inputs()):
                    self.modality.append_inputs(target.inputs(self.modality), inputs)
            with closing(self.items()) as table:
                labels = _sum_labels(self._label_counts(s, table) for s in chosen)
            entry = _segment_entry(name, len(picked), labels)
            added = [self._rel(p) for p in sorted(target.root.rglob("*")) if p.is_file()]
        files = self.manifest.get("files") or {}
        dropped = [rel for s in chosen for rel in files if _in_segment(rel, segments.entries[s]["name"])]
        entries = [dict(e) for s, e in enumerate(segments.entries) if s not in chosen]
        if entry is not None:
            entries.insert(chosen[0], entry)
        self.manifest["segments"] = entries
        self._update_counts()
        return seal_update(self.folder.root, self.manifest, added + self._templates, dropped)

    def _next_generation(self) -> int:
        self.manifest["generation"] = int(self.manifest.get("generation", 0)) + 1
        return self.manifest["generation"]

    def _fresh_segment(self, name: str) -> SegmentFolder:
        """An empty folder for segment ``name`` (a killed writer of the same generation may have left one)."""
        target = self.folder.segment(name)
        shutil.rmtree(target.root, ignore_errors=True)
        target.root.mkdir(parents=True)
        return target

    def _write_segment(self, name: str, keep_inputs: bool) -> tuple[dict, list[str]]:
        """Write the new segment's files; returns its manifest entry and the files written.

        A build or a retrain wrote the inputs into the segment's folder already
        (:meth:`spool`); an update holds its few new items' inputs, written here as one shard.
        """
        if self._target is not None and self._target.name != name:
            raise RuntimeError(f"the inputs were spooled into segment {self._target.name}, not {name}")
        target = self._target or self._fresh_segment(name)
        for method in self.manifest["methods"]:
            out = target.method(method)
            out.mkdir(parents=True)
            self._index(method).save(out)
        if self._carried is not None:
            item_table.copy_live(target.metadata, [(seg.metadata, marks) for seg, marks
                                                   in zip(self._carried.folders, self._carried.deleted)])
            with closing(Items(self._carried)) as table:
                labels = _sum_labels(self._label_counts(s, table, self._carried)
                                     for s in range(len(self._carried.folders)))
        elif self._streamed is not None:
            self._streamed.close()
            if self._streamed.count != len(self._scores):
                raise RuntimeError(f"{self._streamed.count} items streamed into the table, {len(self._scores)} encoded")
            labels = dict(self._streamed_labels)
        else:
            item_table.write(target.metadata, self._new_items, [self.modality.snippet(it) for it in self._new_items])
            labels = dict(Counter(it.label for it in self._new_items if it.label is not None))
        np.save(target.novelty, self._scores)
        if self._oov is not None:
            np.save(target.oov, self._oov)
        if keep_inputs and self._inputs is not None:
            self.modality.save_inputs(target.inputs(self.modality), self._inputs)
        files = [self._rel(p) for p in sorted(target.root.rglob("*")) if p.is_file()]
        if self._carried is not None:
            items = len(self._carried)
        else:
            items = len(self._new_items) if self._streamed is None else self._streamed.count
        return _segment_entry(name, items, labels), files

    def _label_counts(self, s: int, table: Items, segments: Segments | None = None) -> dict[str, int]:
        """The label counts of segment ``s`` without its removed items (counted from its table if unknown)."""
        segments = segments or self.segments
        known = segments.entries[s].get("labels")
        return dict(known) if known is not None else table.table(s).label_counts(segments.deleted[s])

    def _update_counts(self) -> None:
        """``counts`` and each method's index size from the segments now listed."""
        entries = self.manifest["segments"]
        items = sum(int(e["items"]) - int(e.get("deleted", 0)) for e in entries)
        unknown = [s for s, e in enumerate(entries) if e.get("labels") is None]
        if unknown:  # a format-2 segment, or too many labels to keep: count them from the tables
            with closing(Items(Segments(self.folder, self.manifest, self.modality))) as table:
                for s in unknown:
                    counts = table.table(s).label_counts(table.segments.deleted[s])
                    entries[s]["labels"] = counts if len(counts) <= LABEL_COUNTS_MAX else None
                    entries[s]["_counted"] = counts
        labels = _sum_labels(e.pop("_counted", None) or e["labels"] or {} for e in entries)
        self.manifest["counts"].update(items=items, labelled=sum(labels.values()), labels=len(labels))
        for method, info in self.manifest["methods"].items():
            size = sum(p.stat().st_size for e in entries
                       for p in self.folder.segment(e["name"]).method(method).glob(f"{INDEX_STEM}.*"))
            info["index_bytes"] = size
            info["bytes_per_item"] = size / max(1, items)
            if method in self._indexes:  # the new segment's backend: as the method's others
                index = self._indexes[method]
                info.update(index=index.kind, search=index.search_params(), factory=index.factory)


def _segment_entry(name: str, items: int, labels: dict[str, int]) -> dict:
    return {"name": name, "items": int(items), "deleted": 0, "deletions": None,
            "labels": labels if len(labels) <= LABEL_COUNTS_MAX else None}


def _sum_labels(counts) -> dict[str, int]:
    total: Counter = Counter()
    for part in counts:
        total.update(part)
    return {label: n for label, n in total.items() if n}


def _minus(counts: dict | None, labels: list) -> dict | None:
    """Label counts without the given labels (``None``: unknown stays unknown)."""
    if counts is None:
        return None
    out = Counter(counts)
    out.subtract(label for label in labels if label is not None)
    return {label: n for label, n in out.items() if n > 0}


def _in_segment(rel: str, name: str) -> bool:
    """True when ``rel`` is a file of segment ``name`` (a format-2 segment: the top-level per-item files)."""
    if name == LEGACY_SEGMENT:
        return is_segment_file(rel) and not rel.startswith(f"{SEGMENTS}/")
    return rel.startswith(f"{SEGMENTS}/{name}/")


def _pq(encoder, groups: int):
    """``encoder`` marked for a product-quantisation index of ``groups`` bytes per item."""
    encoder.pq_groups = groups
    return encoder


def _method_entry(encoder, fit_seconds: float) -> dict:
    entry = {"encoder": encoder.name, "params": encoder.get_params(), "dim": int(encoder.dim),
             "metric": encoder.metric, "binary": bool(encoder.binary), "fit_seconds": fit_seconds}
    history = getattr(encoder, "history_", None)
    if history and history.get("loss"):
        entry["training"] = {
            "epochs": len(history["loss"]), "loss": history["loss"][-1],
            "val_loss": history.get("val_loss", [None])[-1],
            "pretrain_layers": len(history.get("pretrain", [])),
            "binary_epochs": len(history.get("binary", {}).get("loss", []))}
        if "vq" in history:
            entry["training"].update(vq_epochs=len(history["vq"].get("loss", [])),
                                     vq_restarted=history["vq"].get("restarted", []))
    return entry


# -- the operations ----------------------------------------------------------------------
def build_index(modality: Modality, source, name: str, config=None, *, store: Store | None = None,
                force: bool = False, progress: Progress | None = None, chunk_size: int | None = None,
                engine=None) -> dict:
    """Build an index of ``modality`` from ``source``: read -> preprocess -> fit -> FAISS -> store.

    Memory stays bounded by the chunk size and the training sample, not by
    the collection: the source is read in chunks whose model inputs go to
    disk as they come (the index's stored inputs, or a spool deleted at the
    end with ``keep_inputs`` off); the encoders are fitted on a seeded
    sample of ``config.train_sample`` items (:func:`training_rows`); then
    the stored chunks are encoded and appended one at a time.

    Args:
        modality: :data:`retrieval.modality.DOCS` or :data:`~retrieval.modality.IMAGES`.
        source: A path (folder, archive, JSONL, IDX file, crawl folder) or a corpus already read.
        name: Index name.
        config: Build options (``DocsConfig`` / ``ImagesConfig``; default: the defaults).
        store: Where to write (default: the default home).
        force: Replace an existing index of that name.
        progress: Progress callback.
        chunk_size: Items read and encoded at a time (default: the modality's).
        engine: Where the items are encoded once the models are fitted:
            ``None`` in this process, or an engine such as
            :class:`retrieval.engines.ray.RayEngine` (started), which loads
            the saved models in its workers and returns every method's codes
            and the novelty scores of each chunk in item order. The index is the
            same.

    Returns:
        The manifest written.
    """
    store = store or Store()
    config = config or modality.config_class()
    started = time.perf_counter()
    store.check_new(name, force)  # fail before minutes of training, not after
    report(progress, "read", 0, 1)
    state, chunks, extra = modality.prepare_chunks(source, config, chunk_size=chunk_size, progress=progress)
    in_memory = not isinstance(source, (str, Path))
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "modality": modality.name,
        "created_at": _now(),
        "source": "(in memory)" if in_memory else str(source),
        "source_root": None if in_memory else _root_of(source),
        "counts": {"items": 0, "skipped": 0, "labelled": 0, "labels": 0},
        "config": config.to_dict(),
        "methods": {},
        "default_method": "ae",
        "versions": library_versions(),
        **extra,
    }
    with store.writer(name, force) as root:
        writer = IndexWriter(root, manifest, state)
        # The inputs go where the index keeps them (its segment), or to a spool the encoding pass reads back.
        spool = writer.spool(config.keep_inputs)
        shards = lambda: modality.iter_inputs(spool)  # noqa: E731 - read again by each pass
        # The items go to the segment's table as they are read: a build never holds their texts.
        writer.stream_items()
        n, oov = 0, []
        for batch in chunks:
            modality.append_inputs(spool, batch.inputs)
            writer.stream(batch.items)
            n += len(batch.items)
            oov.append(batch.oov)
            manifest["counts"]["skipped"] += batch.skipped
            report(progress, "read", 0, 1, items=n)
        report(progress, "read", 1, 1, items=n)
        oov = None if any(part is None for part in oov) else np.concatenate(oov)
        rows = training_rows(n, config)
        train = _stored_batch(modality, shards, rows, oov)
        # The training items' scores are the novelty reference, so they are computed here, on the sample.
        scores = writer.fit(modality.encoders(config, train.inputs.shape), train, index_kind=config.index_kind,
                            items=n, progress=progress)
        del train

        def chunked():  # the stored chunks as (first position, batch), in item order
            start = 0
            for inputs in shards():
                stop = start + inputs.shape[0]
                yield start, Batch(range(start, stop), inputs, None if oov is None else oov[start:stop])
                start = stop

        if engine is None:
            for start, batch in chunked():
                given = scores[start:start + len(batch.items)] if rows is None else None
                writer.append(batch, scores=given, training=True, progress=progress)
        else:
            # The exact baseline indexes the inputs themselves: nothing to farm out.
            models = {m: v for m, v in writer.save_models().items() if m != modality.exact}
            # The engine ships every chunk to its object store first; the chunks are read again to append them.
            answers = engine.encode_all(models, (batch for _, batch in chunked()), progress=progress)
            encoded = None
            for (_, batch), encoded in zip(chunked(), answers):
                writer.append(batch, scores=encoded.scores, codes=encoded.codes, training=True, progress=progress)
            if encoded is not None:
                manifest["engine"] = {"name": engine.name, "encode_seconds": encoded.seconds, **encoded.info}
        writer.settle()
        writer.self_check(_Sample.of(modality, shards, n, config.seed), config.seed)
        modality.save_state(state, writer.folder)
        manifest["build_seconds"] = round(time.perf_counter() - started, 2)
        writer.save(keep_inputs=config.keep_inputs)
    return manifest


class _Sample:
    """The self-check's view of a collection too large to hold: its size, and the inputs of its sample.

    :func:`retrieval.selfcheck.run` reads ``inputs.shape[0]`` and
    ``inputs[rows]`` for the rows of :func:`~retrieval.selfcheck.sample_rows`
    only; those rows are read from the stored shards beforehand.
    """

    def __init__(self, n: int, rows: np.ndarray, inputs) -> None:
        self.shape = (n, *inputs.shape[1:])
        self._rows, self._inputs = rows, inputs

    @classmethod
    def of(cls, modality: Modality, shards: Callable[[], Iterator], n: int, seed: int) -> "_Sample":
        """The self-check sample of the ``n`` items whose stored inputs ``shards()`` reads, shard after shard."""
        from .selfcheck import sample_rows

        rows = sample_rows(n, seed)
        return cls(n, rows, modality.take(shards(), rows))

    def __getitem__(self, rows):
        if not np.array_equal(rows, self._rows):
            raise IndexError("only the self-check sample's inputs are held")
        return self._inputs


def _stored_batch(modality: Modality, shards: Callable[[], Iterator], rows: np.ndarray | None,
                  oov: np.ndarray | None) -> Batch:
    """The stored inputs (and OOV fractions) of ``rows`` (``None``: every item) as a batch without items.

    Args:
        modality: The index's modality.
        shards: ``() -> the stored inputs, shard after shard`` (read once, one shard held at a time).
        rows: Sorted positions.
        oov: Every item's OOV fraction (documents).
    """
    if rows is None:
        return Batch([], modality.concat_all(list(shards())), oov)
    return Batch([], modality.take(shards(), rows), None if oov is None else oov[rows])


def training_rows(n: int, config) -> np.ndarray | None:
    """Sorted positions of the seeded uniform sample the encoders are fitted on (``None``: every item).

    Args:
        n: Items in the collection.
        config: Build options: ``train_sample`` (``0``/``None``: all) and ``seed``.
    """
    size = config.train_sample
    if not size or size >= n:
        return None
    from .selfcheck import sample_rows

    return sample_rows(n, config.seed, size)


def _config_of(manifest: dict):
    return modality_of(manifest).config_class.from_dict(manifest.get("config", {}))


def _update(store: Store, name: str, plan, progress: Progress | None, changes: dict | None = None) -> UpdateReport:
    """Run ``plan(writer, items) -> (keep mask, new batch, report)`` on the live index, then write it.

    The write adds one segment (the new batch) and deletion marks (the items
    not kept) beside the live segments, and commits with a new manifest; no
    existing file is copied or rewritten. A plan that changes nothing writes
    nothing (a re-run of ``add`` after a crawl that found nothing new).
    ``changes`` are manifest entries to set (``sync --new-source``).
    """
    started = time.perf_counter()
    with store.segment_writer(name) as (folder, _):
        writer = IndexWriter.open(folder)
        if writer.manifest.get("novelty") is None:
            raise IndexFormatError(f"index {name!r} was built by an older retrieval without novelty scores; "
                                   f"rebuild it with --force to add or remove items")
        with closing(writer.items()) as table:
            keep, new, result = plan(writer, table)
        manifest = writer.manifest
        retarget = any(manifest.get(key) != value for key, value in (changes or {}).items())
        if not keep.all() or new.items or retarget:
            writer.keep(keep)
            writer.append(new, progress=progress)
            writer.manifest.update(changes or {})
            writer.manifest["updated_at"] = _now()
            manifest = writer.commit()
            # A merge may fill the next tier: merge until the policy is content.
            while chosen := compaction_plan(manifest["segments"]):
                manifest = IndexWriter.open(folder).merge(chosen)
                result.compacted += len(chosen)
        result.items = manifest["counts"]["items"]
        result.drift = manifest.get("drift") or {}
        result.segments = len(manifest["segments"])
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def compaction_plan(segments: list[dict]) -> list[int]:
    """The segments the automatic policy merges after a write (indexes into ``segments``; empty: none).

    Every segment with more than :data:`~retrieval.config.COMPACT_DELETED_FRACTION`
    of its items removed; and the segments of the smallest tier (same number
    of digits in their item counts) that holds
    :data:`~retrieval.config.COMPACT_TIER_SEGMENTS` of them.
    """
    chosen = {s for s, e in enumerate(segments) if int(e.get("deleted", 0)) > COMPACT_DELETED_FRACTION * int(e["items"])}
    tiers: dict[int, list[int]] = {}
    for s, e in enumerate(segments):
        if s not in chosen:
            tiers.setdefault(len(str(int(e["items"]) - int(e.get("deleted", 0)))), []).append(s)
    full = [tier for tier, members in sorted(tiers.items()) if len(members) >= COMPACT_TIER_SEGMENTS]
    if full:
        chosen.update(tiers[full[0]])
    return sorted(chosen)


@dataclass
class CompactReport:
    """What a compaction did.

    Attributes:
        segments_before: Segments before.
        segments: Segments after.
        dropped: Removed items whose data was deleted.
        items: Items in the index.
        seconds: Wall time.
    """

    segments_before: int = 0
    segments: int = 0
    dropped: int = 0
    items: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def compact(store: Store, name: str) -> CompactReport:
    """Merge every segment of an index into one, without the removed items; no retraining.

    Queries search every segment (see :class:`retrieval.ann.SegmentedIndex`);
    one segment is the fastest to search. The models and codes are kept:
    the hits do not change (exact indexes: the same ranking).

    Returns:
        The report.
    """
    started = time.perf_counter()
    with store.segment_writer(name, purpose="compact") as (folder, _):
        writer = IndexWriter.open(folder)
        entries = writer.manifest["segments"]
        report = CompactReport(segments_before=len(entries), dropped=sum(int(e.get("deleted", 0)) for e in entries))
        manifest = writer.manifest
        if len(entries) > 1 or report.dropped:
            writer.manifest["compacted_at"] = _now()
            manifest = writer.merge(list(range(len(entries))))
        report.segments, report.items = len(manifest["segments"]), manifest["counts"]["items"]
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _merge(rows: Items, new: Batch, remove_under: str | None = None) -> tuple[np.ndarray, Batch, UpdateReport]:
    """Decide per item: add, replace (content changed), keep unchanged, or remove.

    Args:
        rows: The indexed items.
        new: The items read.
        remove_under: Remove the indexed items whose id starts with this and
            that ``new`` lacks (``""``: any; ``None``: remove none).
    """
    found = rows.find([item.id for item in new.items])
    keep = np.ones(len(rows), bool)
    result = UpdateReport(skipped=new.skipped)
    fresh = []
    for j, item in enumerate(new.items):
        row = found.get(item.id)
        if row is None:
            result.added += 1
        elif row["extra"].get("sha256") == item.extra.get("sha256"):
            result.unchanged += 1
            continue
        else:
            keep[row["position"]] = False
            result.replaced += 1
            if len(result.replaced_examples) < EXAMPLES:
                result.replaced_examples.append(item.id)
        fresh.append(j)
    if remove_under is not None:
        present = {item.id for item in new.items}
        for i, item_id in enumerate(rows.ids()):
            if item_id.startswith(remove_under) and item_id not in present:
                keep[i] = False
                result.removed += 1
    return keep, new.take(fresh), result


def _read_new(writer: IndexWriter, source, labels_from_folders: bool | None, prefix: str = "") -> Batch:
    """New items read with the index's own preprocessing, their ids continuing the build's id scheme.

    Args:
        writer: The live index.
        source: A path, or items in memory.
        labels_from_folders: Label = sub-folder of ``source`` (``None``: as built).
        prefix: The id prefix of ``source`` (see :func:`_id_prefix`).
    """
    manifest, modality = writer.manifest, writer.modality
    config = _config_of(manifest)
    labels = config.labels_from_folders if labels_from_folders is None else labels_from_folders
    # A sub-folder of the build's source gets the labels a rebuild would give
    # its items (the first folder of their ids), as it gets their ids; told
    # --labels-from-folders, its own sub-folders are the labels.
    inherit = bool(prefix) and labels_from_folders is None and config.labels_from_folders
    if inherit:
        labels = False
    try:
        if isinstance(source, (str, Path)):
            batch = modality.read(writer.state, source, config, labels_from_folders=labels)
        else:
            batch = modality.from_memory(writer.state, source, config)
    except InputError as exc:
        if not isinstance(source, (str, Path)):
            raise  # the items given in memory: the reader's message names the bad one
        raise InputError(f"index {manifest['name']!r} holds {modality.noun}; {source} gives none ({exc})") from None
    if prefix:
        for item in batch.items:
            item.id = prefix + item.id
            item.path = prefix + item.path if item.path else item.path
            if inherit and item.label is None:
                item.label = prefix.split("/", 1)[0]
    return batch


def _root_of(source) -> str:
    """The absolute path a source is recorded by (the manifest's ``source_root``)."""
    return str(Path(source).expanduser().resolve())


def _id_prefix(manifest: dict, source) -> str | None:
    """Ids of items under the build's source folder continue its id scheme.

    An index built from ``~/corpus`` names a file ``new/a.txt``; adding
    ``~/corpus/new`` must give it the same id, not ``a.txt``.

    Returns:
        ``""`` for the source folder itself (and for items in memory, whose
        ids are given), ``"new/"`` for a folder inside it, ``None`` for a
        folder elsewhere (or when the index was built from memory).
    """
    if not isinstance(source, (str, Path)):
        return ""
    root = manifest.get("source_root")
    if not root:
        return None
    try:
        relative = Path(_root_of(source)).relative_to(root)
    except ValueError:
        return None
    return "" if str(relative) == "." else relative.as_posix() + "/"


def _elsewhere(manifest: dict, source) -> str:
    """Why ``source`` (outside the build's source folder) is not the index's collection."""
    root = manifest.get("source_root")
    if root:
        return f"{source} is not the folder index {manifest['name']!r} was built from ({root}) nor inside it"
    return f"index {manifest['name']!r} was built from items in memory, not from {source}"


def _examples(ids: list[str], total: int) -> str:
    return ", ".join(ids[:EXAMPLES]) + (f" and {total - EXAMPLES} more" if total > EXAMPLES else "")


def add_items(store: Store, name: str, source, *, labels_from_folders: bool | None = None,
              replace: bool = False, progress: Progress | None = None) -> UpdateReport:
    """Encode the items of ``source`` with the stored models and add them; no retraining.

    Items whose id is already indexed with the same content are left alone;
    with different content they are replaced when ``source`` is the build's
    source folder, a folder inside it or items in memory (an update). From a
    folder elsewhere they are other files that happen to share a relative
    path: the add refuses unless ``replace``.

    Args:
        store: The store holding the index.
        name: Index name.
        source: Folder, archive or JSONL (documents) / image folder, crawl folder or IDX file (images),
            or items in memory (see :class:`retrieval.api.Index`).
        labels_from_folders: Label = sub-folder (default: as the index was built).
        replace: Let items of a folder outside the build's source replace indexed items of the same id.
        progress: Progress callback.

    Raises:
        InputError: ``source`` gives no item, or (without ``replace``) items
            of a folder elsewhere would replace indexed ones.
    """
    def plan(writer, rows):
        prefix = _id_prefix(writer.manifest, source)
        keep, new, result = _merge(rows, _read_new(writer, source, labels_from_folders, prefix or ""))
        if prefix is None and result.replaced and not replace:
            root = writer.manifest.get("source_root")
            fix = (f"put them in a sub-folder of {root} and add that (their ids then start with its name, and "
                   "'sync' keeps them)" if root else "rename them")
            raise InputError(f"{result.replaced} items of {source} have the ids of indexed items with other content "
                             f"({_examples(result.replaced_examples, result.replaced)}); "
                             f"{_elsewhere(writer.manifest, source)}, so they are other files, not new versions: "
                             f"nothing was added. To keep both, {fix}; to replace the indexed items with them, "
                             "pass --replace")
        return keep, new, result

    return _update(store, name, plan, progress)


def remove_items(store: Store, name: str, ids=(), path_prefix: str | None = None, *, allow_empty: bool = False,
                 progress: Progress | None = None) -> UpdateReport:
    """Remove items by id, or every item whose path (or id) starts with ``path_prefix``.

    Raises:
        InputError: An id is not in the index, nothing matches the prefix,
            neither was given, or every item would go without ``allow_empty``.
    """
    ids = list(ids)
    if not ids and not path_prefix:
        raise InputError("give the items to remove: --id ID (repeatable) or --path-prefix PREFIX")

    def plan(writer, rows):
        keep = np.ones(len(rows), bool)
        found = rows.find(ids)
        for item_id in ids:
            if item_id not in found:
                raise ItemNotFound(f"no item with id {item_id!r} in index {name!r}; nothing was removed "
                                 "(ids are shown by 'retrieval query ... --json')")
            keep[found[item_id]["position"]] = False
        if path_prefix:
            matched = rows.prefixed(_prefixes(writer.manifest, path_prefix))
            if not len(matched):
                raise InputError(f"no item of index {name!r} has a path starting with {path_prefix!r}; "
                                 "nothing was removed")
            keep[matched] = False
        if rows and not keep.any() and not allow_empty:
            raise InputError(f"this would remove all {len(rows)} items of {name!r} and leave it empty; nothing was "
                             f"removed: pass --allow-empty to do that, or delete the index ('retrieval remove {name}')")
        return keep, writer.modality.empty(writer.state, writer.manifest), UpdateReport(removed=int((~keep).sum()))

    return _update(store, name, plan, progress)


def _prefixes(manifest: dict, prefix: str) -> list[str]:
    """The prefix as given, and relative to the build's source folder when it lies inside it."""
    out = [prefix]
    root = manifest.get("source_root")
    if root:
        path = Path(prefix).expanduser()
        try:
            relative = path.resolve().relative_to(root).as_posix()
            out.append("" if relative == "." else relative + ("/" if prefix.endswith("/") else ""))
        except ValueError:
            pass
    return out


def sync_items(store: Store, name: str, source, *, allow_empty: bool = False, allow_removals: bool = False,
               new_source: bool = False, labels_from_folders: bool | None = None,
               progress: Progress | None = None) -> UpdateReport:
    """Make the index match ``source``: add new items, replace changed ones, drop deleted ones.

    ``source`` is the folder the index was built from, or a folder inside it:
    then only the items under that folder are synced, the others are kept.

    Args:
        store: The store holding the index.
        name: Index name.
        source: The build's source folder (archive, JSONL file) or a folder inside it.
        allow_empty: Let a missing or empty ``source`` remove every item it covers.
        allow_removals: Let the sync remove more than
            :data:`~retrieval.config.SYNC_MAX_REMOVED_FRACTION` of the index.
        new_source: ``source`` is where the collection now lives (it moved):
            mirror it whole and record it as the index's source.
        labels_from_folders: Label = sub-folder (default: as the index was built).
        progress: Progress callback.

    Raises:
        InputError: ``source`` lies outside the build's source (without
            ``new_source``); it is missing or holds no item (without
            ``allow_empty``); or the sync would remove too many items
            (without ``allow_removals``).
    """
    changes = {"source": str(source), "source_root": _root_of(source)} if new_source else None

    def plan(writer, rows):
        prefix = "" if new_source else _id_prefix(writer.manifest, source)
        if prefix is None:
            raise InputError(f"{_elsewhere(writer.manifest, source)}: a sync mirrors that folder, so it would remove "
                             f"every item {source} lacks. To add its items, use 'retrieval add {name} {source}'; if "
                             "the collection moved there, pass --new-source (it becomes the index's source)")
        covered = sum(item_id.startswith(prefix) for item_id in rows.ids())
        under = f" under {prefix}" if prefix else ""
        try:
            new = _read_new(writer, source, labels_from_folders, prefix)
        except InputError as exc:
            if not covered:  # nothing to mirror and nothing to remove: a wrong path, most likely
                raise InputError(f"{exc}; index {name!r} has no items{under} either: nothing to sync") from None
            if not allow_empty:
                raise InputError(f"{exc}; refusing to remove all {covered} items of {name!r}{under}: pass "
                                 "--allow-empty if they were deleted on purpose") from None
            new = writer.modality.empty(writer.state, writer.manifest)
        keep, fresh, result = _merge(rows, new, remove_under=prefix)
        emptied = allow_empty and not new.items  # removing all it covers was allowed explicitly
        if result.removed > SYNC_MAX_REMOVED_FRACTION * len(rows) and not (allow_removals or emptied):
            raise InputError(f"sync of {source} would remove {result.removed} of the {len(rows)} items of {name!r} "
                             f"(more than {SYNC_MAX_REMOVED_FRACTION:.0%}); nothing was changed. Check that it is "
                             "the right folder, fully there; pass --allow-removals to remove them")
        return keep, fresh, result

    return _update(store, name, plan, progress, changes)


def retrain(store: Store, name: str, progress: Progress | None = None) -> dict:
    """Refit every model on the items now in the index and rebuild its indexes.

    The new state is built in a staging folder (one segment, without the
    removed items) and swapped in atomically: the old index answers queries
    until then. Documents keep the vocabulary of the first build (the texts
    are not stored, their TF-IDF rows are).

    Returns:
        The new manifest.
    """
    started = time.perf_counter()
    store.require(name)
    with store.lock(name, purpose="retrain"):
        folder = store.require(name)
        verify_index(folder, read_raw_manifest(folder))  # every file is read: check them all first
        live = IndexWriter.open(folder)
        segments, modality = live.stored_inputs("retrain"), live.modality
        # Novelty scores are recomputed; the inputs are read a shard at a time, the training sample at once.
        oov = live.stored_oov()
        config = _config_of(live.manifest)
        manifest = {k: v for k, v in live.manifest.items() if k not in ("files", "checksum", "segments", "generation")}
        manifest.pop("evaluation", None)  # measured on the old models
        with store.writer(name, force=True) as root:  # the lock is re-entrant: no writer slips in between
            writer = IndexWriter(root, manifest, live.state)
            modality.save_state(live.state, writer.folder)
            n = len(segments)
            rows = training_rows(n, config)
            train = _stored_batch(modality, segments.iter_inputs, rows, oov)
            scores = writer.fit(modality.encoders(config, train.inputs.shape), train, index_kind=config.index_kind,
                                items=n, progress=progress)
            del train
            writer.carry(segments, oov)
            spool = writer.spool(keep=True)  # the live segments' inputs, copied into the one new segment
            writer.reencode(modality.rechunk(segments.iter_inputs()), scores if rows is None else None, oov,
                            progress, keep=spool)
            writer.settle()
            writer.self_check(_Sample.of(modality, lambda: modality.iter_inputs(spool), n, config.seed), config.seed)
            writer.manifest["retrained_at"] = _now()
            writer.manifest["retrain_seconds"] = round(time.perf_counter() - started, 2)
            return writer.save()
