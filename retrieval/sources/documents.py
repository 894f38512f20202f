"""Read document corpora: folders, archives and JSONL files -> Items.

Bad inputs never stop a build: binary, empty and undecodable files are
skipped with a :class:`~retrieval.errors.RetrievalWarning` naming them, very
large files are truncated at :data:`MAX_DOC_BYTES`.
"""
from __future__ import annotations

import json
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..config import BUILD_CHUNK_DOCS, STRIP_MODES
from ..errors import InputError, RetrievalWarning
from ..items import Item
from .text import first_line, first_sentence, html_to_text, mail_subject, strip_email, strip_reply_prefix

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


def decode(data: bytes) -> str:
    """Decode bytes as UTF-8, falling back to latin-1 (which never fails)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _is_binary(data: bytes) -> bool:
    # NUL bytes do not occur in text in any single-byte or UTF-8 encoding.
    return b"\x00" in data[:8192]


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


def _iter_folder(root: Path, cap: int) -> Iterator[tuple[str, bytes, bool]]:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or not _wanted(rel):
            continue
        with path.open("rb") as fh:
            data = fh.read(cap + 1)
        yield rel, data[:cap], len(data) > cap


def _iter_archive(archive: Path, inner: str, cap: int) -> Iterator[tuple[str, bytes, bool]]:
    prefix = inner.strip("/") + "/" if inner else ""
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            names = sorted(n for n in zf.namelist() if not n.endswith("/"))
            for name in names:
                if name.startswith(prefix) and _wanted(name):
                    with zf.open(name) as fh:
                        data = fh.read(cap + 1)
                    yield name[len(prefix):], data[:cap], len(data) > cap
        return
    with tarfile.open(archive) as tf:
        for member in tf:
            name = member.name.lstrip("./")
            if member.isfile() and name.startswith(prefix) and _wanted(name):
                fh = tf.extractfile(member)
                data = fh.read(cap + 1) if fh else b""
                yield name[len(prefix):], data[:cap], len(data) > cap


def _make_item(rel: str, text: str, *, label: str | None, strip: str | None,
               title: str = "", item_id: str | None = None, path: str = "") -> Item:
    if rel.lower().endswith((".html", ".htm")):
        page_title, text = html_to_text(text)
        title = title or page_title
    if strip == "email":
        title = title or mail_subject(text)
        text = strip_email(text)
    return Item(id=item_id or rel, text=text, title=title or first_line(text),
                label=label, path=path or rel)


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
    if source.is_file() and source.suffix.lower() == ".jsonl":
        return _jsonl_items(source, corpus, strip, max_bytes)
    if source.is_dir():
        entries: Iterator = _iter_folder(source, max_bytes)
    elif source.is_file() and _is_archive(source):
        entries = _iter_archive(source, _common_root(source), max_bytes)
    elif not source.exists() and (found := _split_archive_path(source)):
        entries = _iter_archive(found[0], found[1], max_bytes)
    elif not source.exists():
        raise InputError(f"{source} does not exist; give a folder, a .tar.gz/.zip archive or a .jsonl file")
    else:
        raise InputError(f"{source} is not a folder, an archive (.tar.gz, .zip) or a .jsonl file")
    return _entry_items(entries, corpus, labels_from_folders, strip, max_bytes)


def _common_root(archive: Path) -> str:
    """The single top folder that every wanted file of ``archive`` is in, or ``""`` (archives usually have one).

    Read from the names alone (a first pass over the archive), so the
    documents can then be streamed with that folder dropped from their names.
    """
    names = [name for name, _, _ in _iter_archive(archive, "", 0)]
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
        item = _make_item(rel, decode(data), label=label, strip=strip)
        if not item.text.strip():
            _skip(corpus, rel, "empty document")
            continue
        yield item


def _jsonl_items(path: Path, corpus: DocumentCorpus, strip: str | None, max_bytes: int) -> Iterator[Item]:
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            name = f"{path.name}:{lineno}"
            if not raw.strip():
                continue
            try:
                record = json.loads(decode(raw))
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

    Raises:
        InputError: The file is missing or binary.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"query file {path} does not exist")
    with path.open("rb") as fh:
        data = fh.read(max_bytes)
    if _is_binary(data):
        raise InputError(f"query file {path} is binary, not text")
    return _make_item(path.name, decode(data), label=None, strip=strip).text


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
        item.url = str(record.get("url") or "")
        item.path = str(record.get("path") or "")  # in memory: no file unless the record names one
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


__all__ = ["DocumentCorpus", "MAX_DOC_BYTES", "corpus_from_records", "decode", "iter_documents", "query_text",
           "read_documents", "read_text_file"]
