"""Filtered search: which items a query may return, decided before the search.

A :class:`Filter` keeps the items that carry one of its labels, whose path
starts with one of its prefixes, and for which its ``where`` condition (an
SQL boolean expression over the item table, with named parameters) holds;
the parts given are combined with AND. :class:`FilterResolver` turns a filter
into the sorted positions of those items over every segment (one SQL
statement per segment, reading the item tables' indexes on label and path);
the search then ranks only them (:meth:`retrieval.ann.SegmentedIndex.search_rows`), so no
result is lost, as it would be by filtering the top candidates afterwards.

The ``where`` condition is user input: it is refused when it holds ``;``,
runs with named parameters only (values never enter the SQL text), on a
read-only connection whose authorizer allows reading the ``items`` table and
calling functions, nothing else (:meth:`retrieval.storage.Metadata.matching`),
and within a time limit.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..config import FILTER_CACHE_ENTRIES, FILTER_WHERE_MAX_CHARS, FILTER_WHERE_SECONDS
from ..errors import InputError
from ..storage.metadata import COLUMNS, ConditionError

#: A ``--param`` name: an SQL identifier (the filter's own parameters start with ``_``).
_PARAM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
#: Columns a condition may name, as the help and error messages list them.
WHERE_COLUMNS = ", ".join(COLUMNS)
_WHERE_HELP = (f"the columns are {WHERE_COLUMNS} (extra is JSON: json_extract(extra, '$.key')); "
               "pass values as named parameters, e.g. --where \"label = :l\" --param l=space")


class NoMatchingItems(InputError):
    """A query's filter keeps no item of the index (the server answers with no hits and this message)."""


