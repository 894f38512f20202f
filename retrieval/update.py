"""Living indexes: add, remove and sync items without retraining; retrain; outliers.

New items are vectorised and encoded with the stored models and appended to
every method's index; removed items leave every index, the metadata, the
stored inputs and the novelty scores together (positions are compacted; item
ids are the stable identifiers). Every operation runs inside
:meth:`Store.updater`: on a copy of the index, swapped into place only when
complete, under the index's writer lock.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import novelty
from .build import DOC_INPUTS, IMAGE_INPUTS, _fit_methods, docs_encoders, images_encoders, with_hashes
from .config import DocsConfig, ImagesConfig
from .encoders import load_encoder
from .errors import IndexFormatError, InputError
from .index import load_index
from .items import Item
from .progress import Progress, report
from .store import MANIFEST, METADATA, Store, insert_items, read_manifest, write_json_atomic
from .text import snippet

OOV = novelty.OOV


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
    """

    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    removed: int = 0
    items: int = 0
    skipped: int = 0
    seconds: float = 0.0
    drift: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class _Source:
    items: list[Item]
    inputs: object  # TF-IDF rows or uint8 pixels, one per item
    oov: np.ndarray | None
    skipped: int


# -- reading new items with the index's own preprocessing --------------------------------
def _read_source(folder: Path, manifest: dict, source, labels_from_folders: bool | None) -> _Source:
    try:
        return _read(folder, manifest, source, labels_from_folders)
    except InputError as exc:
        kind = "documents" if manifest["modality"] == "docs" else "images"
        raise InputError(f"index {manifest['name']!r} holds {kind}; {source} gives none ({exc})") from None


def _read(folder: Path, manifest: dict, source, labels_from_folders: bool | None) -> _Source:
    config = manifest.get("config", {})
    labels = config.get("labels_from_folders", False) if labels_from_folders is None else labels_from_folders
    prefix = _id_prefix(manifest, source)
    if manifest["modality"] == "docs":
        from .corpus import read_documents
        from .vectorize import TextVectorizer

        corpus = read_documents(source, labels_from_folders=labels, strip=config.get("strip"))
        texts = [it.text for it in corpus.items]
        vectorizer = TextVectorizer.load(folder / "vectorizer")
        items = with_hashes(_prefixed(corpus.items, prefix), texts)
        return _Source(items, vectorizer.transform(texts), vectorizer.oov_fraction(texts), len(corpus.skipped))
    from .images import read_images

    opts = manifest["images"]
    corpus = read_images(Path(source).expanduser(), size=opts["size"], color=opts["color"], fit=opts["fit"],
                         labels_from_folders=labels)
    return _Source(with_hashes(_prefixed(corpus.items, prefix), corpus.pixels), corpus.pixels, None,
                   len(corpus.skipped))


def _id_prefix(manifest: dict, source) -> str:
    """Ids of items under the build's source folder continue its id scheme.

    An index built from ``~/corpus`` names a file ``new/a.txt``; adding
    ``~/corpus/new`` must give it the same id, not ``a.txt``.
    """
    root = manifest.get("source_root")
    if not root:
        return ""
    try:
        relative = Path(source).expanduser().resolve().relative_to(root)
    except ValueError:
        return ""
    return "" if str(relative) == "." else relative.as_posix() + "/"


def _prefixed(items: list[Item], prefix: str) -> list[Item]:
    if prefix:
        for item in items:
            item.id = prefix + item.id
            item.path = prefix + item.path if item.path else item.path
    return items


def _empty_source(manifest: dict) -> _Source:
    if manifest["modality"] == "docs":
        vocabulary = manifest["vectorizer"]["vocabulary"]
        return _Source([], sp.csr_matrix((0, vocabulary), dtype=np.float32), np.zeros(0, np.float32), 0)
    size = manifest["images"]["size"]
    channels = 1 if manifest["images"]["color"] == "grey" else 3
    return _Source([], np.zeros((0, size, size, channels), np.uint8), None, 0)


