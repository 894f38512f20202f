"""High-level operations, one per CLI command (the CLI only parses and prints)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .build import build_docs_index, build_images_index
from .config import DocsConfig, ImagesConfig
from .crawl import CrawlConfig, crawl
from .errors import IndexFormatError, InputError
from .evaluate import evaluate_index, load_queries
from .plots import corpus_map, plot_pr_curves
from .progress import Progress, RichProgress
from .search import Hit, Retriever
from .store import Store
from .update import UpdateReport, add_items, outliers, remove_items, retrain, sync_items

__all__ = ["CrawlConfig", "DocsConfig", "ImagesConfig", "QueryResult", "Retriever", "RichProgress", "Store",
           "UpdateReport", "add_items", "build_docs_index", "build_images_index", "corpus_map", "crawl",
           "crawl_cache_folder", "index_info", "list_indexes", "outliers", "outlier_sheet", "remove_items",
           "retrain", "run_demo", "run_evaluation", "run_query", "search", "sync_items"]


@dataclass
class QueryResult:
    """Hits of a query and how novel the query is (see :meth:`Retriever.novelty`)."""

    hits: list[Hit]
    novelty: dict | None


def run_query(store: Store, name: str, query: str | None = None, **options) -> list[Hit]:
    """The hits of :func:`search` (same arguments)."""
    return search(store, name, query, **options).hits


def search(store: Store, name: str, query: str | None = None, *, file: Path | None = None,
           like: str | None = None, k: int = 10, method: str | None = None, show: Path | None = None,
           strip: str | None = None, rerank: str | None = None, shortlist: int | None = None,
           radius: int | None = None) -> QueryResult:
    """Answer one query given exactly one of text/image, ``file`` or ``like``.

    For image indexes ``query`` is a path or http(s) URL; ``show`` writes a
    contact sheet of the query and its hits. ``rerank``, ``shortlist`` and
    ``radius`` drive two-stage search on binary codes (see
    :meth:`Retriever.rank`). The result also says how novel the query is.
    """
    two_stage = {"rerank": rerank, "shortlist": shortlist, "radius": radius}
    given = [x for x in (query, file, like) if x is not None]
    if len(given) != 1:
        raise InputError("give exactly one query: QUERY (text, image path or URL), --file PATH or --like ID")
    retriever = Retriever(name, store)
    image = None
    if like is not None:
        hits = retriever.query_like(like, k, method, **two_stage)
        novelty = _stored_novelty(retriever, like)
        if retriever.modality == "images":
            image = retriever.inputs()[retriever.metadata.position(like)][None]
    elif retriever.modality == "docs":
        from .corpus import read_text_file

        text = read_text_file(file, strip=strip) if file is not None else query
        hits = retriever.query_text(text, k, method, **two_stage)
        novelty = next(iter(retriever.novelty(retriever.vectorize([text]), [text])), None)
    else:
        image = retriever.load_query_image(str(file if file is not None else query))
        hits = retriever.search_inputs(image, k, method, **two_stage)[0]
        novelty = next(iter(retriever.novelty(image)), None)
    if show is not None:
        _contact_sheet(retriever, hits, show, image)
    return QueryResult(hits, novelty)


def _stored_novelty(retriever: Retriever, item_id: str) -> dict | None:
    from . import novelty

    try:
        scores, reference = novelty.load(retriever.folder)
    except IndexFormatError:
        return None
    score = scores[retriever.metadata.position(item_id)]
    return {"score": float(score), "percentile": float(novelty.percentile(reference, score))}


def _contact_sheet(retriever: Retriever, hits: list[Hit], out: Path, image) -> None:
    """The query image (already decoded, or downloaded: never fetched twice) beside its hits."""
    from .images import make_contact_sheet

    if retriever.modality != "images":
        raise InputError("--show draws images; this index holds documents")
    pixels = retriever.inputs()
    captions = [f"{h.score:.3f} {h.label or ''}".strip() for h in hits]
    make_contact_sheet(image[0], [pixels[h.position] for h in hits], captions, Path(out).expanduser())


def outlier_sheet(store: Store, name: str, rows: list[dict], out: Path) -> Path:
    """Contact sheet of outlier images: each original beside its reconstruction."""
    from .images import make_contact_sheet

    retriever = Retriever(name, store)
    if retriever.modality != "images":
        raise InputError("--show draws images; this index holds documents")
    pixels = retriever._require_inputs("--show")[[r["position"] for r in rows]]
    recon = retriever.method("ae")[0].reconstruct(pixels)
    tiles, captions = [], []
    for row, original, rebuilt in zip(rows, pixels, recon):
        tiles += [original, rebuilt]
        captions += [f"#{row['rank']} {row['percentile']:.0f}%\n{row['label'] or ''}", "reconstruction"]
    return make_contact_sheet(pixels[0], tiles, captions, Path(out).expanduser(), query_caption="most novel")


def run_evaluation(store: Store, name: str, queries: str, *, labels_from_folders: bool = False,
                   strip: str | None = None, k: int = 100, methods: list[str] | None = None,
                   limit: int | None = None, plot: Path | None = None, shortlist: int | None = None,
                   progress: Progress | None = None) -> dict:
    """Evaluate index ``name`` on labelled queries, record it in the manifest.

    Returns:
        The report of :func:`retrieval.evaluate.evaluate_index`.
    """
    retriever = Retriever(name, store)
    if plot is not None:
        from .plots import _check_png

        _check_png(plot)  # fail before the evaluation, not after
    q = load_queries(retriever, queries, labels_from_folders=labels_from_folders, strip=strip, limit=limit)
    report = evaluate_index(retriever, q, k=k, methods=methods, curves=plot is not None, shortlist=shortlist,
                            progress=progress)
    if plot is not None:
        plot_pr_curves(report, plot)
    record = {key: report[key] for key in ("index", "queries", "k", "methods")}
    record["query_source"] = str(queries)

    def update(manifest: dict) -> None:
        manifest["evaluation"] = record

    store.update_manifest(name, update)
    return report


def list_indexes(store: Store) -> list[dict]:
    """One summary row per index."""
    rows = []
    for name in store.names():
        m = store.read_manifest(name)
        rows.append({"name": name, "modality": m.get("modality"), "items": m.get("counts", {}).get("items"),
                     "methods": list(m.get("methods", {})), "created_at": m.get("created_at", "")})
    return rows


def index_info(store: Store, name: str) -> dict:
    """Manifest, folder and disk usage of an index."""
    usage = store.disk_usage(name)
    return {"path": str(store.path(name)), "disk_bytes": sum(usage.values()), "files": usage,
            "manifest": store.read_manifest(name)}


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


