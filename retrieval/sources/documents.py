"""Read document corpora: folders, archives and JSONL files -> Items.

Bad inputs never stop a build: binary, empty and undecodable files are
skipped with a :class:`~retrieval.errors.RetrievalWarning` naming them, very
large files are truncated at :data:`MAX_DOC_BYTES`.
"""
from __future__ import annotations

import io
import json
import lzma
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..config import BUILD_CHUNK_DOCS, STRIP_MODES
from ..errors import InputError, RetrievalWarning
from ..items import Item
from .files import json_line, open_regular_file, walk_files
from .text import (bom, decode, decode_html, first_line, first_sentence, fix_surrogates, html_to_text, read_mail, strip_quotes,
                   strip_reply_prefix)

#: Documents longer than this many bytes are truncated (with a warning): a
#: bag of words saturates long before, and a stray 100 MB log file must not
#: exhaust memory.
MAX_DOC_BYTES = 1_000_000

#: Extensions read as text; files without an extension (20 Newsgroups
#: postings, mail spools) are read too. Everything else is ignored quietly.
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".html", ".htm", ".text", ".eml", ""}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz", ".zip")


@dataclass
class DocumentCorpus:
    """Items read from a source, and what was skipped."""

    items: list[Item]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)


def _skip(corpus: DocumentCorpus, name: str, reason: str) -> None:
    corpus.skipped.append((name, reason))
    warnings.warn(f"skipped {name}: {reason}", RetrievalWarning, stacklevel=3)


def _is_binary(data: bytes) -> bool:
    # NUL bytes do not occur in text in any single-byte encoding or in UTF-8.
    # UTF-16/32 text is full of them, so after a byte-order mark the decoded
    # text is checked instead (binary data that starts like a BOM has NULs there too).
    if bom(data) is None:
        return b"\x00" in data[:8192]
    return "\x00" in decode(data[:8192], partial=True)


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _wanted(name: str) -> bool:
    pure = PurePosixPath(name)
    if any(part.startswith(".") for part in pure.parts):
        return False
    # Numbered files ("mail.1") are spool chunks, not a file type.
    return pure.suffix.lower() in TEXT_SUFFIXES or pure.suffix[1:].isdigit()


def _split_archive_path(source: Path) -> tuple[Path, str] | None:
    """Find an archive among the parents of a path that does not exist.

    ``data/20news.tar.gz/20news-bydate-train`` names the folder
    ``20news-bydate-train`` inside the archive.
    """
    for parent in source.parents:
        if parent.is_file() and _is_archive(parent):
            return parent, source.relative_to(parent).as_posix()
    return None


#: Skip callback of the readers: ``skip(name, reason)`` records and warns.
Skip = Callable[[str, str], None]


def _iter_folder(root: Path, cap: int, skip: Skip) -> Iterator[tuple[str, bytes, bool]]:
    for rel, path in walk_files(root, skip):
        if not _wanted(rel):
            continue
        try:
            with path.open("rb") as fh:
                data = fh.read(cap + 1)
        except OSError as exc:
            skip(rel, f"cannot read it ({exc.strerror}); check its permissions")
            continue
        yield rel, data[:cap], len(data) > cap


#: What a damaged archive raises while it is read (gzip and bz2 raise OSError).
#: What a damaged archive raises; UnicodeDecodeError: a zip member name flagged UTF-8 that is not.
_ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError,
                   UnicodeDecodeError)


def _iter_archive(archive: Path, inner: str, cap: int, skip: Skip) -> Iterator[tuple[str, bytes, bool]]:
    """The wanted members of an archive, read one by one.

    A damaged archive raises :class:`InputError` even when members before the
    damage were read: the corpus is then incomplete, and an index of part of
    an archive would be silent loss (the source is one file to fix by
    downloading it again, unlike a folder with one bad file).
    """
    zipped = archive.name.lower().endswith(".zip")
    done = 0
    try:
        if zipped:
            yield from _zip_members(archive, inner, cap, skip)
            return
        prefix = inner.strip("/") + "/" if inner else ""
        with tarfile.open(archive) as tf:
            for member in tf:
                name = member.name.lstrip("./")
                if member.isfile() and name.startswith(prefix) and _wanted(name):
                    fh = tf.extractfile(member)
                    data = fh.read(cap + 1) if fh else b""
                    done += 1
                    yield name[len(prefix):], data[:cap], len(data) > cap
    except PermissionError as exc:
        raise InputError(f"cannot read the archive {archive} ({exc.strerror}); check its permissions") from None
    except _ARCHIVE_ERRORS as exc:
        kind = "zip" if zipped else "tar"
        where = f" after {done} document(s)" if done else ""
        detail = " ".join(str(exc).split())  # tarfile lists each method it tried, one a line
        raise InputError(
            f"{archive}: damaged, truncated or not a {kind} archive{where} ({type(exc).__name__}: {detail}); "
            "nothing was indexed from it: download or create it again") from None


