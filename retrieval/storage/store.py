"""Index folders on disk: home resolution, locking, crash-safe swaps, checksums.

An index is a directory ``HOME/NAME/`` holding ``manifest.json``, the SQLite
item metadata ``items.sqlite`` and one sub-folder per method with its encoder
and FAISS file. Nothing is pickled.

Writes. Every write (build, update, manifest update, removal) holds an
exclusive ``flock`` on ``HOME/.NAME.lock``; the kernel drops it when the
writer exits or is killed, so a lock is never stale in effect. A build or an
update writes a complete new folder ``HOME/.tmp-NAME-XXXXXXXX`` and swaps it
in with two renames::

    NAME -> .old-NAME-XXXXXXXX/index      (1)
    .tmp-NAME-XXXXXXXX -> NAME           (2)
    delete .old-NAME-XXXXXXXX            (3)

A writer killed between (1) and (2) leaves no ``NAME`` but a complete old
state in ``.old-NAME-*/index``; whoever next opens or writes the index puts it
back under the lock (:meth:`Store.require`, :meth:`Store.names`,
:meth:`Store.lock`). So after a crash at any point the old or the new state
is visible, never neither and never a mix. Leftover ``.tmp-``, ``.old-`` and
``.del-`` folders of dead writers are deleted by the next lock holder, which
cannot be deleting a live writer's folder since it holds the lock.

Segment writes. ``add``, ``remove-items``, ``sync`` and ``compact`` do not
swap folders: they add files (a new segment folder, staged under
``segments/.tmp-*`` and renamed into place; new deletion marks) that the
current manifest does not list, then replace ``manifest.json`` atomically
(write a temporary file, fsync, rename): that rename is the commit point. A
writer killed before it leaves unlisted files, which nothing reads and the
next lock holder deletes (:func:`collect_garbage`); after it, the new state.
Segments a compaction merged away stay on disk until the next write, so a
reader that opened the previous manifest keeps working meanwhile (it
reopens at its next query, see :meth:`retrieval.search.Retriever.refresh`).

Checksums. Before the swap ``manifest.json`` gets a ``files`` map (SHA-256
and size of every file) and a ``checksum`` of the manifest itself;
:func:`verify_index` checks both when an index is opened. They detect
corruption, truncation and edits by hand or by tools that do not know the
format; they are not signatures: someone able to write the folder can also
recompute them.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from ..errors import (HomeNotWritable, IndexExists, IndexFormatError, IndexLocked, IndexNotFound, InputError,
                      RetrievalWarning)
from .layout import (FORMAT_VERSION, MANIFEST, SEGMENTS, is_collectable, is_segment_file, migrate, read_manifest,
                     read_raw_manifest, write_json_atomic)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: The random part ``tempfile.mkdtemp`` appends: matching it exactly keeps
#: the leftovers of index ``a`` apart from those of index ``a-b``.
_RANDOM = r"[a-z0-9_]{8}"
_OLD = re.compile(rf"^\.old-(.+)-{_RANDOM}$")
#: Files of an index folder not covered by the ``files`` map.
_UNLISTED = frozenset({MANIFEST, MANIFEST + ".tmp"})
#: A lock attempt retries this long before raising: readers finishing a
#: recovery and :meth:`Store.check_new` hold the lock for microseconds.
LOCK_GRACE = 0.2
#: How long a reader waits for a live writer's swap to finish.
_SWAP_WAIT = 5.0
_FIX = "the index may have been tampered with: rebuild it with --force"
#: What a write to a read-only mount or a folder without write permission fails with.
_NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})

# Locks this process holds, by lock file: {path: [thread id, depth]}. flock
# conflicts between two descriptors of one process too, so a thread already
# holding a lock re-enters it instead of locking itself out.
_held: dict[str, list[int]] = {}
_held_guard = threading.Lock()


def index_home(index_dir: str | Path | None = None) -> Path:
    """Resolve where indexes live.

    Order: the explicit ``index_dir``; the ``RETRIEVAL_HOME`` environment
    variable; the ``indexes/`` folder of a source checkout (beside the
    package); ``~/.local/share/retrieval/indexes`` for a regular install.
    """
    if index_dir:
        return Path(index_dir).expanduser()
    if os.environ.get("RETRIEVAL_HOME"):
        return Path(os.environ["RETRIEVAL_HOME"]).expanduser()
    checkout = Path(__file__).resolve().parent.parent / "indexes"
    if checkout.is_dir():
        return checkout
    return Path.home() / ".local" / "share" / "retrieval" / "indexes"


def _home_origin(index_dir: str | Path | None) -> str:
    """Where :func:`index_home` took the home from, as the fix names it."""
    if index_dir:
        return "--index-dir"
    if os.environ.get("RETRIEVAL_HOME"):
        return "RETRIEVAL_HOME"
    return "--index-dir or RETRIEVAL_HOME"


class Store:
    """The collection of indexes under one home folder.

    Args:
        root: The home folder; see :func:`index_home` for the default.

    Raises:
        InputError: The home, or a folder on its path, is a file.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = index_home(root)
        self._origin = _home_origin(root)
        self._check_home()

    def _check_home(self) -> None:
        """Raise unless the home is a folder or can become one (no file on its path)."""
        for path in (self.root, *self.root.parents):
            if path.exists():
                if not path.is_dir():
                    what = "it" if path == self.root else str(path)
                    raise InputError(f"the index home {self.root} is not a folder: {what} is a file; point "
                                     f"{self._origin} at a folder, or move the file away")
                return

    def _not_writable(self, exc: OSError, name: str, purpose: str) -> Exception:
        """The error to raise for an operating-system error of a write (``exc`` itself when it is not about access)."""
        self._check_home()  # the home was replaced by a file since
        if exc.errno not in _NOT_WRITABLE:
            return exc
        folder = Path(exc.filename).parent if exc.filename else self.root
        return HomeNotWritable(
            f"index {name!r} cannot be written ({purpose}): {folder} is not writable ({exc.strerror}); remount it "
            f"read-write or fix its permissions, or copy {self.root} to a writable folder and point "
            f"{self._origin} at the copy; reading (query, info, list, evaluate) works as it is")

    def path(self, name: str) -> Path:
        """Folder of index ``name`` (validated, not necessarily existing)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise InputError(f"invalid index name {name!r}; use letters, digits, '.', '_' or '-' "
                             "(starting with a letter or digit)")
        return self.root / name

    def names(self) -> list[str]:
        """Names of the complete indexes, sorted (restoring any a killed writer left half-swapped)."""
        if not self.root.is_dir():
            return []
        for name in {m.group(1) for p in self.root.iterdir() if (m := _OLD.match(p.name))}:
            if _NAME.match(name) and not (self.root / name / MANIFEST).exists():
                try:
                    self._restore(name)
                except IndexLocked:
                    pass
                except HomeNotWritable as exc:  # a read-only home: say what is missing from the list
                    warnings.warn(str(exc), RetrievalWarning, stacklevel=2)
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).exists())

    def exists(self, name: str) -> bool:
        """True when a folder for ``name`` exists."""
        return self.path(name).exists()

    def require(self, name: str) -> Path:
        """Return the folder of an existing index or raise :class:`IndexNotFound`.

        An index a killed writer left between its two renames is put back first.
        """
        if not (self.path(name) / MANIFEST).exists():
            self._restore(name)
        return self._existing(name)

    def _existing(self, name: str) -> Path:
        path = self.path(name)
        if not (path / MANIFEST).exists():
            known = ", ".join(self.names()) or "none"
            raise IndexNotFound(f"no index named {name!r} in {self.root} (known: {known}); "
                                f"build it with 'retrieval index docs|images SOURCE --name {name}'")
        return path

    def check_new(self, name: str, force: bool = False) -> Path:
        """Raise unless ``name`` can be written now.

        Raises:
            IndexLocked: Another process is writing ``name``.
            IndexExists: ``name`` exists and ``force`` is false.
            HomeNotWritable: The home cannot be written (read-only, no permission).
        """
        target = self.path(name)
        holder = self._holder(name)
        if holder is not None:
            raise IndexLocked(self._locked_message(name, holder))
        # Holding the lock a moment finishes a killed writer's swap, and fails on a
        # read-only home now rather than after minutes of training.
        with self.lock(name, purpose="build"):
            pass
        if target.exists() and not force:
            raise IndexExists(f"index {name!r} already exists in {self.root}; "
                              "pass --force to replace it or choose another --name")
        return target

    # -- locking ---------------------------------------------------------------
    def lock_path(self, name: str) -> Path:
        """The lock file of index ``name``: ``ROOT/.NAME.lock``."""
        self.path(name)
        return self.root / f".{name}.lock"

    @contextmanager
    def lock(self, name: str, purpose: str = "write") -> Iterator[None]:
        """Hold the exclusive writer lock of ``name``.

        Non-blocking: when another live process (or thread) holds it, raises
        at once (after :data:`LOCK_GRACE`). Re-entrant within one thread.
        Acquiring it also finishes what a killed writer left (see the module
        docstring); a lock file left by a killed process is taken over with a
        :class:`~retrieval.errors.RetrievalWarning`.

        Args:
            name: Index name.
            purpose: What the holder does, shown to whoever finds it locked.

        Raises:
            IndexLocked: Another live process holds the lock.
        """
        path = self.lock_path(name)
        key = os.path.realpath(path)
        me = threading.get_ident()
        with _held_guard:
            entry = _held.get(key)
            if entry is not None and entry[0] == me:
                entry[1] += 1
        if entry is not None and entry[0] == me:
            try:
                yield
            finally:
                with _held_guard:
                    _held[key][1] -= 1
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = self._acquire(name, path, purpose)
        except OSError as exc:
            raise self._not_writable(exc, name, purpose) from None
        with _held_guard:
            _held[key] = [me, 1]
        try:
            self._recover(name)
            yield
        finally:
            with _held_guard:
                del _held[key]
            # Unlink while still holding the lock; _acquire re-checks the inode
            # it locked, so nobody can end up holding a lock on a deleted file.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(fd)

    def _acquire(self, name: str, path: Path, purpose: str) -> int:
        deadline = time.monotonic() + LOCK_GRACE
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                raise IndexLocked(self._locked_message(name, holder)) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                st = os.stat(path)
                same = (st.st_dev, st.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder unlinked this file as it released it
        stale = _read_holder(fd)
        if stale:
            warnings.warn(f"index {name!r}: took over the lock file {path} left by {_describe(stale)}, "
                          "which ended without releasing it (killed or crashed)", RetrievalWarning, stacklevel=4)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(sys.argv)[:200]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return fd

    def _holder(self, name: str) -> dict | None:
        """Who holds the lock of ``name``, or ``None`` when nobody else does."""
        path = self.lock_path(name)
        with _held_guard:
            entry = _held.get(os.path.realpath(path))
        if entry is not None and entry[0] == threading.get_ident():
            return None
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            # A shared lock conflicts only with a writer's exclusive one.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            return _read_holder(fd)
        finally:
            os.close(fd)

    def _locked_message(self, name: str, holder: dict) -> str:
        return (f"index {name!r} in {self.root} is locked by {_describe(holder)}; "
                "wait for it to finish; a crashed writer's lock is released automatically")

    # -- recovery ----------------------------------------------------------------
    def _leftovers(self, name: str, kind: str) -> list[Path]:
        pattern = re.compile(rf"^\.{kind}-{re.escape(name)}-{_RANDOM}$")
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if pattern.match(p.name) and p.is_dir()]

    def _recover(self, name: str) -> None:
        """Undo what killed writers of ``name`` left; the caller holds the lock."""
        target = self.path(name)
        olds = self._leftovers(name, "old")
        if not (target / MANIFEST).exists():
            complete = [p for p in olds if (p / "index" / MANIFEST).is_file()]
            if complete:
                newest = max(complete, key=lambda p: p.stat().st_mtime)
                if target.exists():  # not an index (no manifest): keep it out of the way
                    os.rename(target, Path(tempfile.mkdtemp(prefix=f".del-{name}-", dir=self.root)) / "index")
                os.rename(newest / "index", target)
                _fsync_dir(self.root)
                warnings.warn(f"index {name!r}: a writer was killed while replacing it; "
                              "restored the previous version", RetrievalWarning, stacklevel=4)
        for leftover in olds + self._leftovers(name, "tmp") + self._leftovers(name, "del"):
            shutil.rmtree(leftover, ignore_errors=True)
        if (target / MANIFEST).exists():
            collect_garbage(target)

    def _restore(self, name: str) -> None:
        """Recover ``name`` if a killed writer left it between its two renames."""
        if not self._leftovers(name, "old"):
            return
        deadline = time.monotonic() + _SWAP_WAIT
        while True:
            try:
                with self.lock(name, purpose="recovery"):
                    return
            except HomeNotWritable as exc:
                raise HomeNotWritable(f"a killed writer left index {name!r} half-replaced (its previous version "
                                      f"is in {self.root}/.old-{name}-*); putting it back: {exc}") from None
            except IndexLocked:
                # A live writer between its two renames: its new state appears at once.
                if (self.path(name) / MANIFEST).exists():
                    return
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _swap(self, name: str, new: Path) -> None:
        """Move the complete folder ``new`` to ``name``; the caller holds the lock."""
        target = self.path(name)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=self.root))
            os.rename(target, old / "index")
        try:
            # A crash here leaves no NAME: _recover renames old/index back.
            os.rename(new, target)
        except BaseException:
            if old is not None and not target.exists():
                os.rename(old / "index", target)
                shutil.rmtree(old, ignore_errors=True)
            raise
        _fsync_dir(self.root)
        if old is not None:
            # A half-deleted old state must never look restorable: drop its manifest first.
            with contextlib.suppress(FileNotFoundError):
                (old / "index" / MANIFEST).unlink()
            shutil.rmtree(old, ignore_errors=True)

    # -- writing -----------------------------------------------------------------
    @contextmanager
    def writer(self, name: str, force: bool = False) -> Iterator[Path]:
        """Build an index in a temporary folder, then swap it into place.

        The lock is held throughout. On normal exit the folder must hold a
        ``manifest.json``; its ``files`` and ``checksum`` are added
        (:func:`seal_index`) before the crash-safe swap. On an exception the
        folder is deleted and any previous index is left as it was.

        Args:
            name: Index name.
            force: Replace an existing index of that name.

        Yields:
            The temporary folder to write into.

        Raises:
            IndexExists: ``name`` exists and ``force`` is false.
            IndexLocked: Another process is writing ``name``.
        """
        with self.lock(name, purpose="build"):
            self.check_new(name, force)
            with self._staged(name) as tmp:
                yield tmp

    @contextmanager
    def _staged(self, name: str, copy_of: Path | None = None) -> Iterator[Path]:
        """A temporary folder (optionally a verified copy), sealed and swapped in on success."""
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=self.root))
        try:
            if copy_of is not None:
                shutil.copytree(copy_of, tmp, copy_function=shutil.copy2, dirs_exist_ok=True)
                verify_index(tmp, read_raw_manifest(tmp))
                collect_garbage(tmp)  # sealing the copy must not list what the manifest does not
            yield tmp
            seal_index(tmp)
            self._swap(name, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @contextmanager
    def updater(self, name: str) -> Iterator[Path]:
        """Update an existing index through a full copy, swapped in on success.

        The copy is made of real files (not links), so files such as
        ``items.sqlite`` may be modified in place. It is checked against the
        manifest before it is handed out: re-sealing a corrupt copy would make
        the corruption look valid.

        Args:
            name: Index name.

        Yields:
            The temporary copy to modify; its ``manifest.json`` is rewritten
            with fresh ``files`` and ``checksum`` on normal exit.

        Raises:
            IndexNotFound: No index ``name``.
            IndexLocked: Another process is writing ``name``.
            IndexFormatError: The current index fails verification.
        """
        with self.lock(name, purpose="update"):
            with self._staged(name, copy_of=self._existing(name)) as tmp:
                yield tmp

    @contextmanager
    def segment_writer(self, name: str, purpose: str = "update") -> Iterator[tuple[Path, dict]]:
        """Write new segment files into the live index, under its lock; no copy is made.

        The manifest's own checksum and the size of every listed file are
        checked first (a truncated file is found at once); only the shared
        model files, which the write uses, are hashed: segments are verified
        when a reader opens them, and a write never changes them. The caller
        writes only files the manifest does not list yet, then commits with
        :func:`seal_update`. On an exception, whatever it wrote is deleted.

        Args:
            name: Index name.
            purpose: What the holder does, shown to whoever finds it locked.

        Yields:
            ``(folder, raw manifest)``: the live index folder and its manifest as written.

        Raises:
            IndexNotFound: No index ``name``.
            IndexLocked: Another process is writing ``name``.
            IndexFormatError: The manifest or a shared file fails verification.
        """
        with self.lock(name, purpose=purpose):
            folder = self._existing(name)
            raw = read_raw_manifest(folder)
            verify_index(folder, raw, hashed=lambda rel: not is_segment_file(rel))
            try:
                yield folder, raw
            except BaseException:
                collect_garbage(folder)
                raise

    def read_manifest(self, name: str) -> dict:
        """Read and check ``manifest.json`` of index ``name``."""
        return read_manifest(self.require(name))

    def update_manifest(self, name: str, update: Callable[[dict], None]) -> dict:
        """Apply ``update`` to the manifest and write it back atomically, under the lock.

        The manifest's own checksum is checked first (so an edited manifest is
        not blessed) and recomputed after. An index of an older format is
        upgraded on the way (see :meth:`upgrade`).
        """
        with self.lock(name, purpose="manifest update"):
            folder = self._existing(name)
            raw = read_raw_manifest(folder)
            verify_index(folder, raw, files=raw["format_version"] < FORMAT_VERSION)
            manifest = migrate(raw)
            update(manifest)
            try:
                if "files" in manifest:
                    manifest["checksum"] = manifest_checksum(manifest)
                    write_json_atomic(folder / MANIFEST, manifest)
                else:  # a format-1 index written before checksums: sealing is its upgrade
                    seal_index(folder, manifest)
            except OSError as exc:  # the home is writable (the lock file), the index folder is not
                raise self._not_writable(exc, name, "manifest update") from None
        return manifest

    def upgrade(self, name: str) -> dict:
        """Rewrite an older-format index's manifest in the current format, in place.

        Under the writer lock, after verifying every file against the old
        manifest; only ``manifest.json`` changes (one atomic rename). A
        current index is left alone.

        Returns:
            The manifest now on disk.
        """
        with self.lock(name, purpose="upgrade"):
            folder = self._existing(name)
            raw = read_raw_manifest(folder)
            if raw["format_version"] == FORMAT_VERSION:
                return raw
            verify_index(folder, raw)
            return seal_index(folder, migrate(raw))

    def remove(self, name: str) -> None:
        """Delete index ``name`` (renamed away first, so it never appears half-deleted)."""
        with self.lock(name, purpose="remove"):
            folder = self._existing(name)
            trash = Path(tempfile.mkdtemp(prefix=f".del-{name}-", dir=self.root))
            os.rename(folder, trash / "index")
            _fsync_dir(self.root)
            shutil.rmtree(trash, ignore_errors=True)

    def disk_usage(self, name: str) -> dict[str, int]:
        """Bytes on disk per top-level entry of the index folder."""
        folder = self.require(name)
        usage = {}
        for entry in sorted(folder.iterdir()):
            files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
            usage[entry.name] = sum(p.stat().st_size for p in files)
        return usage


def _read_holder(fd: int) -> dict:
    """The holder record in a lock file ({} when empty; raw text when not JSON)."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        return {}
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {"raw": text[:200]}
    return data if isinstance(data, dict) else {"raw": text[:200]}


