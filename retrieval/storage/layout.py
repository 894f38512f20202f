"""The shape of an index folder: every file name, the manifest schema, format versions and migrations.

An index is a directory of shared model files and a list of immutable segments::

    manifest.json             this schema (format_version, modality, methods, counts, segments, ...)
    methods/<method>/         one encoder (params.json, *.npy, *.keras); IVF kinds: its trained,
                              empty FAISS index (template.faiss[b]), which every segment's index copies
    vectorizer/               documents: vocabulary.json, idf.npy, vectorizer.json
    novelty_reference.npy     the sorted errors of the items the models were trained on
    segments/<segment>/       one segment: items written together, never changed afterwards
        items.sqlite          their metadata, row ``pos`` = position ``pos`` in the segment
        methods/<method>/     that segment's index.faiss[b] / index.npz
        inputs.npz | pixels.npy   the modality's stored model inputs (unless built with --no-keep-inputs),
        inputs.1.npz, ...     in shards of rows in order (a build writes one per chunk it reads)
        novelty.npy           reconstruction error of every item, position order
        oov.npy               documents: out-of-vocabulary fraction of every item
        deleted-<gen>.npy     the segment's removed positions (sorted), as of write generation <gen>

An item's position in the index (``Hit.position``) counts the items not
removed, segment after segment in manifest order (see
:mod:`retrieval.storage.segments`).

Every path is spelled here and nowhere else. Format history:

1. retrieval 0.1.0. Keys were added over time without a version bump
   (``novelty``, ``drift``, ``files``/``checksum``); search parameters of
   FAISS indexes were not saved.
2. Every key present (``novelty`` is ``null`` for an index without scores);
   each method records its index's search parameters (``search``) and FAISS
   factory string; ``files`` and ``checksum`` are mandatory.
3. Segments: ``segments`` lists ``{name, items, deleted, deletions, labels}``
   in position order and ``generation`` counts the writes. A format-2 folder
   is read as one segment named ``"."`` whose files sit at the top level
   (the per-item files of the format-2 layout), nothing on disk moves.
   Stored inputs may be sharded (``inputs.npz``, ``inputs.1.npz``, ...),
   at the top level of a format-2 index too; an index written before
   shards has the first one only, which reads the same.

Optional keys, added without a version bump because readers use ``.get``
and older indexes simply lack them: ``evaluation`` (the last ``evaluate``
run) and ``self_check`` (the build's label-free self-check, see
:mod:`retrieval.selfcheck`).
"""
from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import IndexFormatError, IndexNotFound

#: The version this code writes. An index of a newer version is refused with
#: one line; an older one is migrated (in memory on read, on disk by
#: :meth:`retrieval.storage.Store.upgrade` or the next write).
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
METADATA = "items.sqlite"
METHODS = "methods"
VECTORIZER = "vectorizer"
NOVELTY = "novelty.npy"
NOVELTY_REFERENCE = "novelty_reference.npy"
OOV = "oov.npy"
SEGMENTS = "segments"
#: The segment name of a format-2 index read as format 3: its files are at the top level.
LEGACY_SEGMENT = "."
#: Stem of a nearest-neighbour index file (``index.faiss``, ``index.faissb``, ``index.npz``).
INDEX_STEM = "index"
#: Stem of the trained, empty FAISS index an IVF method keeps beside its encoder.
TEMPLATE_STEM = "template"
_DELETIONS = re.compile(r"^deleted-g\d+\.npy$")
#: A build's spool of model inputs when the index keeps none (``--no-keep-inputs``), inside its staging
#: folder and deleted before the folder is sealed.
SPOOL = ".spool"


#: ``IndexFolder`` attribute -> file or folder name.
_FILES = {"manifest": MANIFEST, "methods": METHODS, "vectorizer": VECTORIZER,
          "novelty_reference": NOVELTY_REFERENCE, "segments": SEGMENTS}
#: ``SegmentFolder`` attribute -> file name.
_SEGMENT_FILES = {"metadata": METADATA, "novelty": NOVELTY, "oov": OOV}


