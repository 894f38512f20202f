"""Walking source folders and opening single input files, safely.

Shared by the document and image readers: both walk a folder the same way
(hidden names ignored, symbolic links kept inside the folder, every file
indexed once) and open query files the same way (regular files only).
"""
from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..errors import InputError
from .text import fix_surrogates


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def walk_files(root: Path, skip: Callable[[str, str], None]) -> list[tuple[str, Path]]:
    """The regular files below ``root``, each once, sorted by relative path.

    Hidden names (``.git``, ``.DS_Store``) are ignored. Symbolic links are
    followed only when their target lies inside ``root``: a link out of the
    folder would index files the user did not point at, so it is skipped
    and reported. A link to a file or folder that is also reached by its own
    path inside ``root`` is not read twice: the real path wins. Folder links
    are walked after the real tree and each real folder at most once, so a
    link loop ends.

    Args:
        root: The source folder.
        skip: Called as ``skip(relative path, reason)`` for each link skipped
            (outside the folder, broken) and each folder that cannot be listed.

    Returns:
        ``(relative posix path, path)`` pairs, sorted by relative path.
    """
    root_real = os.path.realpath(root)
    seen_dirs = {root_real}
    files: dict[str, tuple[str, Path]] = {}  # real path -> (relative path, path)
    links: list[tuple[str, Path, str]] = []  # file links, resolved once the real files are known
    pending: list[tuple[str, Path]] = []  # folder links, walked after the real tree
    # A stack, not recursion: a very deep tree must not hit the recursion limit.
    stack: list[tuple[Path, str, str]] = [(Path(root), "", root_real)]

    def drain() -> None:
        while stack:
            folder, prefix, folder_real = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError as exc:
                skip(prefix.rstrip("/") or ".", f"cannot list the folder ({exc.strerror}); check its permissions")
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                rel, path = prefix + entry.name, Path(entry.path)
                try:
                    if entry.is_symlink():
                        real = os.path.realpath(path)
                        if not os.path.exists(real):
                            skip(rel, "broken symbolic link; fix or delete it")
                        elif not _inside(real, root_real):
                            skip(rel, f"symbolic link to {real}, outside the source folder; "
                                      "copy the file in or index its folder directly")
                        elif os.path.isdir(real):
                            pending.append((rel, path))
                        elif os.path.isfile(real):
                            links.append((rel, path, real))
                    elif entry.is_dir(follow_symlinks=False):
                        real = os.path.join(folder_real, entry.name)
                        seen_dirs.add(real)
                        stack.append((path, rel + "/", real))
                    elif entry.is_file(follow_symlinks=False):
                        files.setdefault(os.path.join(folder_real, entry.name), (rel, path))
                except OSError as exc:
                    skip(rel, f"cannot read it ({exc.strerror}); check its permissions")

    drain()
    while pending:
        pending.sort(reverse=True)
        rel, path = pending.pop()
        real = os.path.realpath(path)
        if real not in seen_dirs:  # a folder reached only through links (e.g. one under a hidden folder)
            seen_dirs.add(real)
            stack.append((path, rel + "/", real))
            drain()
    for rel, path, real in sorted(links):
        files.setdefault(real, (rel, path))
    # A name that is not UTF-8 comes as surrogate escapes: readable in ids, the path still opens it.
    return sorted((fix_surrogates(rel), path) for rel, path in files.values())


def open_regular_file(path: Path, what: str) -> BinaryIO:
    """Open a file the user named, refusing folders, devices and FIFOs.

    The file is opened non-blocking and checked on its descriptor, so a FIFO
    cannot hang the open and a file swapped after a check cannot slip through.

    Args:
        path: The file.
        what: How messages name it (``"query file"``, ``"--batch file"``).

    Returns:
        The file opened for binary reading; the caller closes it.

    Raises:
        InputError: Missing, a folder, not a regular file, or unreadable.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist; check the path") from None
    except OSError as exc:
        if os.path.isdir(path):  # Windows cannot open a folder at all
            raise InputError(f"{what} {path} is a folder, not a file; give a file in it") from None
        raise InputError(f"{what} {path} cannot be opened ({exc.strerror}); check its permissions") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise InputError(f"{what} {path} is a folder, not a file; give a file in it")
        raise InputError(f"{what} {path} is not a regular file (a device, FIFO or socket); "
                         "save the input to a file and give that")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


__all__ = ["open_regular_file", "walk_files"]


def json_line(line: str):
    """``json.loads`` of one untrusted JSONL line: every failure is a :class:`json.JSONDecodeError`.

    ``json.loads`` raises ``RecursionError`` on nesting deeper than the
    interpreter's recursion limit (``[[[[...``); a reader must treat that
    line like any other invalid one, not crash on it.
    """
    try:
        return json.loads(line)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", line[:80], 0) from None
