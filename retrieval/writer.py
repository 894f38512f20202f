"""The one way an index is written: :class:`IndexWriter` (fit, append, keep), and the operations on it.

Every write goes through a staging folder of the :class:`~retrieval.storage.Store`
(a new folder for a build, a verified copy for an update), under the index's
writer lock, and is swapped in only when complete; a failure leaves the
previous index as it was. The operations are compositions of three steps:

* build = ``fit`` the encoders on the source, then ``append`` its items;
* add / sync / remove-items = plan on the live index, then ``keep`` + ``append`` on a copy;
* retrain = ``fit`` on the stored inputs, then re-encode them.
"""
from __future__ import annotations

import platform
import shutil
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

from . import novelty
from .config import SYNC_MAX_REMOVED_FRACTION
from .errors import IndexFormatError, InputError, ItemNotFound
from .modality import Batch, Modality, modality_of
from .progress import Progress, report
from .storage import FORMAT_VERSION, IndexFolder, Store, read_manifest
from .storage import metadata as item_table

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
    replaced_examples: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


class IndexWriter:
    """Writes one index folder: fitted encoders, their FAISS indexes, inputs, novelty, metadata.

    Open it on a staging folder (:meth:`Store.writer` / :meth:`Store.updater`),
    call :meth:`fit`, :meth:`keep` and :meth:`append`, then :meth:`save`.

    Args:
        root: The staging folder.
        manifest: Its manifest (current format).
        state: The modality's preprocessing state (the vectorizer, the image shape).
    """

    def __init__(self, root: Path, manifest: dict, state) -> None:
        self.folder = IndexFolder(Path(root))
        self.manifest = manifest
        self.modality: Modality = modality_of(manifest)
        self.state = state
        self._encoders: dict = {}
        self._indexes: dict = {}
        self._fitted: set[str] = set()
        self._keep: np.ndarray | None = None
        self._new_items: list = []
        self._inputs = None
        self._scores: np.ndarray | None = None
        self._reference: np.ndarray | None = None
        self._oov: np.ndarray | None = None
        self._dirty_inputs = False
        self._models_saved = False

    @classmethod
    def open(cls, root: Path) -> "IndexWriter":
        """A writer on an existing (copied) index folder."""
        folder = IndexFolder(Path(root))
        manifest = read_manifest(folder.root)
        modality = modality_of(manifest, str(folder.manifest))
        return cls(folder.root, manifest, modality.load_state(folder, manifest))

    # -- state, loaded on first use --------------------------------------------------
    @property
    def count(self) -> int:
        """Items in the index now (kept ones plus appended ones)."""
        n = self.manifest["counts"]["items"] if self._keep is None else int(self._keep.sum())
        return n + len(self._new_items)

    def _index(self, method: str):
        if method not in self._indexes:
            from .ann import load_index

            info = self.manifest["methods"][method]
            self._indexes[method] = load_index(info["index"], self.folder.method(method), info["metric"],
                                               info.get("search"), info.get("factory"))
        return self._indexes[method]

    def _encoder(self, method: str):
        if method not in self._encoders:
            from .encoders import load_encoder

            self._encoders[method] = load_encoder(self.manifest["methods"][method]["encoder"],
                                                  self.folder.method(method))
        return self._encoders[method]

    def _load_inputs(self) -> None:
        """The per-item files that need no novelty scores: stored inputs and OOV fractions."""
        if self._oov is None and self.folder.oov.exists():
            self._oov = np.load(self.folder.oov, allow_pickle=False)
        if self._inputs is None and self.folder.inputs(self.modality).exists():
            self._inputs = self.modality.load_inputs(self.folder.inputs(self.modality))

    def _load_sidecars(self) -> None:
        """Every per-item file (an update keeps them all in step with the positions)."""
        if self._scores is None:
            if self.manifest.get("novelty") is None:
                raise IndexFormatError(f"index {self.manifest['name']!r} was built by an older retrieval without "
                                       f"novelty scores; run 'retrieval retrain {self.manifest['name']}' (or "
                                       "rebuild it with --force) to add or remove items")
            self._scores, self._reference = novelty.load(self.folder)
        self._load_inputs()

    def stored_inputs(self, need: str):
        """The stored model inputs; raises when the index was built without them."""
        self._load_inputs()
        if self._inputs is None:
            raise InputError(f"index {self.manifest['name']!r} was built with --no-keep-inputs, so {need} "
                             "cannot re-encode its items; rebuild it from its source with --force")
        return self._inputs

    # -- the three steps ----------------------------------------------------------------
    def fit(self, encoders: dict, batch: Batch, *, index_kind: str, progress: Progress | None = None,
            score: bool = True) -> np.ndarray | None:
        """Fit every encoder on ``batch`` and give each an empty nearest-neighbour index.

        A learned binary autoencoder ``ae`` also yields ``ae-float`` and
        ``ae-median`` from its float phase, at no extra training.

        Args:
            encoders: The unfitted encoders by method.
            batch: The training items.
            index_kind: The FAISS index kind (:func:`retrieval.ann.make_index`).
            progress: Progress callback.
            score: Compute the training items' novelty scores here. ``False``
                when an engine scores them elsewhere: they then come with
                :meth:`append` (``training=True``).

        Returns:
            The novelty scores of the training items (the reference of every
            later score); ``None`` without ``score``.
        """
        from .ann import make_index

        X = batch.inputs
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
            for name, (enc, seconds) in family.items():
                index = make_index(index_kind, enc.metric, X.shape[0], sparse=enc.sparse)
                self._encoders[name], self._indexes[name] = enc, index
                self._fitted.add(name)
                methods[name] = _method_entry(enc, seconds)
                if name != method:
                    methods[name]["derived_from"] = method
            report(progress, f"{method}: fit", 1, 1)
        self.manifest["methods"] = methods
        self.manifest["drift"] = novelty.drift(X.shape[0])
        if not score:
            return None
        reference = novelty.item_novelty(self._encoders["ae"], X, batch.oov)
        self._set_reference(reference)
        return reference

    def _set_reference(self, scores: np.ndarray) -> None:
        self._reference = np.sort(scores)
        self.manifest["novelty"] = novelty.summary(self._reference)

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
        """Keep only the items where ``mask`` is true, in every part of the index (positions compact)."""
        mask = np.asarray(mask, bool)
        if self._keep is not None or self._new_items:
            raise RuntimeError("keep() comes before append() and only once per writer")
        if mask.all():
            return
        self._load_sidecars()
        rows = np.flatnonzero(mask)
        for method in self.manifest["methods"]:
            self._indexes[method] = self._index(method).keep(rows)
        if self._inputs is not None:
            self._inputs = self._inputs[rows]
            self._dirty_inputs = True
        self._scores = self._scores[rows]
        if self._oov is not None:
            self._oov = self._oov[rows]
        self._keep = mask
        drift = self.manifest["drift"]
        self.manifest["drift"] = novelty.drift(
            drift["trained_items"], drift["added_since_training"], drift["removed_since_training"] + int((~mask).sum()),
            drift.get("added_novelty_percentile_sum", 0.0), drift.get("added_novelty_sum", 0.0))

    def append(self, batch: Batch, *, scores: np.ndarray | None = None, codes: dict | None = None,
               training: bool = False, progress: Progress | None = None) -> None:
        """Encode ``batch`` with every method and append it after the current items.

        Args:
            batch: The items and their model inputs.
            scores: Their novelty scores when already computed (a build has them from :meth:`fit`).
            codes: Codes already computed, by method (an engine's); the other methods encode here.
            training: The batch is what the models were fitted on (a build): it does not count as drift.
            progress: Progress callback.
        """
        if not len(batch.items):
            return
        if self._scores is None and not training:
            self._load_sidecars()
        methods = list(self.manifest["methods"])
        for step, method in enumerate(methods):
            report(progress, "encode", step, len(methods), method=method)
            self._indexes[method] = self._index(method)
            given = (codes or {}).get(method)
            self._indexes[method].add(self._encoder(method).transform(batch.inputs) if given is None else given)
        report(progress, "encode", len(methods), len(methods))
        if scores is None:
            scores = novelty.item_novelty(self._encoder("ae"), batch.inputs, batch.oov)
        if training:
            if self._reference is None:  # fitted without scores: these are the reference
                self._set_reference(scores)
            self._scores = np.asarray(scores, np.float32)
            self._oov = batch.oov
            self._inputs = batch.inputs
        else:
            self._scores = np.concatenate([self._scores, scores]).astype(np.float32)
            if self._oov is not None and batch.oov is not None:
                self._oov = np.concatenate([self._oov, batch.oov])
            if self._inputs is not None:
                self._inputs = self.modality.concat(self._inputs, batch.inputs)
            drift = self.manifest["drift"]
            self.manifest["drift"] = novelty.drift(
                drift["trained_items"], drift["added_since_training"] + len(batch.items),
                drift["removed_since_training"],
                drift.get("added_novelty_percentile_sum", 0.0)
                + float(novelty.percentile(self._reference, scores).sum()),
                drift.get("added_novelty_sum", 0.0) + float(np.sum(scores)))
        self._dirty_inputs = True
        self._new_items.extend(batch.items)

    def reencode(self, inputs, scores: np.ndarray, progress: Progress | None = None) -> None:
        """Fill the freshly fitted indexes with every stored item again (retrain).

        Args:
            inputs: The stored inputs, position order.
            scores: Their novelty scores, as :meth:`fit` returned them.
            progress: Progress callback.
        """
        methods = list(self.manifest["methods"])
        for step, method in enumerate(methods):
            report(progress, "encode", step, len(methods), method=method)
            self._indexes[method].add(self._encoders[method].transform(inputs))
        self._scores = np.asarray(scores, np.float32)

    # -- writing -------------------------------------------------------------------------
    def save(self, *, keep_inputs: bool = True) -> dict:
        """Write everything that changed and the manifest; returns the manifest."""
        for method, index in self._indexes.items():
            out = self.folder.method(method)
            out.mkdir(parents=True, exist_ok=True)
            if method in self._fitted and not self._models_saved:
                self._encoders[method].save(out)
            for old_file in out.glob("index.*"):
                old_file.unlink()
            size = index.save(out).stat().st_size
            self.manifest["methods"][method].update(
                index=index.kind, search=index.search_params(), factory=index.factory, index_bytes=size,
                bytes_per_item=size / max(1, len(index)))
        if self._keep is not None or self._new_items or self._fitted:  # every per-item file follows the positions
            if self._scores is not None:
                self.manifest["novelty"] = novelty.save(self.folder, self._scores, self._reference)
            if self._oov is not None:
                np.save(self.folder.oov, self._oov)
        if self._dirty_inputs and self._inputs is not None and keep_inputs:
            self.modality.save_inputs(self.folder.inputs(self.modality), self._inputs)
        if self._keep is not None or self._new_items:
            if not self.folder.metadata.exists():
                item_table.create(self.folder.metadata)
            keep = self._keep if self._keep is not None else np.ones(self.manifest["counts"]["items"], bool)
            item_table.rewrite(self.folder.metadata, keep, self._new_items,
                               [self.modality.snippet(it) for it in self._new_items])
            with closing(item_table.Metadata(self.folder.metadata)) as table:
                labels = [label for label in table.labels() if label is not None]
            self.manifest["counts"].update(items=self.count, labelled=len(labels), labels=len(set(labels)))
        self.folder.write_manifest(self.manifest)
        return self.manifest


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
    return entry