# -- the index as rows ---------------------------------------------------------------------
def _rows(folder: Path) -> list[dict]:
    con = sqlite3.connect(folder / METADATA)
    try:
        cur = con.execute("SELECT * FROM items ORDER BY pos")
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        con.close()


def _hash(row: dict) -> str | None:
    return json.loads(row.get("extra") or "{}").get("sha256")


def _rewrite_metadata(folder: Path, keep: np.ndarray, items: list[Item], snippets: list[str],
                      lengths: list[int]) -> None:
    """Drop the rows not kept, renumber positions densely, append the new items."""
    con = sqlite3.connect(folder / METADATA)
    try:
        old = [row[0] for row in con.execute("SELECT pos FROM items ORDER BY pos")]
        gone = [(p,) for p, k in zip(old, keep) if not k]
        con.executemany("DELETE FROM items WHERE pos = ?", gone)
        kept = [p for p, k in zip(old, keep) if k]
        # Two steps through negative numbers: a position is never taken twice.
        con.executemany("UPDATE items SET pos = ? WHERE pos = ?", [(-new - 1, p) for new, p in enumerate(kept)])
        con.execute("UPDATE items SET pos = -pos - 1 WHERE pos < 0")
        insert_items(con, len(kept), items, snippets, lengths)
        con.commit()
    finally:
        con.close()


def _apply(folder: Path, manifest: dict, keep: np.ndarray, new: _Source, progress: Progress | None) -> int:
    """Rewrite every part of the index copy in ``folder``; returns the new item count."""
    rows_kept = np.flatnonzero(keep)
    docs = manifest["modality"] == "docs"
    steps = len(manifest["methods"])
    encoders = {}
    for step, (method, info) in enumerate(manifest["methods"].items()):
        report(progress, "update: methods", step, steps, method=method)
        out = folder / "methods" / method
        index = load_index(info["index"], out, info["metric"])
        if not keep.all():
            index = index.keep(rows_kept)
        if len(new.items):
            encoders[method] = load_encoder(info["encoder"], out)
            index.add(encoders[method].transform(new.inputs))
        for old_file in out.glob("index.*"):
            old_file.unlink()
        size = index.save(out).stat().st_size
        info.update(index_bytes=size, bytes_per_item=size / max(1, len(index)))
    report(progress, "update: methods", steps, steps)
    inputs_path = folder / (DOC_INPUTS if docs else IMAGE_INPUTS)
    if inputs_path.exists():
        if docs:
            stored = sp.load_npz(inputs_path).tocsr()[rows_kept]
            sp.save_npz(inputs_path, sp.vstack([stored, new.inputs]).tocsr(), compressed=True)
        else:
            stored = np.load(inputs_path, allow_pickle=False)[rows_kept]
            np.save(inputs_path, np.concatenate([stored, new.inputs]))
    scores, reference = novelty.load(folder)
    added_scores = np.zeros(0, np.float32)
    if len(new.items):
        added_scores = novelty.item_novelty(encoders["ae"], new.inputs, new.oov)
    manifest["novelty"] = novelty.save(folder, np.concatenate([scores[rows_kept], added_scores]))
    if docs and (folder / OOV).exists():
        np.save(folder / OOV, np.concatenate([np.load(folder / OOV)[rows_kept], new.oov]))
    texts_or_titles = [it.text if docs else it.title for it in new.items]
    _rewrite_metadata(folder, keep, new.items, [snippet(t) if docs else t for t in texts_or_titles],
                      [len(it.text) for it in new.items])
    n = len(rows_kept) + len(new.items)
    drift = manifest.get("drift") or novelty.drift(manifest["counts"]["items"])
    manifest["drift"] = novelty.drift(
        drift["trained_items"], drift["added_since_training"] + len(new.items),
        drift["removed_since_training"] + int((~keep).sum()),
        drift.get("added_novelty_percentile_sum", 0.0) + float(novelty.percentile(reference, added_scores).sum()),
        drift.get("added_novelty_sum", 0.0) + float(added_scores.sum()))
    labels = [r for r in _labels(folder) if r is not None]
    manifest["counts"].update(items=n, labelled=len(labels), labels=len(set(labels)))
    manifest["updated_at"] = _now()
    return n


