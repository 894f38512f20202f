"""One exception hierarchy for the whole library.

Every message names the bad value and says how to fix it; the CLI prints the
message as a single line and exits with status 1.
"""
from __future__ import annotations


class RetrievalError(Exception):
    """Base class of every error the library raises on purpose."""


class InputError(RetrievalError):
    """A source, option or query the user gave cannot be used."""


class EmptyQueryError(InputError):
    """A query has no usable content (only stop words, unknown words, ...)."""


class ItemNotFound(InputError):
    """No item with that id in the index (the server answers 404)."""


class IndexNotFound(RetrievalError):
    """No index of that name exists in the index home."""


class IndexExists(RetrievalError):
    """An index of that name exists and overwriting was not asked for."""


class IndexFormatError(RetrievalError):
    """An index folder is corrupt, incomplete or written by a newer version."""


class IndexLocked(RetrievalError):
    """Another live process is writing the index (build, update or removal)."""


class HomeNotWritable(RetrievalError):
    """A write needs a folder it cannot write: a read-only file system or no permission.

    Reading (query, info, list, evaluate) works on such an index home; only
    writes raise this.
    """


class EngineError(RetrievalError):
    """The distributed engine is not installed, cannot start, or cannot reach its cluster."""


class FetchError(RetrievalError):
    """A URL could not be fetched (network, HTTP status, type or size guard)."""


class RetrievalWarning(UserWarning):
    """Something in the input was skipped or changed; the rest went on.

    Raised through :func:`warnings.warn` so library users can filter it and the
    CLI can print it as one line naming the file.
    """