# -- the operations ----------------------------------------------------------------------
def build_index(modality: Modality, source, name: str, config=None, *, store: Store | None = None,
                force: bool = False, progress: Progress | None = None, engine=None) -> dict:
    """Build an index of ``modality`` from ``source``: read -> preprocess -> fit -> FAISS -> store.

    Args:
        modality: :data:`retrieval.modality.DOCS` or :data:`~retrieval.modality.IMAGES`.
        source: A path (folder, archive, JSONL, IDX file, crawl folder) or a corpus already read.
        name: Index name.
        config: Build options (``DocsConfig`` / ``ImagesConfig``; default: the defaults).
        store: Where to write (default: the default home).
        force: Replace an existing index of that name.
        progress: Progress callback.
        engine: Where the items are encoded once the models are fitted:
            ``None`` in this process, or an engine such as
            :class:`retrieval.engines.ray.RayEngine` (started), which loads
            the saved models in its workers and returns every method's codes
            and the novelty scores in item order. The index is the same.

    Returns:
        The manifest written.
    """
    store = store or Store()
    config = config or modality.config_class()
    started = time.perf_counter()
    store.check_new(name, force)  # fail before minutes of training, not after
    report(progress, "read", 0, 1)
    state, batch, extra = modality.prepare(source, config)
    report(progress, "read", 1, 1, items=len(batch.items))
    in_memory = not isinstance(source, (str, Path))
    labels = [it.label for it in batch.items if it.label is not None]
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "modality": modality.name,
        "created_at": _now(),
        "source": "(in memory)" if in_memory else str(source),
        "source_root": None if in_memory else _root_of(source),
        "counts": {"items": 0, "skipped": batch.skipped, "labelled": len(labels), "labels": len(set(labels))},
        "config": config.to_dict(),
        "methods": {},
        "default_method": "ae",
        "versions": library_versions(),
        **extra,
    }
    with store.writer(name, force) as root:
        writer = IndexWriter(root, manifest, state)
        encoders = modality.encoders(config, batch.inputs.shape)
        if engine is None:
            scores = writer.fit(encoders, batch, index_kind=config.index_kind, progress=progress)
            writer.append(batch, scores=scores, training=True, progress=progress)
        else:
            writer.fit(encoders, batch, index_kind=config.index_kind, progress=progress, score=False)
            # The exact baseline indexes the inputs themselves: nothing to farm out.
            models = {m: v for m, v in writer.save_models().items() if m != modality.exact}
            encoded = engine.encode(models, batch, progress=progress)
            writer.append(batch, scores=encoded.scores, codes=encoded.codes, training=True, progress=progress)
            manifest["engine"] = {"name": engine.name, "encode_seconds": encoded.seconds, **encoded.info}
        writer.self_check(batch.inputs, config.seed)
        modality.save_state(state, writer.folder)
        manifest["build_seconds"] = round(time.perf_counter() - started, 2)
        writer.save(keep_inputs=config.keep_inputs)
    return manifest