def _zip_members(archive: Path, inner: str, cap: int, skip: Skip) -> Iterator[tuple[str, bytes, bool]]:
    prefix = inner.strip("/") + "/" if inner else ""
    with zipfile.ZipFile(archive) as zf:
        names = sorted(n for n in zf.namelist() if not n.endswith("/"))
        for name in names:
            if name.startswith(prefix) and _wanted(name):
                try:
                    with zf.open(name) as fh:
                        data = fh.read(cap + 1)
                except (RuntimeError, NotImplementedError) as exc:  # encrypted, unsupported compression
                    skip(f"{archive.name}/{name}", f"cannot extract it ({exc}); extract the archive by hand")
                    continue
                yield name[len(prefix):], data[:cap], len(data) > cap


def _make_item(rel: str, data: bytes | str, *, label: str | None, strip: str | None,
               title: str = "", item_id: str | None = None, path: str = "", partial: bool = False) -> Item:
    """An item from a document's bytes (a file) or text (JSONL, memory), decoded and cleaned."""
    text = data
    if rel.lower().endswith((".html", ".htm")):
        page_title, text = html_to_text(decode_html(text, partial=partial) if isinstance(text, bytes) else text)
        title = title or page_title
    if strip == "email":
        # Bytes go to the mail parser as they are: each MIME part has its own charset.
        subject, body = read_mail(text, partial=partial)
        title = title or subject
        text = strip_quotes(body)
    elif isinstance(text, bytes):
        text = decode(text, partial=partial)
    if isinstance(data, str):
        text = fix_surrogates(text)  # JSON "\\ud800" escapes, Python strings: no store takes them
    return Item(id=fix_surrogates(item_id or rel), text=text, title=fix_surrogates(title or first_line(text)),
                label=None if label is None else fix_surrogates(label), path=fix_surrogates(path or rel))


def read_documents(
    source: str | Path,
    *,
    labels_from_folders: bool = False,
    strip: str | None = None,
    max_bytes: int = MAX_DOC_BYTES,
    on_progress: Callable[[int], None] | None = None,
) -> DocumentCorpus:
    """Read a corpus of text documents.

    Args:
        source: A folder (read recursively), a ``.tar.gz``/``.zip`` archive (or a
            folder inside one: ``corpus.tar.gz/train``), or a ``.jsonl`` file
            with ``text`` and optional ``id``, ``title``, ``label`` fields.
        labels_from_folders: Use the first-level sub-folder name as the label.
        strip: ``"email"`` removes RFC-822 headers, quoted replies and
            signatures; ``None`` keeps the text as it is.
        max_bytes: Documents are truncated to this many bytes, with a warning.
        on_progress: Called with the number of documents read so far.

    Returns:
        The items in a deterministic order, and the skipped files.

    Raises:
        InputError: The source does not exist, is of an unknown kind, or holds
            no usable document.
    """
    strip = _strip_mode(strip)
    source = Path(source).expanduser()
    corpus = DocumentCorpus(items=[])
    check = _Check(source, labels_from_folders)
    for item in _documents(source, corpus, labels_from_folders, strip, max_bytes):
        corpus.items.append(item)
        check.add(item)
        if on_progress and len(corpus.items) % 500 == 0:
            on_progress(len(corpus.items))
    check.done(len(corpus.skipped))
    return corpus


def iter_documents(
    source: str | Path,
    *,
    labels_from_folders: bool = False,
    strip: str | None = None,
    max_bytes: int = MAX_DOC_BYTES,
    chunk_size: int = BUILD_CHUNK_DOCS,
) -> Iterator[DocumentCorpus]:
    """Read a corpus of text documents in chunks of at most ``chunk_size`` items.

    The items, skips, warnings and truncations of :func:`read_documents`
    (arguments alike), in the same order, without holding the corpus: each
    chunk carries the files skipped and truncated since the previous one. An
    archive is read twice (its names first, to find a common top folder) so
    that no more than one document is in memory at a time.

    Raises:
        InputError: As :func:`read_documents`; the checks over the whole corpus
            (no usable document, duplicate ids, no label) come after the last chunk.
    """
    if chunk_size < 1:
        raise InputError(f"chunk size must be >= 1; got {chunk_size}")
    strip = _strip_mode(strip)
    source = Path(source).expanduser()
    corpus = DocumentCorpus(items=[])
    check = _Check(source, labels_from_folders)
    skipped = 0
    for item in _documents(source, corpus, labels_from_folders, strip, max_bytes):
        corpus.items.append(item)
        check.add(item)
        if len(corpus.items) >= chunk_size:
            skipped += len(corpus.skipped)
            yield corpus
            corpus = DocumentCorpus(items=[])
    skipped += len(corpus.skipped)
    if corpus.items or corpus.skipped or corpus.truncated:
        yield corpus
    check.done(skipped)