@dataclass(frozen=True)
class IndexFolder:
    """Every path inside one index folder.

    Attributes:
        root: The folder (a live index or a writer's staging copy).
        manifest, methods, vectorizer, novelty_reference, segments:
            The paths of the files and folders of :data:`_FILES`.
    """

    root: Path

    def __post_init__(self) -> None:
        # One attribute per file of the layout: folder.manifest, folder.novelty_reference, ...
        for attr, name in _FILES.items():
            object.__setattr__(self, attr, Path(self.root) / name)

    def method(self, name: str) -> Path:
        """The folder of one method's encoder files (shared by every segment)."""
        return self.root / METHODS / name

    def segment(self, name: str) -> "SegmentFolder":
        """The folder of one segment (:data:`LEGACY_SEGMENT`: the top level of a format-2 index)."""
        if name == LEGACY_SEGMENT:
            return SegmentFolder(Path(self.root), name)
        if not _SEGMENT_NAME.match(str(name)):
            raise IndexFormatError(f"{self.manifest} names an invalid segment {name!r}; rebuild the index")
        return SegmentFolder(self.root / SEGMENTS / name, name)

    def read_manifest(self) -> dict:
        """The manifest as written (any version up to :data:`FORMAT_VERSION`), unmigrated."""
        return read_raw_manifest(self.root)

    def write_manifest(self, manifest: dict) -> None:
        """Write the manifest atomically (see :func:`write_json_atomic`)."""
        write_json_atomic(self.manifest, manifest)


@dataclass(frozen=True)
class SegmentFolder:
    """Every path inside one segment folder.

    Attributes:
        root: The segment's folder.
        name: Its name in the manifest.
        metadata, novelty, oov: The paths of the files of :data:`_SEGMENT_FILES`.
    """

    root: Path
    name: str

    def __post_init__(self) -> None:
        for attr, file in _SEGMENT_FILES.items():
            object.__setattr__(self, attr, Path(self.root) / file)

    def method(self, name: str) -> Path:
        """The folder of one method's nearest-neighbour index in this segment."""
        return self.root / METHODS / name

    def inputs(self, modality) -> Path:
        """The first shard of the stored model inputs of the index's modality (see :meth:`Segments.input_shards`)."""
        return self.root / modality.inputs_file

    def deletions(self, file: str) -> Path:
        """A deletion-marks file of this segment (named by the manifest)."""
        if not _DELETIONS.match(str(file)):
            raise IndexFormatError(f"invalid deletion-marks file {file!r} of segment {self.name!r}; "
                                   "rebuild the index")
        return self.root / file


_SEGMENT_NAME = re.compile(r"^g\d{6,}$")


def segment_name(generation: int) -> str:
    """The name of the segment written by write ``generation``."""
    return f"g{generation:06d}"


def deletions_name(generation: int) -> str:
    """The name of the deletion-marks file written by write ``generation``."""
    return f"deleted-{segment_name(generation)}.npy"


def is_segment_file(rel: str) -> bool:
    """True for a path (relative to the index, POSIX) of segment data rather than shared model files.

    Segment data the manifest does not list is what killed or earlier writers
    left (a half-written segment, a compacted one, old deletion marks): never
    read, deleted by the next writer. Per-item files of a format-2 segment
    sit at the top level.
    """
    parts = PurePosixPath(rel).parts
    if not parts:
        return False
    if parts[0] == SEGMENTS:
        return True
    from ..modality import MODALITIES

    if len(parts) == 1:
        return (parts[0] in set(_SEGMENT_FILES.values()) or bool(_DELETIONS.match(parts[0]))
                or any(m.shard_number(parts[0]) is not None for m in MODALITIES.values()))
    return len(parts) == 3 and parts[0] == METHODS and parts[2].split(".")[0] == INDEX_STEM


def is_collectable(rel: str) -> bool:
    """True for what a segment write may add: segment data, and the IVF template of an index built without it.

    Unlisted, such a file is garbage of a killed or earlier writer (see
    :func:`retrieval.storage.store.collect_garbage`), not an injected file.
    """
    parts = PurePosixPath(rel).parts
    return is_segment_file(rel) or (len(parts) == 3 and parts[0] == METHODS
                                    and parts[2].split(".")[0] == TEMPLATE_STEM)


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


def _v2_to_v3(manifest: dict) -> dict:
    """Format 2 -> 3: the whole index is one segment, :data:`LEGACY_SEGMENT`, at the top level.

    Nothing on disk moves: the segment's files keep their format-2 paths
    (``items.sqlite``, ``methods/<m>/index.faiss``, ...). Its label counts
    are unknown to the manifest (``None``): a writer counts them when needed.
    """
    items = int(manifest.get("counts", {}).get("items", 0))
    manifest.setdefault("segments", [{"name": LEGACY_SEGMENT, "items": items, "deleted": 0, "deletions": None,
                                      "labels": None}])
    manifest.setdefault("generation", 0)
    manifest["migrated_from"] = manifest.get("migrated_from", 2)
    return manifest


#: ``{version: migration to version + 1}``; one entry per older format, each tested.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2, 2: _v2_to_v3}


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