def _describe(holder: dict) -> str:
    if "pid" not in holder:
        return "another process (" + (f"lock file says {holder['raw']!r}" if "raw" in holder else "pid unknown") + ")"
    out = f"pid {holder['pid']}"
    if holder.get("host"):
        out += f" on {holder['host']}"
    out += f" ({holder.get('purpose', 'write')} started {holder.get('started', 'at an unknown time')}"
    if holder.get("command"):
        out += f": {holder['command']}"
    return out + ")"


def _fsync_dir(path: Path) -> None:
    """Make renames in ``path`` durable (power loss, not only process death)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sha256(path: Path, sync: bool = False) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
        if sync:
            os.fsync(f.fileno())
    return digest.hexdigest()


def manifest_checksum(manifest: dict) -> str:
    """SHA-256 of the canonical JSON of ``manifest`` without its ``checksum`` key.

    The manifest goes through a JSON round trip first, so the value is the
    same before writing and after reading back (tuples, integer keys).
    """
    body = json.loads(json.dumps({k: v for k, v in manifest.items() if k != "checksum"}))
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal_index(folder: str | Path, manifest: dict | None = None) -> dict:
    """Record ``files`` (SHA-256 and size of every file) and ``checksum`` in ``folder/manifest.json``.

    Every file is also flushed to disk, so the swap that follows cannot
    publish data still only in the page cache.

    Args:
        folder: A complete index folder.
        manifest: The manifest to seal and write (default: the one in ``folder``,
            migrated to the current format).

    Returns:
        The manifest written.

    Raises:
        IndexFormatError: No manifest given and ``folder`` has none.
    """
    folder = Path(folder)
    if manifest is None:
        if not (folder / MANIFEST).is_file():
            raise IndexFormatError(f"{folder} has no {MANIFEST}: the index writer finished without writing one")
        manifest = read_manifest(folder)
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            _fsync_dir(path)
            continue
        rel = path.relative_to(folder).as_posix()
        if rel not in _UNLISTED:
            files[rel] = _file_entry(path)
    return _write_sealed(folder, manifest, files)


def _file_entry(path: Path) -> dict:
    """The ``files`` entry of one file, flushed to disk on the way."""
    return {"sha256": _sha256(path, sync=True), "bytes": path.stat().st_size}


def _write_sealed(folder: Path, manifest: dict, files: dict) -> dict:
    """Write ``manifest`` with its ``files`` map and its checksum, atomically and durably."""
    manifest.pop("checksum", None)
    manifest["files"] = files
    manifest["checksum"] = manifest_checksum(manifest)
    write_json_atomic(folder / MANIFEST, manifest)
    _fsync_dir(folder)
    return manifest


def seal_update(folder: str | Path, manifest: dict, added: list[str], dropped: list[str] = ()) -> dict:
    """Commit a segment write: list the files it ``added``, drop those it replaced, write the manifest.

    Only the added files are hashed (and flushed to disk with their folders);
    the others keep the checksums the manifest already has. The atomic rename
    of ``manifest.json`` is the commit point.

    Args:
        folder: The live index folder.
        manifest: The new manifest; its ``files`` map is the previous one.
        added: Paths (relative, POSIX) of the new files.
        dropped: Paths the new manifest no longer lists (they become garbage, see :func:`collect_garbage`).

    Returns:
        The manifest written.
    """
    folder = Path(folder)
    if "files" not in manifest:
        # A format-1 index written before checksums: sealing lists every file
        # there is, so what the write replaced goes first (no grace here).
        for rel in dropped:
            with contextlib.suppress(FileNotFoundError):
                (folder / rel).unlink()
        return seal_index(folder, manifest)
    files = {rel: info for rel, info in manifest["files"].items() if rel not in set(dropped)}
    files.update({rel: _file_entry(folder / rel) for rel in sorted(set(added))})
    for directory in sorted({(folder / rel).parent for rel in added}):
        _fsync_dir(directory)
    _fsync_dir(folder / SEGMENTS)
    return _write_sealed(folder, manifest, files)


def collect_garbage(folder: str | Path) -> list[str]:
    """Delete what segment writes left that the manifest does not list (see :func:`~retrieval.storage.layout.is_collectable`).

    Call it only under the index's writer lock: it deletes what killed
    writers left and what compactions replaced. An index whose manifest is
    unreadable or lists no files is left alone.

    Returns:
        The paths deleted (relative, POSIX).
    """
    folder = Path(folder)
    try:
        listed = read_raw_manifest(folder).get("files")
    except (IndexFormatError, IndexNotFound):
        return []
    if not isinstance(listed, dict):
        return []
    deleted = []
    # A writer killed while writing the new manifest left its temporary file
    # (the live manifest is the old one, intact): under the lock it is garbage.
    stale = folder / (MANIFEST + ".tmp")
    if stale.is_file():
        stale.unlink()
        deleted.append(stale.name)
    for path in sorted(folder.rglob("*"), reverse=True):  # files before their folders
        rel = path.relative_to(folder).as_posix()
        if not is_collectable(rel):
            continue
        if path.is_dir():
            if rel != SEGMENTS and not any(path.iterdir()):
                path.rmdir()
        elif rel not in listed:
            path.unlink()
            deleted.append(rel)
    return deleted


def verify_index(folder: str | Path, manifest: dict, *, files: bool = True, hashes: bool = True,
                 hashed: Callable[[str], bool] | None = None) -> None:
    """Check an index folder against the checksums in its manifest.

    Format-1 indexes written before checksums existed (no ``files`` nor
    ``checksum``) pass unchecked; from format 2 on both are mandatory. Sizes are compared before anything is hashed, so a
    missing or truncated file is reported at once.

    Args:
        folder: The index folder.
        manifest: Its manifest as written (:func:`read_raw_manifest`, before migration).
        files: Also check every file (``False``: only the manifest's checksum).
        hashes: Also hash every file (``False``: only their presence and sizes; a
            quick check that misses a changed byte but not a truncated file).
        hashed: Which listed files (relative paths) to hash; the size of every
            one is checked anyway (default: hash them all).

    Raises:
        IndexFormatError: The manifest was edited; a listed file is missing,
            has another size or another SHA-256; or a file not written by the
            build appears (segment data the manifest does not list is not
            read, and is no error: see :func:`collect_garbage`). The message
            names the file.
    """
    folder = Path(folder)
    where = f"index {manifest.get('name', folder.name)!r} ({folder})"
    if "checksum" in manifest:
        if manifest["checksum"] != manifest_checksum(manifest):
            raise IndexFormatError(f"{where}: {MANIFEST} was modified after the index was written "
                                   f"(checksum mismatch); {_FIX}")
    elif "files" in manifest or manifest.get("format_version", 1) >= 2:
        raise IndexFormatError(f"{where}: {MANIFEST} was modified after the index was written "
                               f"(its checksum was removed); {_FIX}")
    if "files" not in manifest and manifest.get("format_version", 1) >= 2:
        raise IndexFormatError(f"{where}: {MANIFEST} lists no files to check (its 'files' map was removed); {_FIX}")
    if not files or "files" not in manifest:
        return
    listed = manifest["files"]
    try:
        expected = {rel: (int(info["bytes"]), str(info["sha256"])) for rel, info in listed.items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        raise IndexFormatError(f"{where}: the 'files' map of {MANIFEST} is malformed; {_FIX}") from None
    for rel, (size, _) in sorted(expected.items()):
        parts = PurePosixPath(rel)
        if parts.is_absolute() or ".." in parts.parts:
            raise IndexFormatError(f"{where}: {MANIFEST} lists {rel!r}, outside the index; {_FIX}")
        try:
            actual = (folder / rel).stat().st_size
        except FileNotFoundError:
            raise IndexFormatError(f"{where}: {rel} is missing; {_FIX}") from None
        if actual != size:
            raise IndexFormatError(f"{where}: {rel} was modified or truncated ({actual} bytes, "
                                   f"{size} expected); {_FIX}")
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if not path.is_dir() and rel not in expected and rel not in _UNLISTED and not is_collectable(rel):
            raise IndexFormatError(f"{where}: unexpected file {rel}, not written by the build; {_FIX}")
    if not hashes:
        return
    for rel, (_, sha) in sorted(expected.items()):
        if (hashed is None or hashed(rel)) and _sha256(folder / rel) != sha:
            raise IndexFormatError(f"{where}: {rel} was modified or truncated (sha256 mismatch); {_FIX}")
