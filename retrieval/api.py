"""The public Python face: :class:`Index`, and one function per CLI command (the CLI only parses and prints).

Three lines index data already in memory::

    from retrieval import Index
    idx = Index.build_docs(["first text", "second text", ...], labels=[...], name="notes")
    idx.search("a query", k=5)

``Index.open("notes")`` reopens it later; ``idx.add(...)`` and
``idx.remove(ids)`` change it without retraining. Images go in as arrays,
file paths or encoded bytes (``Index.build_images``).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from urllib.parse import urlparse

from .config import DUPLICATES_CANDIDATES, DUPLICATES_RATIO, DUPLICATES_SHEET_GROUPS, DUPLICATES_THRESHOLD
from .config import DEFAULT_K, EVALUATE_K, OUTLIERS_K, QUERY_FIELDS, SHORTLIST_RANGE, DocsConfig, ImagesConfig, Range
from .config import EXPLAIN_HIT_WORDS, GENERATE_MAPS, GENERATE_SEED, MAP_EPOCHS, MAP_MAX_ITEMS, TOP_WORDS
from .engines import open_engine
from .errors import HomeNotWritable, InputError, RetrievalError, RetrievalWarning
from .modality import DOCS, IMAGES, Modality
from .progress import Progress, RichProgress
from .search import Hit, Retriever, check_k
from .search.filters import Filter, NoMatchingItems
from .sources.files import json_line
from .storage import Store
from .writer import CompactReport, UpdateReport, add_items, build_index, compact, remove_items, retrain, sync_items

__all__ = ["CompactReport", "DocsConfig", "Filter", "ImagesConfig", "Index", "NoMatchingItems", "QueryResult", "Retriever", "RichProgress", "Store",
           "UpdateReport", "add_items", "build_docs_index", "compact", "build_images_index", "corpus_map", "crawl",
           "check_duplicate", "duplicates",
           "crawl_cache_folder", "index_info", "list_indexes", "number_records", "open_engine", "outliers", "outlier_sheet",
           "remove_items", "retrain", "run_demo", "run_evaluation", "search", "search_batch", "self_check_summary",
           "sync_items", "upgrade_index"]


def __getattr__(name: str):
    # The crawler pulls in httpx; only commands that crawl pay for it.
    if name in ("CrawlConfig", "crawl"):
        from .sources import crawl as crawler

        return getattr(crawler, name)
    raise AttributeError(name)


def build_docs_index(source, name: str, config: DocsConfig | None = None, *, store: Store | None = None,
                     force: bool = False, progress: Progress | None = None, engine=None) -> dict:
    """Build a document index from a folder, archive or JSONL file (or a corpus read already).

    ``engine``: ``None`` (encode here) or a started engine (:func:`open_engine`).

    Returns:
        The manifest written.
    """
    return build_index(DOCS, source, name, config, store=store, force=force, progress=progress, engine=engine)


def build_images_index(source, name: str, config: ImagesConfig | None = None, *, store: Store | None = None,
                       force: bool = False, progress: Progress | None = None, engine=None) -> dict:
    """Build an image index from a folder, a crawl folder or an IDX file (or a corpus read already).

    ``engine``: ``None`` (encode here) or a started engine (:func:`open_engine`).

    Returns:
        The manifest written.
    """
    return build_index(IMAGES, source, name, config, store=store, force=force, progress=progress, engine=engine)


@dataclass
class QueryResult:
    """Hits of a query and how novel the query is (see :meth:`Retriever.novelty`)."""

    hits: list[Hit]
    novelty: dict | None
    #: ``query --explain``: per hit, the words the decoder favours for both codes (:func:`retrieval.generate.explain`).
    why: list[dict] | None = None


def search(store: Store, name: str, query=None, *, file: Path | None = None, like: str | None = None,
           k: int = DEFAULT_K, method: str | None = None, show: Path | None = None, strip: str | None = None,
           rerank: str | None = None, shortlist: int | None = None, radius: int | None = None,
           explain: bool = False, label=None, path_prefix=None, where: str | None = None,
           params=None) -> QueryResult:
    """Answer one query given exactly one of ``query`` (text or image), ``file`` or ``like``.

    For image indexes ``query`` is a path or http(s) URL; ``show`` writes a
    contact sheet of the query and its hits. ``rerank``, ``shortlist`` and
    ``radius`` drive two-stage search on binary codes (see
    :meth:`Retriever.rank`). ``label``, ``path_prefix``, ``where`` and
    ``params`` restrict the hits to the items they keep, before the search
    (see :meth:`Filter.make`). The result also says how novel the query is.

    Raises:
        NoMatchingItems: The filter keeps no item.
    """
    given = [x for x in (query, file, like) if x is not None]
    if len(given) != 1:
        raise InputError("give exactly one query: QUERY (text, image path or URL), --file PATH or --like ID")
    flt = Filter.make(label, path_prefix, where, params)
    with Retriever(name, store) as retriever:
        result = _answer(retriever, query, file=file, like=like, k=k, method=method, show=show, strip=strip,
                         rerank=rerank, shortlist=shortlist, radius=radius, filter=flt)
        if explain:
            from . import generate as gen

            text = _read_query_file(retriever.modality, file, strip) if file is not None else query
            result.why = gen.explain(retriever, [h.id for h in result.hits], query=None if like else text, like=like,
                                     k=EXPLAIN_HIT_WORDS)
        return result


def _answer(retriever: Retriever, query=None, *, file=None, like=None, k=DEFAULT_K, method=None, show=None, strip=None,
            rerank=None, shortlist=None, radius=None, novelty: bool = True, filter: Filter | None = None) -> QueryResult:
    two_stage = {"rerank": rerank, "shortlist": shortlist, "radius": radius, "filter": filter}
    if show is not None and retriever.modality is not IMAGES:
        raise InputError(f"--show draws images; index {retriever.name!r} holds {retriever.modality.noun}")
    if like is not None:
        hits = retriever.like(like, k, method, **two_stage)
        score = retriever.stored_novelty(like) if novelty else None
        image = retriever.inputs("--like")[retriever.metadata.position(like)]
    else:
        if file is not None:
            query = _read_query_file(retriever.modality, file, strip)
        inputs = retriever.query_inputs([query])  # decoded (or downloaded) once, for hits and sheet alike
        hits = retriever.search_inputs(inputs, k, method, **two_stage)[0]
        # Novelty runs the autoencoder and its decoder: only when the caller shows it.
        score = next(iter(retriever.novelty(inputs, [query])), None) if novelty else None
        image = inputs[0]
    if show is not None:
        from .plots import make_contact_sheet

        pixels = retriever.inputs("--show")
        captions = [f"{h.score:.3f} {h.label or ''}".strip() for h in hits]
        make_contact_sheet(image, [pixels[h.position] for h in hits], captions, Path(show).expanduser())
    return QueryResult(hits, score)


def _read_query_file(modality: Modality, file, strip):
    """A query given as a file: its text for documents, the path itself for images."""
    if modality is DOCS:
        from .sources.documents import read_text_file

        return read_text_file(file, strip=strip)
    return str(file)


#: The fields of a hit in JSON results (``query --batch``, the server).
HIT_FIELDS = ("rank", "id", "score", "label", "title", "snippet", "url", "path")
#: The keys a ``query --batch`` line may hold: one query kind, and per-query options.
_BATCH_KINDS, _BATCH_OPTIONS = ("text", "image", "like"), ("k", "method")
#: The filter keys of a ``query --batch`` line (they replace the command's own filter options).
_BATCH_FILTER = ("label", "path_prefix", "where", "params")


def search_batch(store: Store, name: str, lines: Iterable[str], *, k: int = DEFAULT_K, method: str | None = None,
                 rerank: str | None = None, shortlist: int | None = None,
                 radius: int | None = None, label=None, path_prefix=None, where: str | None = None,
                 params=None) -> Iterator[dict]:
    """Answer JSON-lines queries with the index loaded once.

    Each non-blank line is a JSON object with exactly one of ``"text"`` (a
    document index), ``"image"`` (a path or http(s) URL; an image index) or
    ``"like"`` (an indexed item id), and optionally ``"k"`` and ``"method"``
    overriding the arguments, and a filter: ``"label"``, ``"path_prefix"``
    (a string or a list), ``"where"`` and ``"params"`` (an object); a line
    with any of them has that filter instead of the arguments' one. A bad
    line, or one whose filter keeps nothing, does not stop the others.

    Yields:
        Per non-blank line, ``{"line": n, "hits": [...], "novelty": {...} or None}``
        (hits with :data:`HIT_FIELDS`), or ``{"line": n, "error": message}``.
    """
    default_filter = Filter.make(label, path_prefix, where, params)
    with Retriever(name, store) as retriever:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                spec = _batch_line(line, retriever.modality)
                kind = next(key for key in _BATCH_KINDS if key in spec)
                flt = default_filter
                if any(key in spec for key in _BATCH_FILTER):
                    flt = Filter.make(*(spec.get(key) for key in _BATCH_FILTER))
                result = _answer(retriever, None if kind == "like" else spec[kind], like=spec.get("like"),
                                 k=spec.get("k", k), method=spec.get("method", method), rerank=rerank,
                                 shortlist=shortlist, radius=radius, filter=flt)
            except RetrievalError as exc:
                yield {"line": number, "error": f"line {number}: {exc}"}
                continue
            novelty = None if result.novelty is None else \
                {key: float(value) if isinstance(value, (int, float)) else value for key, value in result.novelty.items()}
            yield {"line": number, "hits": [{f: getattr(h, f) for f in HIT_FIELDS} for h in result.hits],
                   "novelty": novelty}


def _batch_line(line: str, modality: Modality) -> dict:
    """Parse and check one ``query --batch`` line (InputError names the fix)."""
    try:
        spec = json_line(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"not JSON ({exc.msg})") from None
    if not isinstance(spec, dict):
        raise InputError(f"expected a JSON object such as {{\"text\": \"...\"}}")
    unknown = sorted(set(spec) - set(_BATCH_KINDS) - set(_BATCH_OPTIONS) - set(_BATCH_FILTER))
    if unknown:
        raise InputError(f"unknown key {unknown[0]!r}; use one of "
                         f"{', '.join(_BATCH_KINDS + _BATCH_OPTIONS + _BATCH_FILTER)}")
    if "params" in spec and spec["params"] is not None and not isinstance(spec["params"], dict):
        raise InputError("\"params\" must be an object such as {\"n\": 100}")
    kinds = [key for key in _BATCH_KINDS if key in spec]
    if len(kinds) != 1:
        raise InputError("give exactly one of \"text\", \"image\" or \"like\"")
    wanted = "text" if modality.text_queries else "image"
    if kinds[0] not in ("like", wanted):
        raise InputError(f"index holds {modality.noun}; give \"{wanted}\" or \"like\", "
                         f"not \"{kinds[0]}\"")
    if not isinstance(spec[kinds[0]], str):
        raise InputError(f"\"{kinds[0]}\" must be a string")
    if "method" in spec and not isinstance(spec["method"], str):
        raise InputError("\"method\" must be a string")
    if "k" in spec:
        try:
            check_k(spec["k"])
        except InputError:
            raise InputError(f"\"k\" must be a positive integer; got {spec['k']!r}") from None
    return spec


def outliers(store: Store, name: str, k: int = OUTLIERS_K) -> list[dict]:
    """The ``k`` items the autoencoder reconstructs worst (see :meth:`Retriever.outliers`)."""
    with Retriever(name, store) as retriever:
        return retriever.outliers(k)


def outlier_sheet(store: Store, name: str, rows: list[dict], out: Path) -> Path:
    """Contact sheet of outlier images: each original beside its reconstruction."""
    from .plots import make_contact_sheet

    with Retriever(name, store) as retriever:
        if retriever.modality is not IMAGES:
            raise InputError(f"--show draws images; index {name!r} holds {retriever.modality.noun}")
        pixels = retriever.inputs("--show")[[r["position"] for r in rows]]
        recon = retriever.method("ae")[0].reconstruct(pixels)
    tiles, captions = [], []
    for row, original, rebuilt in zip(rows, pixels, recon):
        tiles += [original, rebuilt]
        captions += [f"#{row['rank']} {row['percentile']:.0f}%\n{row['label'] or ''}", "reconstruction"]
    return make_contact_sheet(pixels[0], tiles, captions, Path(out).expanduser(), query_caption="most novel")


def duplicates(store: Store, name: str, *, threshold: float | None = None, candidates: int | None = None,
               radius: float | None = None, method: str | None = None, show: Path | None = None,
               max_groups: int = DUPLICATES_SHEET_GROUPS, ratio: float | None = None):
    """Groups of near-duplicate items of an index (:class:`~retrieval.search.duplicates.DuplicateFinder`).

    ``show`` writes a contact sheet of the first ``max_groups`` groups (image indexes).
    """
    from .search.duplicates import DuplicateFinder

    with Retriever(name, store) as retriever:
        if show is not None and retriever.modality is not IMAGES:
            raise InputError(f"--show draws images; index {name!r} holds {retriever.modality.noun}")
        found = DuplicateFinder(retriever, method).groups(
            DUPLICATES_THRESHOLD if threshold is None else threshold,
            DUPLICATES_CANDIDATES if candidates is None else candidates, radius,
            DUPLICATES_RATIO if ratio is None else ratio)
        if show is not None:
            from .plots import make_group_sheet

            pixels = retriever.inputs("--show")
            shown = found.groups[:max_groups]
            make_group_sheet([[pixels[d.position] for d in g] for g in shown],
                             [[f"{d.score:.3f} {d.id}" for d in g] for g in shown], Path(show).expanduser())
        return found


def check_duplicate(store: Store, name: str, file, *, threshold: float | None = None,
                    candidates: int | None = None, method: str | None = None, show: Path | None = None,
                    ratio: float | None = None):
    """The stored near-duplicates of one new file (an image path or URL; a text file for documents)."""
    from .search.duplicates import DuplicateFinder

    with Retriever(name, store) as retriever:
        if show is not None and retriever.modality is not IMAGES:
            raise InputError(f"--show draws images; index {name!r} holds {retriever.modality.noun}")
        query = _read_query_file(retriever.modality, Path(file).expanduser(), None)
        result = DuplicateFinder(retriever, method).check(
            query, DUPLICATES_THRESHOLD if threshold is None else threshold,
            DUPLICATES_CANDIDATES if candidates is None else candidates, name=str(file),
            ratio=DUPLICATES_RATIO if ratio is None else ratio)
        if show is not None:
            from .plots import make_contact_sheet

            pixels = retriever.inputs("--show")
            make_contact_sheet(retriever.query_inputs([query])[0], [pixels[m.position] for m in result.matches],
                               [f"{m.score:.3f} {m.id}" for m in result.matches], Path(show).expanduser(),
                               query_caption="checked file")
        return result


def run_evaluation(store: Store, name: str, queries, *, labels_from_folders: bool = False,
                   strip: str | None = None, k: int = EVALUATE_K, methods: list[str] | None = None,
                   limit: int | None = None, plot: Path | None = None, shortlist: int | None = None,
                   query_field: str = QUERY_FIELDS[0], progress: Progress | None = None) -> dict:
    """Evaluate index ``name`` on labelled queries, record it in the manifest.

    ``query_field`` is the part of each query document that is the query
    (``text``, ``title`` or ``first-line``; see :func:`retrieval.evaluate.load_queries`).

    On a read-only index home the report is still returned; a
    :class:`~retrieval.errors.RetrievalWarning` says it was not recorded.

    Returns:
        The report of :func:`retrieval.evaluate.evaluate_index`.
    """
    from .evaluate import evaluate_index, load_queries

    Range("--limit", 1, optional=True).check(limit)
    SHORTLIST_RANGE.check(shortlist)  # here too: a float index never reaches the shortlist

    if plot is not None:
        from .plots import _check_png

        _check_png(plot)  # fail before the evaluation, not after
    with Retriever(name, store) as retriever:
        q = load_queries(retriever, queries, labels_from_folders=labels_from_folders, strip=strip, limit=limit,
                         query_field=query_field)
        report = evaluate_index(retriever, q, k=k, methods=methods, curves=plot is not None, shortlist=shortlist,
                                progress=progress)
    if plot is not None:
        from .plots import plot_pr_curves

        plot_pr_curves(report, plot)
    record = {key: report[key] for key in ("index", "queries", "query_field", "k", "methods")}
    record["query_source"] = str(queries)

    def update(manifest: dict) -> None:
        manifest["evaluation"] = record

    try:
        store.update_manifest(name, update)
    except HomeNotWritable as exc:
        warnings.warn(f"the evaluation of {name!r} was not recorded in its manifest: {exc}", RetrievalWarning,
                      stacklevel=2)
    return report


def self_check_summary(entry: dict | None) -> str:
    """One printable line of a manifest's ``self_check`` entry (see :mod:`retrieval.selfcheck`)."""
    from .selfcheck import summary

    return summary(entry)