def _strip_mode(strip: str | None) -> str | None:
    if strip not in (None, "", "none", *STRIP_MODES):
        raise InputError(f"unknown --strip mode {strip!r}; use 'email' or leave it out")
    return None if strip in ("", "none") else strip


class _Check:
    """The checks a corpus passes as a whole, fed one item at a time: some item, unique ids, labels."""

    def __init__(self, source: Path, labels_from_folders: bool) -> None:
        self.source, self.labels_from_folders = source, labels_from_folders
        self.ids: set[str] = set()
        self.count = 0
        self.labelled = False

    def add(self, item: Item) -> None:
        self.ids.add(item.id)
        self.count += 1
        self.labelled = self.labelled or item.label is not None

    def done(self, skipped: int) -> None:
        source = self.source
        if not self.count:
            raise InputError(f"no readable documents in {source} ({skipped} skipped); "
                             "it needs text files (.txt, .md, .rst, .html or no extension)")
        if len(self.ids) != self.count:
            raise InputError(f"duplicate document ids in {source}; every JSONL 'id' must be unique")
        if self.labels_from_folders and not self.labelled:
            raise InputError(f"--labels-from-folders: {source} has no sub-folders; put each label's files in a "
                             "folder of its own")


def _documents(source: Path, corpus: DocumentCorpus, labels_from_folders: bool, strip: str | None,
               max_bytes: int) -> Iterator[Item]:
    """The documents of ``source`` one by one; skipped and truncated files are recorded in ``corpus``."""

    def skip(name: str, reason: str) -> None:
        _skip(corpus, name, reason)

    if source.is_file() and source.suffix.lower() == ".jsonl":
        return _jsonl_items(source, corpus, strip, max_bytes)
    if source.is_dir():
        entries: Iterator = _iter_folder(source, max_bytes, skip)
    elif source.is_file() and _is_archive(source):
        entries = _iter_archive(source, _common_root(source), max_bytes, skip)
    elif not source.exists() and (found := _split_archive_path(source)):
        entries = _iter_archive(found[0], found[1], max_bytes, skip)
    elif not source.exists():
        raise InputError(f"{source} does not exist; give a folder, a .tar.gz/.zip archive or a .jsonl file")
    else:
        raise InputError(f"{source} is not a folder, an archive (.tar.gz, .zip) or a .jsonl file")
    return _entry_items(entries, corpus, labels_from_folders, strip, max_bytes)


def _common_root(archive: Path) -> str:
    """The single top folder that every wanted file of ``archive`` is in, or ``""`` (archives usually have one).

    Read from the names alone (a first pass over the archive), so the
    documents can then be streamed with that folder dropped from their names;
    the members it cannot read are reported by the second pass.
    """
    names = [name for name, _, _ in _iter_archive(archive, "", 0, lambda name, reason: None)]
    tops = {name.split("/", 1)[0] for name in names}
    return tops.pop() if len(tops) == 1 and all("/" in name for name in names) else ""


def _entry_items(entries, corpus: DocumentCorpus, labels_from_folders: bool, strip: str | None,
                 max_bytes: int) -> Iterator[Item]:
    for rel, data, cut in entries:
        if _is_binary(data):
            _skip(corpus, rel, "binary file")
            continue
        if cut:
            corpus.truncated.append(rel)
            warnings.warn(f"truncated {rel} to its first {max_bytes:,} bytes", RetrievalWarning, stacklevel=2)
        label = rel.split("/", 1)[0] if labels_from_folders and "/" in rel else None
        item = _make_item(rel, data, label=label, strip=strip, partial=cut)
        if not item.text.strip():
            _skip(corpus, rel, "empty document")
            continue
        yield item


def _jsonl_lines(fh: io.BufferedIOBase) -> Iterator[str]:
    """The decoded lines of a JSONL file; a byte-order mark is honoured, not read as text."""
    found = bom(fh.read(4))
    fh.seek(0)
    if found and found[0] != "utf-8":
        # UTF-16/32: a newline is more than one byte, so the text is split after decoding;
        # the BOM-reading codecs ("utf-16", "utf-32") drop the mark.
        yield from io.TextIOWrapper(fh, encoding=found[0][:6], errors="replace")
        return
    if found:
        fh.seek(found[1])
    for raw in fh:
        yield decode(raw)