def _labels(folder: Path) -> list:
    con = sqlite3.connect(folder / METADATA)
    try:
        return [r[0] for r in con.execute("SELECT label FROM items")]
    finally:
        con.close()


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _update(store: Store, name: str, plan, progress: Progress | None) -> UpdateReport:
    """Run ``plan(folder, manifest, rows) -> (keep, new source, report)``, then apply it on a copy.

    The plan reads the live index under the writer lock; only a plan that
    changes something pays for the copy and the swap (a re-run of ``add``
    after a crawl that found nothing new copies nothing).
    """
    started = time.perf_counter()
    with store.lock(name, purpose="update"):
        folder = store.require(name)
        manifest = read_manifest(folder)
        if manifest.get("novelty") is None:
            raise IndexFormatError(f"index {name!r} was built by an older retrieval without novelty scores; "
                                   f"rebuild it with --force to add or remove items")
        keep, new, result = plan(folder, manifest, _rows(folder))
        if keep.all() and not new.items:
            result.items = manifest["counts"]["items"]
            result.drift = manifest.get("drift", {})
        else:
            with store.updater(name) as copy:  # the lock is re-entrant: no writer slips in between
                manifest = read_manifest(copy)
                result.items = _apply(copy, manifest, keep, new, progress)
                result.drift = manifest["drift"]
                write_json_atomic(copy / MANIFEST, manifest)
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _merge(rows: list[dict], new: _Source, remove_missing: bool) -> tuple[np.ndarray, _Source, UpdateReport]:
    """Decide per item: add, replace (content changed), keep unchanged, or remove."""
    by_id = {row["id"]: i for i, row in enumerate(rows)}
    keep = np.ones(len(rows), bool)
    result = UpdateReport(skipped=new.skipped)
    fresh = []
    for j, item in enumerate(new.items):
        i = by_id.get(item.id)
        if i is None:
            result.added += 1
        elif _hash(rows[i]) == item.extra.get("sha256"):
            result.unchanged += 1
            continue
        else:
            keep[i] = False
            result.replaced += 1
        fresh.append(j)
    if remove_missing:
        present = {item.id for item in new.items}
        for i, row in enumerate(rows):
            if row["id"] not in present:
                keep[i] = False
                result.removed += 1
    take = np.asarray(fresh, dtype=np.int64)
    source = _Source([new.items[j] for j in fresh], new.inputs[take], None if new.oov is None else new.oov[take],
                     new.skipped)
    return keep, source, result


# -- the operations --------------------------------------------------------------------
def add_items(store: Store, name: str, source, *, labels_from_folders: bool | None = None,
              progress: Progress | None = None) -> UpdateReport:
    """Encode the items of ``source`` with the stored models and add them; no retraining.

    Items whose id is already indexed with the same content are left alone;
    with different content they are replaced.

    Args:
        store: The store holding the index.
        name: Index name.
        source: Folder, archive or JSONL (documents) / image folder, crawl folder or IDX file.
        labels_from_folders: Label = sub-folder (default: as the index was built).
        progress: Progress callback.
    """
    def plan(folder, manifest, rows):
        return _merge(rows, _read_source(folder, manifest, source, labels_from_folders), remove_missing=False)

    return _update(store, name, plan, progress)