def corpus_map(retriever: Retriever, out: Path, **options) -> Path:
    """The 2-D map of an index (see :func:`retrieval.plots.corpus_map`)."""
    from .plots import corpus_map as draw

    # The autoencoders refuse fewer than 4 items.
    Range("--max-items", 4).check(options.get("max_items", 4))
    Range("--epochs", 1).check(options.get("epochs", 1))
    return draw(retriever, out, **options)


def generate(store: Store, name: str, query: str | None = None, *, grid: bool = False,
             between: tuple[str, str] | None = None, sample: int | None = None, like: str | None = None,
             out: Path | None = None, steps: int | None = None, k: int = TOP_WORDS, map: str = GENERATE_MAPS[0],
             max_items: int = MAP_MAX_ITEMS, epochs: int = MAP_EPOCHS, seed: int = GENERATE_SEED):
    """The decoder as a generator (:mod:`retrieval.generate`), given exactly one of ``grid``,
    ``between``, ``sample``, ``like`` or ``query`` (a text: its top words)."""
    from . import generate as gen

    given = [opt for opt, value in (("--grid", grid or None), ("--between", between), ("--sample", sample),
                                    ("--like", like), ("QUERY", query)) if value is not None]
    if len(given) != 1:
        raise InputError("give exactly one of --grid, --between ID1 ID2, --sample N, --like ID or a query text"
                         + (f"; got {' and '.join(given)}" if given else ""))
    with Retriever(name, store) as retriever:
        if grid:
            if out is None:
                raise InputError("--grid draws a picture; pass --out FILE.png")
            return gen.grid(retriever, out, steps=steps or gen.GENERATE_GRID_STEPS, map=map, max_items=max_items,
                            epochs=epochs, seed=seed)
        if between is not None:
            return gen.between(retriever, *between, steps=steps or gen.GENERATE_PATH_STEPS, out=out, k=k)
        if sample is not None:
            if out is None:
                raise InputError("--sample draws pictures; pass --out FILE.png")
            return gen.sample(retriever, sample, out, max_items=max_items, seed=seed)
        return gen.words(retriever, query=query, like=like, k=k)