def _config_of(manifest: dict):
    return modality_of(manifest).config_class.from_dict(manifest.get("config", {}))


def _update(store: Store, name: str, plan, progress: Progress | None, changes: dict | None = None) -> UpdateReport:
    """Run ``plan(writer, rows) -> (keep mask, new batch, report)`` on the live index, then apply it on a copy.

    Only a plan that changes something pays for the copy and the swap (a
    re-run of ``add`` after a crawl that found nothing new copies nothing).
    ``changes`` are manifest entries to set (``sync --new-source``).
    """
    started = time.perf_counter()
    with store.lock(name, purpose="update"):
        live = IndexWriter.open(store.require(name))
        if live.manifest.get("novelty") is None:
            raise IndexFormatError(f"index {name!r} was built by an older retrieval without novelty scores; "
                                   f"rebuild it with --force to add or remove items")
        with closing(item_table.Metadata(live.folder.metadata)) as table:
            rows = table.rows()
        keep, new, result = plan(live, rows)
        retarget = any(live.manifest.get(key) != value for key, value in (changes or {}).items())
        if keep.all() and not new.items and not retarget:
            result.items = live.manifest["counts"]["items"]
            result.drift = live.manifest.get("drift") or {}
        else:
            with store.updater(name) as copy:  # the lock is re-entrant: no writer slips in between
                writer = IndexWriter.open(copy)
                writer.keep(keep)
                writer.append(new, progress=progress)
                writer.manifest.update(changes or {})
                writer.manifest["updated_at"] = _now()
                manifest = writer.save()
                result.items = manifest["counts"]["items"]
                result.drift = manifest["drift"]
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _merge(rows: list[dict], new: Batch, remove_under: str | None = None) -> tuple[np.ndarray, Batch, UpdateReport]:
    """Decide per item: add, replace (content changed), keep unchanged, or remove.

    Args:
        rows: The indexed items.
        new: The items read.
        remove_under: Remove the indexed items whose id starts with this and
            that ``new`` lacks (``""``: any; ``None``: remove none).
    """
    by_id = {row["id"]: i for i, row in enumerate(rows)}
    keep = np.ones(len(rows), bool)
    result = UpdateReport(skipped=new.skipped)
    fresh = []
    for j, item in enumerate(new.items):
        i = by_id.get(item.id)
        if i is None:
            result.added += 1
        elif rows[i]["extra"].get("sha256") == item.extra.get("sha256"):
            result.unchanged += 1
            continue
        else:
            keep[i] = False
            result.replaced += 1
            if len(result.replaced_examples) < EXAMPLES:
                result.replaced_examples.append(item.id)
        fresh.append(j)
    if remove_under is not None:
        present = {item.id for item in new.items}
        for i, row in enumerate(rows):
            if row["id"].startswith(remove_under) and row["id"] not in present:
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
        by_id = {row["id"]: i for i, row in enumerate(rows)}
        for item_id in ids:
            if item_id not in by_id:
                raise ItemNotFound(f"no item with id {item_id!r} in index {name!r}; nothing was removed "
                                 "(ids are shown by 'retrieval query ... --json')")
            keep[by_id[item_id]] = False
        if path_prefix:
            prefixes = _prefixes(writer.manifest, path_prefix)
            matched = [i for i, row in enumerate(rows)
                       if any((row["path"] or "").startswith(p) or row["id"].startswith(p) for p in prefixes)]
            if not matched:
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
        covered = sum(row["id"].startswith(prefix) for row in rows)
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

    The new state is built on a copy and swapped in atomically: the old index
    answers queries until then. Documents keep the vocabulary of the first
    build (the texts are not stored, their TF-IDF rows are).

    Returns:
        The new manifest.
    """
    started = time.perf_counter()
    store.require(name)
    with store.updater(name) as copy:
        writer = IndexWriter.open(copy)
        X = writer.stored_inputs("retrain")
        oov = writer._oov  # loaded with the inputs; novelty scores are not needed: they are recomputed
        config = _config_of(writer.manifest)
        shutil.rmtree(writer.folder.methods)
        scores = writer.fit(writer.modality.encoders(config, X.shape), Batch([], X, oov),
                            index_kind=config.index_kind, progress=progress)
        writer.reencode(X, scores, progress)
        writer.self_check(X, config.seed)
        writer.manifest["retrained_at"] = _now()
        writer.manifest["retrain_seconds"] = round(time.perf_counter() - started, 2)
        writer.manifest.pop("evaluation", None)  # measured on the old models
        return writer.save()