def remove_items(store: Store, name: str, ids: list[str] = (), path_prefix: str | None = None,
                 progress: Progress | None = None) -> UpdateReport:
    """Remove items by id, or every item whose path (or id) starts with ``path_prefix``.

    Raises:
        InputError: An id is not in the index, nothing matches the prefix, or
            neither was given.
    """
    if not ids and not path_prefix:
        raise InputError("give the items to remove: --id ID (repeatable) or --path-prefix PREFIX")

    def plan(folder, manifest, rows):
        keep = np.ones(len(rows), bool)
        by_id = {row["id"]: i for i, row in enumerate(rows)}
        for item_id in ids:
            if item_id not in by_id:
                raise InputError(f"no item with id {item_id!r} in index {name!r}; nothing was removed "
                                 "(ids are shown by 'retrieval query ... --json')")
            keep[by_id[item_id]] = False
        if path_prefix:
            prefixes = _prefixes(manifest, path_prefix)
            matched = [i for i, row in enumerate(rows)
                       if any((row["path"] or "").startswith(p) or row["id"].startswith(p) for p in prefixes)]
            if not matched:
                raise InputError(f"no item of index {name!r} has a path starting with {path_prefix!r}; "
                                 "nothing was removed")
            keep[matched] = False
        return keep, _empty_source(manifest), UpdateReport(removed=int((~keep).sum()))

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


def sync_items(store: Store, name: str, source, *, allow_empty: bool = False,
               labels_from_folders: bool | None = None, progress: Progress | None = None) -> UpdateReport:
    """Make the index match ``source``: add new items, replace changed ones, drop deleted ones.

    Raises:
        InputError: ``source`` is missing or holds no item, unless
            ``allow_empty`` (then every item is removed).
    """
    def plan(folder, manifest, rows):
        try:
            new = _read_source(folder, manifest, source, labels_from_folders)
        except InputError as exc:
            if not allow_empty:
                raise InputError(f"sync source {source} gives no items ({exc}); refusing to remove all "
                                 f"{len(rows)} items of {name!r}: pass --allow-empty to do that") from None
            new = _empty_source(manifest)
        return _merge(rows, new, remove_missing=True)

    return _update(store, name, plan, progress)


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
    with store.updater(name) as folder:
        manifest = read_manifest(folder)
        docs = manifest["modality"] == "docs"
        inputs_path = folder / (DOC_INPUTS if docs else IMAGE_INPUTS)
        if not inputs_path.exists():
            raise InputError(f"index {name!r} was built with --no-keep-inputs, so its items cannot be re-encoded; "
                             "rebuild it from its source with --force")
        X = sp.load_npz(inputs_path).tocsr() if docs else np.load(inputs_path, allow_pickle=False)
        if docs:
            config = DocsConfig.from_dict(manifest["config"])
            encoders = docs_encoders(config)
        else:
            config = ImagesConfig.from_dict(manifest["config"])
            encoders = images_encoders(config)
        shutil.rmtree(folder / "methods")
        manifest["methods"] = _fit_methods(encoders, X, folder, config.index_kind, progress)
        oov = np.load(folder / OOV) if docs and (folder / OOV).exists() else None
        scores = novelty.item_novelty(encoders["ae"], X, oov)
        manifest["novelty"] = novelty.save(folder, scores, scores)
        manifest["drift"] = novelty.drift(X.shape[0])
        manifest["retrained_at"] = _now()
        manifest["retrain_seconds"] = round(time.perf_counter() - started, 2)
        manifest.pop("evaluation", None)  # measured on the old models
        write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def outliers(store: Store, name: str, k: int = 20) -> list[dict]:
    """The ``k`` items the autoencoder reconstructs worst, most novel first.

    Returns:
        Dicts with rank, id, title, label, path, novelty (the score) and
        percentile (among the items the models were trained on).
    """
    from .index import check_k
    from .store import Metadata

    k = check_k(k)
    folder = store.require(name)
    scores, reference = novelty.load(folder)
    order = np.argsort(-scores, kind="stable")[:k]
    metadata = Metadata(folder)
    try:
        rows = metadata.rows(order)
    finally:
        metadata.close()
    pct = novelty.percentile(reference, scores[order])
    return [{"rank": r + 1, "id": row["id"], "title": row["title"] or "", "label": row["label"],
             "path": row["path"] or "", "position": int(pos), "novelty": float(scores[pos]),
             "percentile": float(p)} for r, (row, pos, p) in enumerate(zip(rows, order, pct))]