def explain(store: Store, name: str, query: str | None = None, *, hits: list[str], query_item: str | None = None,
            k: int = TOP_WORDS) -> list[dict]:
    """Why ``query`` (a text, or the indexed item ``query_item``) matches each of ``hits``
    (item ids): see :func:`retrieval.generate.explain`."""
    from . import generate as gen

    if not hits:
        raise InputError("name the hit to explain: --like ID (repeatable)")
    with Retriever(name, store) as retriever:
        return gen.explain(retriever, hits, query=query, like=query_item, k=k)


def list_indexes(store: Store) -> list[dict]:
    """One summary row per index, a damaged one included.

    Each manifest is read and checked with the presence and size of every
    file (a truncated or missing file shows; a changed byte shows when the
    index is opened or given to :func:`index_info`, which hash every file).

    Returns:
        Rows of ``name``, ``modality``, ``items``, ``methods``, ``created_at``,
        ``format_version`` and ``error``: ``None``, or for a damaged index what
        is wrong and the fix (its other fields are then ``None``).
    """
    from .storage import read_raw_manifest, verify_index

    rows = []
    for name in store.names():
        try:
            folder = store.require(name)
            m = read_raw_manifest(folder)  # as on disk: "format_version" 1 until upgraded
            verify_index(folder, m, hashes=False)
            rows.append({"name": name, "modality": m.get("modality"), "items": m.get("counts", {}).get("items"),
                         "methods": list(m.get("methods", {})), "created_at": m.get("created_at", ""),
                         "format_version": m["format_version"], "error": None})
        except (RetrievalError, OSError, AttributeError, TypeError) as exc:
            # One damaged index must not hide the others: it gets a row saying what is wrong.
            problem = str(exc) if isinstance(exc, RetrievalError) else f"its manifest is unreadable ({exc})"
            rows.append({"name": name, "modality": None, "items": None, "methods": [], "created_at": None,
                         "format_version": None, "error": f"{problem}; or delete it with 'retrieval remove {name}'"})
    return rows


