"""The shape of an index folder: every file name, the manifest schema, format versions and migrations.

An index is a directory::

    manifest.json             this schema (format_version, modality, methods, counts, ...)
    items.sqlite              item metadata, row ``pos`` = FAISS position ``pos``
    methods/<method>/         one encoder (params.json, *.npy, *.keras) and its index.faiss[b] / index.npz
    vectorizer/               documents: vocabulary.json, idf.npy, vectorizer.json
    inputs.npz | pixels.npy   the modality's stored model inputs (unless built with --no-keep-inputs)
    novelty.npy               reconstruction error of every item, position order
    novelty_reference.npy     the sorted errors of the items the models were trained on
    oov.npy                   documents: out-of-vocabulary fraction of every item

Every path is spelled here and nowhere else. Format history:

1. retrieval 0.1.0. Keys were added over time without a version bump
   (``novelty``, ``drift``, ``files``/``checksum``); search parameters of
   FAISS indexes were not saved.
2. Every key present (``novelty`` is ``null`` for an index without scores);
   each method records its index's search parameters (``search``) and FAISS
   factory string; ``files`` and ``checksum`` are mandatory.

Optional keys, added without a version bump because readers use ``.get``
and older indexes simply lack them: ``evaluation`` (the last ``evaluate``
run) and ``self_check`` (the build's label-free self-check, see
:mod:`retrieval.selfcheck`).
"""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import IndexFormatError, IndexNotFound

#: The version this code writes. An index of a newer version is refused with
#: one line; an older one is migrated (in memory on read, on disk by
#: :meth:`retrieval.storage.Store.upgrade` or the next write).
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
METADATA = "items.sqlite"
METHODS = "methods"
VECTORIZER = "vectorizer"
NOVELTY = "novelty.npy"
NOVELTY_REFERENCE = "novelty_reference.npy"
OOV = "oov.npy"


#: ``IndexFolder`` attribute -> file or folder name.
_FILES = {"manifest": MANIFEST, "metadata": METADATA, "methods": METHODS, "vectorizer": VECTORIZER,
          "novelty": NOVELTY, "novelty_reference": NOVELTY_REFERENCE, "oov": OOV}


@dataclass(frozen=True)
class IndexFolder:
    """Every path inside one index folder.

    Attributes:
        root: The folder (a live index or a writer's staging copy).
        manifest, metadata, methods, vectorizer, novelty, novelty_reference, oov:
            The paths of the files and folders of :data:`_FILES`.
    """

    root: Path

    def __post_init__(self) -> None:
        # One attribute per file of the layout: folder.manifest, folder.novelty, ...
        for attr, name in _FILES.items():
            object.__setattr__(self, attr, Path(self.root) / name)

    def method(self, name: str) -> Path:
        """The folder of one method (encoder files and its nearest-neighbour index)."""
        return self.root / METHODS / name

    def inputs(self, modality) -> Path:
        """The stored model inputs of the index's modality (see :mod:`retrieval.modality`)."""
        return self.root / modality.inputs_file

    def read_manifest(self) -> dict:
        """The manifest as written (any version up to :data:`FORMAT_VERSION`), unmigrated."""
        return read_raw_manifest(self.root)

    def write_manifest(self, manifest: dict) -> None:
        """Write the manifest atomically (see :func:`write_json_atomic`)."""
        write_json_atomic(self.manifest, manifest)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a sibling temp file, flush it to disk, then rename it over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, indent=2, sort_keys=False))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_raw_manifest(folder: Path) -> dict:
    """Read ``folder/manifest.json`` and check its JSON and format version (no migration)."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        version = manifest["format_version"]
    except FileNotFoundError:
        raise IndexNotFound(f"{folder} has no {MANIFEST}; it is not an index") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexFormatError(f"{path} is corrupt ({type(exc).__name__}: {exc}); "
                               "rebuild the index with --force") from None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise IndexFormatError(f"{path} has an invalid format_version {version!r}; rebuild the index with --force")
    if version > FORMAT_VERSION:
        raise IndexFormatError(f"{Path(folder).name} was written by a newer retrieval (index format {version}, "
                               f"this version reads up to {FORMAT_VERSION}); upgrade retrieval or rebuild the index")
    return manifest


def read_manifest(folder: Path) -> dict:
    """Read ``folder/manifest.json`` migrated to :data:`FORMAT_VERSION` (in memory only)."""
    return migrate(read_raw_manifest(folder))


# -- migrations -----------------------------------------------------------------
#: The search parameters format 1 re-applied from constructor defaults on load.
_V1_SEARCH = {"flat": {}, "sparse": {}, "binary-flat": {}, "ivf": {"nprobe": 16},
              "hnsw": {"m": 32, "ef_search": 128}, "binary-ivf": {"nprobe": 64, "nlist": None}}


def _v1_to_v2(manifest: dict) -> dict:
    """Format 1 -> 2: make implicit keys explicit; nothing on disk but the manifest changes."""
    for entry in manifest.get("methods", {}).values():
        entry.setdefault("search", dict(_V1_SEARCH.get(entry.get("index"), {})))
        entry.setdefault("factory", None)  # format 1 did not record it
    manifest.setdefault("default_method", "ae")
    manifest.setdefault("novelty", None)
    if manifest.get("drift") is None:
        from ..novelty import drift

        manifest["drift"] = drift(manifest.get("counts", {}).get("items", 0)) if manifest["novelty"] else None
    manifest["migrated_from"] = manifest.get("migrated_from", 1)
    return manifest


#: ``{version: migration to version + 1}``; one entry per older format, each tested.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2}


def migrate(manifest: dict) -> dict:
    """Bring a manifest of any older format up to :data:`FORMAT_VERSION` (a new dict).

    Verification (:func:`retrieval.storage.store.verify_index`) checks the
    manifest as written, before migration: the checksum covers that text.
    """
    version = manifest["format_version"]
    if version == FORMAT_VERSION:
        return manifest
    manifest = copy.deepcopy(manifest)
    while version < FORMAT_VERSION:
        manifest = MIGRATIONS[version](manifest)
        version += 1
        manifest["format_version"] = version
    return manifest