def _jsonl_items(path: Path, corpus: DocumentCorpus, strip: str | None, max_bytes: int) -> Iterator[Item]:
    with path.open("rb") as fh:
        for lineno, line in enumerate(_jsonl_lines(fh), 1):
            name = f"{path.name}:{lineno}"
            if not line.strip():
                continue
            try:
                record = json_line(line)
            except json.JSONDecodeError as exc:
                _skip(corpus, name, f"invalid JSON ({exc.msg})")
                continue
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                _skip(corpus, name, "no 'text' string field")
                continue
            text = record["text"]
            if len(text) > max_bytes:
                text = text[:max_bytes]
                corpus.truncated.append(name)
                warnings.warn(f"truncated {name} to its first {max_bytes:,} characters", RetrievalWarning, stacklevel=2)
            label = record.get("label")
            item = _make_item(name, text, label=None if label is None else str(label), strip=strip,
                              title=str(record.get("title") or ""),
                              item_id=str(record["id"]) if record.get("id") is not None else str(lineno),
                              path=name)
            if not item.text.strip():
                _skip(corpus, name, "empty document")
                continue
            yield item


def read_text_file(path: str | Path, *, strip: str | None = None, max_bytes: int = MAX_DOC_BYTES) -> str:
    """Read one query document the way corpus files are read.

    At most ``max_bytes`` are read (a longer file is cut, with a warning), so
    no file can exhaust memory.

    Raises:
        InputError: The file is missing, a folder, not a regular file (a
            device such as ``/dev/zero``, a FIFO) or binary.
    """
    path = Path(path).expanduser()
    with open_regular_file(path, "query file") as fh:
        data = fh.read(max_bytes + 1)
    cut = len(data) > max_bytes
    if cut:
        data = data[:max_bytes]
        warnings.warn(f"truncated query file {path} to its first {max_bytes:,} bytes", RetrievalWarning, stacklevel=2)
    if _is_binary(data):
        raise InputError(f"query file {path} is binary, not text")
    return _make_item(path.name, data, label=None, strip=strip, partial=cut).text


def query_text(item: Item, field: str) -> str:
    """The part of a document that is the query of an evaluation (see :data:`retrieval.config.QUERY_FIELDS`).

    Args:
        item: A document as a reader produced it.
        field: ``"text"`` (the whole document), ``"title"`` (its title,
            reply prefixes removed) or ``"first-line"`` (its first line or
            first sentence, whichever is shorter).
    """
    if field == "title":
        return strip_reply_prefix(item.title or first_line(item.text))
    if field == "first-line":
        return first_sentence(item.text)
    return item.text


def corpus_from_records(records, *, strip: str | None = None) -> DocumentCorpus:
    """A corpus of documents already in memory.

    Args:
        records: An iterable of strings (ids ``"0"``, ``"1"``, ...) or of dicts
            with ``text`` and optional ``id``, ``title``, ``label``, ``path``, ``url``.
        strip: ``"email"`` as for files.

    Raises:
        InputError: A record that is neither a string nor a dict with a
            ``text`` string (the message names its position), duplicate ids,
            or no document with text.
    """
    if isinstance(records, (str, bytes, dict)):
        raise InputError("give the documents as a list of strings or of dicts with a 'text' field, "
                         f"not a single {type(records).__name__}")
    corpus = DocumentCorpus(items=[])
    for i, record in enumerate(records):
        if isinstance(record, str):
            record = {"text": record}
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError(f"document {i} is a {type(record).__name__}, not a string or a dict with a "
                             "'text' string; give every document as text")
        label = record.get("label")
        item_id = str(record["id"]) if record.get("id") is not None else str(i)
        item = _make_item(item_id, record["text"][:MAX_DOC_BYTES], label=None if label is None else str(label),
                          strip=strip, title=str(record.get("title") or ""), item_id=item_id,
                          path=str(record.get("path") or ""))
        item.url = fix_surrogates(str(record.get("url") or ""))
        item.path = fix_surrogates(str(record.get("path") or ""))  # in memory: no file unless the record names one
        if not item.text.strip():
            _skip(corpus, f"document {item_id}", "empty document")
            continue
        corpus.items.append(item)
    if not corpus.items:
        raise InputError("no document with text was given; pass a non-empty list of texts")
    ids = [item.id for item in corpus.items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"duplicate document id {dup!r}; every document needs a distinct 'id'")
    return corpus


__all__ = ["DocumentCorpus", "MAX_DOC_BYTES", "corpus_from_records", "decode", "iter_documents", "query_text", "read_documents",
           "read_text_file"]