def index_info(store: Store, name: str) -> dict:
    """Manifest, folder and disk usage of an index, after the checks of opening it.

    Raises:
        IndexFormatError: The index is damaged (a file modified, truncated,
            missing or added; see :func:`~retrieval.storage.verify_index`).
    """
    from .storage import FORMAT_VERSION, migrate, read_raw_manifest, verify_index

    folder = store.require(name)
    raw = read_raw_manifest(folder)
    verify_index(folder, raw)  # as opening it does: a damaged index must not look healthy
    usage = store.disk_usage(name)
    return {"path": str(store.path(name)), "disk_bytes": sum(usage.values()), "files": usage,
            "format_on_disk": raw["format_version"], "format_current": FORMAT_VERSION, "manifest": migrate(raw)}


def upgrade_index(store: Store, name: str) -> dict:
    """Rewrite an older-format index in the current format, in place (see :meth:`Store.upgrade`).

    Returns:
        ``{"name", "from", "to"}``: the format versions before and after.
    """
    from .storage import read_raw_manifest

    before = read_raw_manifest(store.require(name))["format_version"]
    after = store.upgrade(name)["format_version"]
    return {"name": name, "from": before, "to": after}


def crawl_cache_folder(store: Store, url: str) -> Path:
    """The cache folder a URL is crawled into before indexing."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InputError(f"{url!r} is not an http(s) URL")
    digest = hashlib.sha256(url.encode()).hexdigest()[:10]
    return store.root / ".crawl-cache" / f"{parsed.netloc.replace(':', '_')}-{digest}"


def run_demo(store: Store, part: str = "all", progress: Progress | None = None):
    """Yield the demo's sections (see :mod:`retrieval.demo`)."""
    from .demo import run

    yield from run(store, part=part, progress=progress)