def _strings(value, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else list(value)
    for v in values:
        if not isinstance(v, str):
            raise InputError(f"{what} must be a string (or a list of strings); got {v!r}")
        if not v:
            raise InputError(f"{what} is empty; give a value or leave it out")
    return tuple(dict.fromkeys(values))


def parse_params(params) -> tuple[tuple[str, object], ...]:
    """Named parameters from a mapping or ``NAME=VALUE`` strings (``--param``), checked.

    Raises:
        InputError: A bad name, a value that is not a string, number, boolean or
            null, a ``NAME=VALUE`` without ``=``, or a name given twice.
    """
    if params is None:
        return ()
    if isinstance(params, Mapping):
        pairs = list(params.items())
    else:
        if isinstance(params, str):
            params = [params]
        pairs = []
        for text in params:
            if not isinstance(text, str) or "=" not in text:
                raise InputError(f"--param {text!r} is not NAME=VALUE; write e.g. --param l=space")
            name, value = text.split("=", 1)
            pairs.append((name.strip(), value))
    seen = set()
    for name, value in pairs:
        if not isinstance(name, str) or not _PARAM_NAME.match(name):
            raise InputError(f"parameter name {name!r} is not a name (letters, digits, _; a letter first); "
                             "use it in --where as :name")
        if name in seen:
            raise InputError(f"parameter {name!r} is given twice; give each once")
        seen.add(name)
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise InputError(f"parameter {name!r} must be a string, number, boolean or null; got {value!r}")
    return tuple(sorted(pairs))


@dataclass(frozen=True)
class Filter:
    """Which items a query may return; every part given must hold (AND).

    Args:
        labels: Keep items with one of these labels.
        path_prefixes: Keep items whose path starts with one of these.
        where: An SQL boolean expression over the item table's columns
            (:data:`WHERE_COLUMNS`), e.g. ``"length > :n AND title LIKE :t"``.
        params: Its named parameters, ``(name, value)`` pairs (``:name`` in ``where``).
    """

    labels: tuple[str, ...] = ()
    path_prefixes: tuple[str, ...] = ()
    where: str | None = None
    params: tuple[tuple[str, object], ...] = ()

    @classmethod
    def make(cls, label=None, path_prefix=None, where: str | None = None, params=None) -> "Filter | None":
        """A checked filter from loose arguments; ``None`` when none is given.

        Args:
            label: A label or a list of labels (any of them).
            path_prefix: A path prefix or a list of them (any of them).
            where: SQL condition (see the class).
            params: ``{name: value}`` or ``["name=value", ...]``.

        Raises:
            InputError: A bad value, a ``where`` with ``;`` or too long, parameters without ``where``.
        """
        labels = _strings(label, "--label")
        prefixes = _strings(path_prefix, "--path-prefix")
        pairs = parse_params(params)
        if where is not None:
            if not isinstance(where, str):
                raise InputError(f"--where must be a string (an SQL condition); got {where!r}")
            where = where.strip()
            if not where:
                raise InputError("--where is empty; give a condition such as \"length > 1000\" or leave it out")
            if len(where) > FILTER_WHERE_MAX_CHARS:
                raise InputError(f"--where has {len(where):,} characters, more than {FILTER_WHERE_MAX_CHARS:,}; "
                                 "shorten the condition")
            if ";" in where or "\x00" in where:
                raise InputError(f"--where {where!r} holds ';' (or a NUL): it must be one condition, not "
                                 "statements; pass a value containing ';' as a parameter (:name, --param name=VALUE)")
            if not _balanced(where):
                raise InputError(f"--where {where!r} closes a parenthesis it did not open (or leaves one open): "
                                 "it must be one condition; balance its parentheses")
            for name, _ in pairs:
                if not re.search(rf"[:@$]{name}(?![A-Za-z0-9_])", where):
                    raise InputError(f"parameter {name!r} is not used by --where {where!r}; write :{name} in the "
                                     "condition or drop the --param")
        elif pairs:
            raise InputError("--param gives values to a --where condition; add --where (e.g. \"label = :l\")")
        if not (labels or prefixes or where):
            return None
        return cls(labels, prefixes, where, pairs)

    def describe(self) -> str:
        """The filter in words, for messages."""
        parts = []
        if self.labels:
            parts.append("label " + " or ".join(repr(v) for v in self.labels))
        if self.path_prefixes:
            parts.append("path prefix " + " or ".join(repr(v) for v in self.path_prefixes))
        if self.where:
            given = ", ".join(f"{n}={v!r}" for n, v in self.params)
            parts.append(f"where {self.where!r}" + (f" ({given})" if given else ""))
        return " and ".join(parts)

    def to_dict(self) -> dict:
        """JSON-ready form (the server echoes it)."""
        return {"label": list(self.labels), "path_prefix": list(self.path_prefixes), "where": self.where,
                "params": dict(self.params)}


#: What the parenthesis count of a condition skips (quotes, quoted names, comments) and what it counts.
_SQL_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`(?:[^`]|``)*`|\[[^\]]*\]|--[^\n]*|/\*.*?\*/|[()]",
                         re.DOTALL)


def _balanced(where: str) -> bool:
    """True when ``where``'s parentheses outside quotes and comments balance, never closing one not opened.

    The condition is ANDed with the filter's other parts inside one
    statement: ``1) OR (1`` would otherwise escape its parentheses and undo
    them. The parentheses after a quote or comment left open are counted
    (the condition is refused or SQLite reports the quote).
    """
    depth = 0
    for token in _SQL_TOKENS.finditer(where):  # a quote or comment is one token, skipped
        if token.group() == "(":
            depth += 1
        elif token.group() == ")":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


class FilterResolver:
    """Resolves filters to positions over an opened index's item tables (one per retriever).

    Every part of a filter runs as one SQL statement per segment's table
    (:meth:`~retrieval.storage.segments.Items.filtered`), which reads the
    kept rows through the table's indexes on ``label`` and ``path``; the
    last :data:`~retrieval.config.FILTER_CACHE_ENTRIES` answers are kept
    (the retriever makes a new resolver when the index changes).

    Args:
        items: The index's :class:`~retrieval.storage.segments.Items`.
    """

    def __init__(self, items) -> None:
        self.items = items
        self._label_names: list[str] | None = None
        self._cache: OrderedDict = OrderedDict()

    def label_names(self) -> list[str]:
        """The labels of the index, sorted (for messages)."""
        if self._label_names is None:
            self._label_names = sorted({str(v) for v in self.items.labels() if v is not None})
        return self._label_names

    def positions(self, flt: Filter) -> np.ndarray:
        """Sorted positions of the items ``flt`` keeps (removed items never).

        Raises:
            InputError: The ``where`` condition is not valid SQL over the item
                table, reads anything else, or misses a parameter.
        """
        if flt in self._cache:
            self._cache.move_to_end(flt)
            return self._cache[flt]
        try:
            found = self.items.filtered(flt.labels, flt.path_prefixes, flt.where, dict(flt.params),
                                        FILTER_WHERE_SECONDS)
        except ConditionError as exc:
            raise _where_error(flt, exc) from None
        self._cache[flt] = found
        while len(self._cache) > FILTER_CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return found

    def no_match(self, flt: Filter, index_name: str) -> NoMatchingItems:
        """The error of a filter that keeps nothing, naming what would fix it."""
        hint = ""
        if flt.labels:
            unknown = [v for v in flt.labels if v not in self.label_names()]
            if unknown:
                names = self.label_names()
                shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
                hint = (f"; index {index_name!r} has no label {unknown[0]!r}" +
                        (f" (its labels: {shown})" if names else " (its items have no labels)"))
        return NoMatchingItems(f"no item of index {index_name!r} matches the filter ({flt.describe()}){hint}; "
                               "loosen or remove the filter")


def _where_error(flt: Filter, exc: ConditionError) -> InputError:
    message = str(exc)
    where = flt.where or ""
    if "not authorized" in message or "prohibited" in message:
        return InputError(f"--where {where!r} is refused: a condition may only read the columns of the item table "
                          f"and call SQL functions (no other table, statement, pragma or write); {_WHERE_HELP}")
    if "interrupted" in message:
        return InputError(f"--where {where!r} ran longer than {FILTER_WHERE_SECONDS:g} s and was stopped; "
                          "simplify the condition")
    if "binding" in message or "supply a value" in message:
        return InputError(f"--where {where!r} needs a parameter that was not given ({message}); "
                          "add --param NAME=VALUE for each :NAME")
    return InputError(f"--where {where!r} is not a valid condition on the item table ({message}); {_WHERE_HELP}")