# -- the object API ------------------------------------------------------------------
def _records(data, labels=None, ids=None, titles=None, key: str = "text") -> list:
    """Merge parallel ``labels`` / ``ids`` / ``titles`` lists into the records of ``data``."""
    if isinstance(data, (str, bytes, dict)):
        raise InputError(f"give a list of items, not a single {type(data).__name__}")
    records = list(data)
    for extra, name in ((labels, "label"), (ids, "id"), (titles, "title")):
        if extra is None:
            continue
        extra = list(extra)
        if len(extra) != len(records):
            raise InputError(f"{len(records)} items but {len(extra)} {name}s; give one {name} per item")
        records = [dict(r) | {name: v} if isinstance(r, dict) else {key: r, name: v}
                   for r, v in zip(records, extra)]
    return records


def number_records(records: list, ids: list[str], record_key: str) -> list[dict]:
    """Give records without an id the next free numbers: an add never replaces items by accident.

    Args:
        records: Items to add (dicts, or bare texts / images).
        ids: The ids already in the index.
        record_key: The field a bare item goes into (``text`` or ``image``).
    """
    numbers = [int(i) for i in ids if i.isdigit()]
    start = max(numbers, default=-1) + 1
    records = [r if isinstance(r, dict) else {record_key: r} for r in records]
    return [r if "id" in r else r | {"id": str(start + i)} for i, r in enumerate(records)]


class Index:
    """An index you can build, open, search and change from Python.

    Build from data in memory (or a path, as the CLI does), then search::

        idx = Index.build_docs(["a text", "another"], labels=["x", "y"], name="notes")
        idx.search("a query", k=5)

    Args:
        name: Index name.
        store: The store holding it (a :class:`Store` or a folder; default:
            ``$RETRIEVAL_HOME`` or the default home).
    """

    def __init__(self, name: str, store: Store | str | Path | None = None) -> None:
        self.store = store if isinstance(store, Store) else Store(store)
        self.name = name
        self._retriever = Retriever(name, self.store)

    @classmethod
    def open(cls, name: str, store: Store | str | Path | None = None) -> "Index":
        """Open an existing index."""
        return cls(name, store)

    @classmethod
    def _build(cls, modality: Modality, data, name, config, store, force, progress, overrides,
               labels=None, ids=None, titles=None) -> "Index":
        store = store if isinstance(store, Store) else Store(store)
        config = config or modality.config_class()
        known = {f.name for f in fields(config)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InputError(f"unknown option {unknown[0]!r} for {modality.noun}; the options are the fields of "
                             f"{type(config).__name__}: {', '.join(sorted(known))}")
        config = replace(config, **overrides)
        if isinstance(data, (str, Path)):
            source = data
        else:
            source = modality.from_memory(None, _records(data, labels, ids, titles, modality.record_key), config)
        build_index(modality, source, name, config, store=store, force=force, progress=progress)
        return cls(name, store)

    @classmethod
    def build_docs(cls, data, *, name: str, labels=None, ids=None, titles=None, config: DocsConfig | None = None,
                   store: Store | str | Path | None = None, force: bool = False,
                   progress: Progress | None = None, **options) -> "Index":
        """Build a document index.

        Args:
            data: Texts, or dicts with ``text`` and optional ``id``, ``title``,
                ``label``, ``path``, ``url``; or a folder / archive / JSONL path.
            name: Index name.
            labels: One label per text (enables :meth:`evaluate`).
            ids: One id per text (default ``"0"``, ``"1"``, ...).
            titles: One title per text (default: its first line).
            config: Build options; ``options`` override single fields
                (``code_dim=16``, ``epochs=5``, ...).
            store: Where to keep it.
            force: Replace an existing index of that name.
            progress: Progress callback.
        """
        return cls._build(DOCS, data, name, config, store, force, progress, options, labels, ids, titles)

    @classmethod
    def build_images(cls, data, *, name: str, labels=None, ids=None, titles=None,
                     config: ImagesConfig | None = None, store: Store | str | Path | None = None,
                     force: bool = False, progress: Progress | None = None, **options) -> "Index":
        """Build an image index; the arguments are those of :meth:`build_docs`.

        ``data`` is a ``(n, h, w[, c])`` array; or arrays, image file paths,
        encoded image bytes, or dicts with ``image`` and optional ``id``,
        ``label``, ``title``; or a folder / IDX file path.
        """
        return cls._build(IMAGES, data, name, config, store, force, progress, options, labels, ids, titles)

    # -- reading -------------------------------------------------------------------------
    @property
    def retriever(self) -> Retriever:
        """The underlying :class:`Retriever`."""
        return self._retriever

    @property
    def manifest(self) -> dict:
        self._retriever.refresh()
        return self._retriever.manifest

    def __len__(self) -> int:
        return int(self.manifest["counts"]["items"])

    @property
    def methods(self) -> list[str]:
        return self._retriever.methods

    def search(self, query, k: int = DEFAULT_K, *, method: str | None = None, rerank: str | None = None,
               shortlist: int | None = None, radius: int | None = None, label=None, path_prefix=None,
               where: str | None = None, params=None) -> list[Hit]:
        """The ``k`` items most similar to ``query`` (a text; an image array, path, URL or bytes).

        ``label`` / ``path_prefix`` (a string or a list: any of them), ``where``
        (an SQL condition on the item table's columns) and its ``params``
        (``{name: value}`` for ``:name``) keep only the items they match,
        before the search: ``idx.search("orbit", label="space")``,
        ``idx.search("orbit", where="length > :n", params={"n": 500})``.

        Raises:
            NoMatchingItems: The filter keeps no item.
        """
        flt = Filter.make(label, path_prefix, where, params)
        return _answer(self._retriever, query, k=k, method=method, rerank=rerank, shortlist=shortlist,
                       radius=radius, novelty=False, filter=flt).hits

    def like(self, item_id: str, k: int = DEFAULT_K, *, method: str | None = None, label=None, path_prefix=None,
             where: str | None = None, params=None) -> list[Hit]:
        """The ``k`` items most similar to an indexed item (the item itself left out); filters as :meth:`search`."""
        return self._retriever.like(item_id, k, method, filter=Filter.make(label, path_prefix, where, params))

    def novelty(self, query) -> dict | None:
        """How unlike the indexed items ``query`` is: reconstruction error and its percentile."""
        scores = self._retriever.novelty(self._retriever.query_inputs([query]), [query])
        return scores[0] if scores else None

    def outliers(self, k: int = OUTLIERS_K) -> list[dict]:
        """The ``k`` least typical items (see :meth:`Retriever.outliers`)."""
        return self._retriever.outliers(k)

    def duplicates(self, *, threshold: float = DUPLICATES_THRESHOLD, candidates: int = DUPLICATES_CANDIDATES,
                   radius: float | None = None, ratio: float = DUPLICATES_RATIO):
        """Groups of near-duplicate items (see :mod:`retrieval.search.duplicates`)."""
        return self._finder().groups(threshold, candidates, radius, ratio)

    def check_duplicate(self, query, *, threshold: float = DUPLICATES_THRESHOLD,
                        candidates: int = DUPLICATES_CANDIDATES, ratio: float = DUPLICATES_RATIO):
        """The stored near-duplicates of one new item (an image path, URL, bytes or array; a text)."""
        return self._finder().check(query, threshold, candidates, ratio=ratio)

    def _finder(self):
        # kept: repeated checks reuse the loaded codes and stored inputs
        if getattr(self, "_duplicate_finder", None) is None:
            from .search.duplicates import DuplicateFinder

            self._duplicate_finder = DuplicateFinder(self._retriever)
        return self._duplicate_finder

    def evaluate(self, queries, *, labels=None, titles=None, k: int = EVALUATE_K, methods: list[str] | None = None,
                 query_field: str = QUERY_FIELDS[0]) -> dict:
        """Every method side by side on labelled queries (in memory, or a path as for the CLI).

        Args:
            queries: Texts / images, or dicts with ``text`` (``image``),
                ``label`` and optional ``title``; or a folder of labelled
                sub-folders, an archive or JSONL.
            labels: One label per query (when ``queries`` does not carry them).
            titles: One title per query (documents; for ``query_field="title"``).
            k: Depth of the ranking scored.
            methods: Methods to compare (default: all).
            query_field: ``"text"`` (whole documents), ``"title"`` or
                ``"first-line"``: short queries (see :func:`retrieval.evaluate.load_queries`).

        Returns:
            ``{"query_field", "methods": {method: {"precision@10", "precision@k", "map@k", ...}}, ...}``.
        """
        from .evaluate import Queries, evaluate_index, load_queries

        r = self._retriever
        if isinstance(queries, (str, Path)):
            q = load_queries(r, queries, labels_from_folders=True, query_field=query_field)
        else:
            r.modality.check_query_field(query_field)
            batch = r.modality.from_memory(r.state, _records(queries, labels, titles=titles,
                                                             key=r.modality.record_key),
                                           r.modality.config_class())
            if any(it.label is None for it in batch.items):
                raise InputError("every query needs a label to be evaluated; pass labels=[...]")
            q = Queries.of_items(r, batch.items, batch.inputs, query_field=query_field)
        return evaluate_index(r, q, k=k, methods=methods)

    # -- changing ---------------------------------------------------------------------------
    def add(self, data, *, labels=None, ids=None, titles=None, replace: bool = False,
            progress: Progress | None = None) -> UpdateReport:
        """Encode new items with the stored models and add them (no retraining).

        Args:
            data: As for :meth:`build_docs` / :meth:`build_images`. Items
                without an id are numbered after the largest numeric id of
                the index; an item with an id already indexed replaces it
                when its content differs (from a folder outside the index's
                source only with ``replace``; see :func:`retrieval.writer.add_items`).
        """
        if not isinstance(data, (str, Path)):
            data = _records(data, labels, ids, titles, self._retriever.modality.record_key)
            if ids is None:
                data = self._number(data)
        return add_items(self.store, self.name, data, replace=replace, progress=progress)

    def _number(self, records: list) -> list:
        self._retriever.refresh()
        return number_records(records, self._retriever.metadata.ids(), self._retriever.modality.record_key)

    def remove(self, ids, *, allow_empty: bool = False) -> UpdateReport:
        """Remove items by id (every item only with ``allow_empty``)."""
        if isinstance(ids, str):
            ids = [ids]
        return remove_items(self.store, self.name, ids=list(ids), allow_empty=allow_empty)

    def retrain(self, progress: Progress | None = None) -> dict:
        """Refit every model on the items now indexed (see :func:`retrieval.writer.retrain`)."""
        return retrain(self.store, self.name, progress=progress)

    def compact(self) -> CompactReport:
        """Merge the index's segments into one (see :func:`retrieval.writer.compact`)."""
        return compact(self.store, self.name)

    def close(self) -> None:
        """Release the index's open files (``with contextlib.closing(Index.open(...))``)."""
        self._retriever.close()

    def __repr__(self) -> str:
        m = self._retriever.manifest
        return f"Index({self.name!r}, {m['modality']}, {m['counts']['items']} items, methods={self.methods})"
