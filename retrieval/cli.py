"""The ``retrieval`` command line: parse options, call the library, print.

Run as ``retrieval ...`` (console script), ``python -m retrieval ...`` or
``python cli.py ...`` from a checkout. Every library error becomes one
``error: ...`` line on stderr and exit code 1 (so do operating-system errors
such as a read-only folder); usage errors exit 2; warnings (skipped files,
...) become ``warning: ...`` lines.

Every default shown here is the library's: the build options read theirs from
:class:`~retrieval.config.DocsConfig`, :class:`~retrieval.config.ImagesConfig`
and :class:`~retrieval.config.CrawlConfig`, the others from the constants of
:mod:`retrieval.config`, as do the allowed values of the choice options.
"""
from __future__ import annotations

import enum
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from retrieval import config  # noqa: E402
from retrieval._lazy import LazyModule  # noqa: E402
from retrieval.config import DocsConfig, ImagesConfig  # noqa: E402
from retrieval.errors import InputError, RetrievalError, RetrievalWarning  # noqa: E402
from retrieval.config import CrawlConfig  # noqa: E402

#: The library (FAISS, SciPy, ...) loads with the first command that needs it: ``--help`` does not.
api = LazyModule("retrieval.api")

app = typer.Typer(help="Document and image retrieval with deep-autoencoder codes and FAISS.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
index_app = typer.Typer(help="Build an index from documents or images.", no_args_is_help=True)
app.add_typer(index_app, name="index")

out = Console()
err = Console(stderr=True)

LabelsAsBuilt = Annotated[Optional[bool], typer.Option("--labels-from-folders/--no-labels-from-folders", help="Label = sub-folder (default: as built).")]
IndexDir = Annotated[Optional[Path], typer.Option("--index-dir", help="Home of indexes (default: $RETRIEVAL_HOME or indexes/).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing index of that name.")]
Labels = Annotated[bool, typer.Option("--labels-from-folders", help="Label = first-level sub-folder name.")]
Bits = Annotated[Optional[int], typer.Option("--bits", help="Learn binary codes of this many bits (multiple of 8; semantic hashing) instead of float codes.")]
BinaryEpochs = Annotated[int, typer.Option("--binary-epochs", help="Epochs of binarised training after the float phase.")]
Quantize = Annotated[str, typer.Option("--quantize", help="vq: VQ-VAE codes, --groups bytes per item (each group one of --codebook learned vectors), searched with the query float; adds pq-ae and the PQ linear baseline at equal bytes. none: float codes.")]
Groups = Annotated[int, typer.Option("--groups", help="--quantize vq: groups of the code (bytes per item); divides --code-dim.")]
Codebook = Annotated[int, typer.Option("--codebook", help="--quantize vq: learned vectors per group (2-256).")]
VqEpochs = Annotated[int, typer.Option("--vq-epochs", help="--quantize vq: epochs of training through the quantiser after the float phase.")]
KeepInputs = Annotated[bool, typer.Option("--keep-inputs/--no-keep-inputs", help="Keep the TF-IDF matrix / pixels (for --like, --rerank, plot).")]
Shortlist = Annotated[int, typer.Option("--shortlist", help="Two-stage: Hamming shortlist size re-ranked.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed of everything.")]
CodeDim = Annotated[int, typer.Option("--code-dim", help="Autoencoder code dimension.")]
Epochs = Annotated[int, typer.Option("--epochs", help="Maximum training epochs.")]
Noise = Annotated[float, typer.Option("--noise", help="Denoising: input dropout rate.")]
TrainSample = Annotated[Optional[int], typer.Option(
    "--train-sample", help="Fit the models on a seeded random sample of this many items, then encode every item "
    "(0 = all).")]


def _choices(name: str, values: tuple[str, ...]) -> type[enum.Enum]:
    """A str-valued Enum of ``values``: typer lists them in --help, anything else is a usage error (exit 2)."""
    return enum.Enum(name, [(v, v) for v in values], type=str)


def _value(choice: enum.Enum | None) -> str | None:
    """The string of a choice option (``None`` stays ``None``)."""
    return None if choice is None else choice.value


StripChoice = _choices("StripChoice", config.STRIP_MODES)
PretrainChoice = _choices("PretrainChoice", config.PRETRAIN_MODES)
ColorChoice = _choices("ColorChoice", config.COLORS)
FitChoice = _choices("FitChoice", config.FITS)
DecoderChoice = _choices("DecoderChoice", config.DECODERS)
IndexKindChoice = _choices("IndexKindChoice", config.INDEX_KINDS)
DemoPartChoice = _choices("DemoPartChoice", config.DEMO_PARTS)
RerankChoice = _choices("RerankChoice", config.RERANKERS)
QueryFieldChoice = _choices("QueryFieldChoice", config.QUERY_FIELDS)
EngineChoice = _choices("EngineChoice", config.ENGINES)

IndexKind = Annotated[IndexKindChoice, typer.Option("--index", help="FAISS index type (auto: by collection size).")]
Strip = Annotated[Optional[StripChoice], typer.Option("--strip", help="'email': drop headers, quotes, signatures.")]
Engine = Annotated[EngineChoice, typer.Option("--engine", help="Where the items are encoded once the models are trained: local (this process) or ray (actors of a Ray cluster; pip install -e '.[ray]').")]
Address = Annotated[Optional[str], typer.Option("--address", help="--engine ray: the cluster to join (ray://HOST:PORT); default: a local Ray on this machine.")]
Workers = Annotated[Optional[int], typer.Option("--workers", help="--engine ray: encoding actors, one CPU each (default: the cluster's CPUs).")]


def _csv(values) -> str:
    return ",".join(map(str, values))


def _csv_ints(value: str, option: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise InputError(f"{option} must be comma-separated integers >= 1 like 500,250; got {value!r}")
    return widths


# -- printing -------------------------------------------------------------------
def _print_hits(hits, as_json: bool) -> None:
    if as_json:
        print(json.dumps([{k: h.to_dict()[k] for k in ("rank", "id", "score", "title", "label", "path", "url")}
                          for h in hits], indent=2))
        return
    table = Table(show_lines=False)
    for col in ("rank", "score", "title", "label", "path", "snippet"):
        table.add_column(col, overflow="fold", max_width=None if col != "snippet" else 60)
    for h in hits:
        table.add_row(str(h.rank), f"{h.score:.3f}", h.title[:60], h.label or "", h.path or h.url,
                      h.snippet[:120])
    out.print(table)


def _print_report(report: dict) -> None:
    k = report["k"]
    field = report.get("query_field", config.QUERY_FIELDS[0])
    kind = "" if field == config.QUERY_FIELDS[0] else f" ({field} only)"
    table = Table(title=f"{report['index']}: {report['queries']} queries{kind}, k = {k}")
    # At k = 10 precision@k is precision@10: one column, not two of the same.
    metrics = list(dict.fromkeys(["precision@10", f"precision@{k}", f"map@{k}"]))
    table.add_column("method", justify="left")
    for col in [*metrics, "query ms p50", "bytes/item"]:
        table.add_column(col, justify="right")
    best = max(report["methods"].values(), key=lambda r: r[f"precision@{k}"])
    for method, row in report["methods"].items():
        style = "bold" if row is best else None
        table.add_row(method, *(f"{row[m]:.3f}" for m in metrics), f"{row['query_ms_p50']:.2f}",
                      f"{row['bytes_per_item']:.0f}", style=style)
    out.print(table)


# -- commands -------------------------------------------------------------------
@index_app.command("docs")
def index_docs(
    source: Annotated[str, typer.Argument(help="Folder, .tar.gz/.zip (or a folder inside one: x.tar.gz/train), or .jsonl.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Index name.")],
    labels_from_folders: Labels = DocsConfig.labels_from_folders,
    strip: Strip = None if DocsConfig.strip is None else StripChoice(DocsConfig.strip),
    vocab_size: Annotated[int, typer.Option(help="TF-IDF vocabulary cap.")] = DocsConfig.vocab_size,
    code_dim: CodeDim = DocsConfig.code_dim,
    hidden: Annotated[str, typer.Option(help="Hidden layer widths.")] = _csv(DocsConfig.hidden),
    epochs: Epochs = DocsConfig.epochs,
    noise: Noise = DocsConfig.noise,
    short_views: Annotated[float, typer.Option(help="Share of training documents replaced each batch by a few of their words (training for short queries; 0 = off).")] = DocsConfig.short_views,
    neighbours: Annotated[int, typer.Option(help="Neighbour reconstruction: k TF-IDF neighbours (0 = off).")] = DocsConfig.neighbours,
    neighbour_weight: Annotated[float, typer.Option(help="Weight of the neighbours in the target.")] = DocsConfig.neighbour_weight,
    pretrain: Annotated[PretrainChoice, typer.Option(help="Greedy layer-wise pre-training of the autoencoder.")] = PretrainChoice(DocsConfig.pretrain),
    baselines: Annotated[Optional[str], typer.Option(help=f"Comma-separated: {_csv(config.DOC_BASELINES)} (and {_csv(config.HASH_BASELINES)} with --bits) or none; default all.")] = DocsConfig.baselines,
    bits: Bits = DocsConfig.bits,
    binary_epochs: BinaryEpochs = DocsConfig.binary_epochs,
    quantize: Quantize = DocsConfig.quantize,
    groups: Groups = DocsConfig.groups,
    codebook: Codebook = DocsConfig.codebook,
    vq_epochs: VqEpochs = DocsConfig.vq_epochs,
    keep_inputs: KeepInputs = DocsConfig.keep_inputs,
    baseline_dim: Annotated[Optional[int], typer.Option(help="LSA dimension (default: --code-dim).")] = DocsConfig.baseline_dim,
    index_kind: IndexKind = IndexKindChoice(DocsConfig.index_kind),
    train_sample: TrainSample = DocsConfig.train_sample,
    seed: Seed = DocsConfig.seed,
    engine: Engine = EngineChoice(config.ENGINES[0]),
    address: Address = None,
    workers: Workers = None,
    force: Force = False,
    index_dir: IndexDir = None,
    as_json: JsonOut = False,
) -> None:
    """Build a document index: TF-IDF -> deep autoencoder codes -> FAISS, plus baselines."""
    options = DocsConfig(vocab_size=vocab_size, strip=_value(strip), labels_from_folders=labels_from_folders,
                         code_dim=code_dim, hidden=_csv_ints(hidden, "--hidden"), epochs=epochs, noise=noise,
                         short_views=short_views, neighbours=neighbours, neighbour_weight=neighbour_weight, pretrain=_value(pretrain),
                         baselines=baselines, baseline_dim=baseline_dim, index_kind=_value(index_kind), seed=seed,
                         bits=bits, binary_epochs=binary_epochs, keep_inputs=keep_inputs, train_sample=train_sample,
                         quantize=quantize, groups=groups, codebook=codebook, vq_epochs=vq_epochs)
    store = api.Store(index_dir)
    with _engine(store, name, force, engine, address, workers) as runner, api.RichProgress(err) as progress:
        manifest = api.build_docs_index(source, name, options, store=store, force=force, progress=progress,
                                        engine=runner)
    _print_built(manifest, as_json)


@index_app.command("images")
def index_images(
    source: Annotated[str, typer.Argument(help="Image folder, crawl folder, IDX file, or an http(s) URL to crawl first.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Index name.")],
    labels_from_folders: Labels = ImagesConfig.labels_from_folders,
    size: Annotated[Optional[int], typer.Option(help=f"Square side in pixels (default: native for IDX, else {config.DEFAULT_IMAGE_SIZE}).")] = ImagesConfig.size,
    color: Annotated[ColorChoice, typer.Option(help="Channels the images are read as.")] = ColorChoice(ImagesConfig.color),
    fit: Annotated[FitChoice, typer.Option(help="pad (letterbox) or crop (centre crop).")] = FitChoice(ImagesConfig.fit),
    code_dim: CodeDim = ImagesConfig.code_dim,
    filters: Annotated[str, typer.Option(help="Channels of the strided convolutions.")] = _csv(ImagesConfig.filters),
    decoder: Annotated[DecoderChoice, typer.Option(help="dense layers, deconv (transposed convolutions) or unpool (max-unpooling at the encoder's max-pooling positions).")] = DecoderChoice(ImagesConfig.decoder),
    whiten: Annotated[float, typer.Option(help="Partial whitening of the codes (0 = off, 0.5 = full).")] = ImagesConfig.whiten,
    augment: Annotated[float, typer.Option(help="Denoising by random shifts (fraction of the side) and mirroring; 0 = off.")] = ImagesConfig.augment,
    mirror: Annotated[bool, typer.Option("--mirror/--no-mirror", help="Mirroring in the --augment corruption (off for glyphs such as digits).")] = ImagesConfig.mirror,
    epochs: Epochs = ImagesConfig.epochs,
    patience: Annotated[int, typer.Option(help="Early stopping: epochs without a lower validation loss before training stops.")] = ImagesConfig.patience,
    noise: Noise = ImagesConfig.noise,
    baselines: Annotated[Optional[str], typer.Option(help=f"Comma-separated: {_csv(config.IMAGE_BASELINES)} (and {_csv(config.HASH_BASELINES)} with --bits) or none; default all.")] = ImagesConfig.baselines,
    bits: Bits = ImagesConfig.bits,
    binary_epochs: BinaryEpochs = ImagesConfig.binary_epochs,
    quantize: Quantize = ImagesConfig.quantize,
    groups: Groups = ImagesConfig.groups,
    codebook: Codebook = ImagesConfig.codebook,
    vq_epochs: VqEpochs = ImagesConfig.vq_epochs,
    keep_inputs: KeepInputs = ImagesConfig.keep_inputs,
    baseline_dim: Annotated[Optional[int], typer.Option(help="PCA dimension (default: --code-dim).")] = ImagesConfig.baseline_dim,
    index_kind: IndexKind = IndexKindChoice(ImagesConfig.index_kind),
    limit: Annotated[Optional[int], typer.Option(help="Index at most this many images.")] = ImagesConfig.limit,
    train_sample: TrainSample = ImagesConfig.train_sample,
    max_pages: Annotated[int, typer.Option(help="When SOURCE is a URL: pages to crawl.")] = CrawlConfig.max_pages,
    seed: Seed = ImagesConfig.seed,
    engine: Engine = EngineChoice(config.ENGINES[0]),
    address: Address = None,
    workers: Workers = None,
    force: Force = False,
    index_dir: IndexDir = None,
    as_json: JsonOut = False,
) -> None:
    """Build an image index: pixels -> convolutional autoencoder codes -> FAISS, plus baselines."""
    options = ImagesConfig(size=size, color=_value(color), fit=_value(fit), labels_from_folders=labels_from_folders,
                           code_dim=code_dim, filters=_csv_ints(filters, "--filters"), decoder=_value(decoder),
                           whiten=whiten, augment=augment, mirror=mirror, epochs=epochs, patience=patience,
                           noise=noise, baselines=baselines, baseline_dim=baseline_dim,
                           index_kind=_value(index_kind), limit=limit, seed=seed, bits=bits, binary_epochs=binary_epochs,
                           keep_inputs=keep_inputs, train_sample=train_sample,
                           quantize=quantize, groups=groups, codebook=codebook, vq_epochs=vq_epochs)
    store = api.Store(index_dir)
    with _engine(store, name, force, engine, address, workers) as runner, api.RichProgress(err) as progress:
        if source.startswith(("http://", "https://")):
            folder = api.crawl_cache_folder(store, source)
            report = api.crawl(source, folder, CrawlConfig(max_pages=max_pages),
                               on_progress=progress.crawl_callback())
            err.print(f"crawled {report.pages} pages, {report.images} new images into {folder}")
            for line in report.notes():
                err.print(line, highlight=False, soft_wrap=True)
            source = str(folder)
        manifest = api.build_images_index(source, name, options, store=store, force=force, progress=progress,
                                          engine=runner)
    _print_built(manifest, as_json)


def _engine(store, name: str, force: bool, engine, address: str | None, workers: int | None):
    """The build's engine, started once the index name is known to be free (Ray takes seconds to start)."""
    store.check_new(name, force)
    return api.open_engine(_value(engine), address=address, workers=workers)


def _print_built(manifest: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(manifest, indent=2))
        return
    counts = manifest["counts"]
    out.print(f"built index [bold]{manifest['name']}[/] ({manifest['modality']}): {counts['items']} items, "
              f"{counts['skipped']} skipped, {manifest['build_seconds']:.1f} s")
    for method, info in manifest["methods"].items():
        out.print(f"  {method:9s} {info['encoder']:17s} dim {info['dim']:>5}  {info['metric']:7s} "
                  f"{info['index']:11s} {info['bytes_per_item']:.0f} B/item  fit {info['fit_seconds']:.1f} s")
    out.print(api.self_check_summary(manifest.get("self_check")), highlight=False, soft_wrap=True)


@app.command()
def query(
    name: Annotated[str, typer.Argument(help="Index name.")],
    query_: Annotated[Optional[str], typer.Argument(metavar="QUERY", help="Text (document index), or image path / URL (image index).")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", help="Read the query text from a file.")] = None,
    like: Annotated[Optional[str], typer.Option("--like", help="Find items similar to this indexed item id.")] = None,
    batch: Annotated[Optional[str], typer.Option("--batch", metavar="JSONL", help='Answer many queries, one JSON object a line ({"text": ...}, {"image": path or URL} or {"like": id}; optional "k", "method", "label", "path_prefix", "where", "params"; "-" reads stdin): one JSON result line each.')] = None,
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = config.DEFAULT_K,
    method: Annotated[Optional[str], typer.Option(help="ae (default) or a baseline of the index.")] = None,
    show: Annotated[Optional[Path], typer.Option("--show", help="Image index: write a contact sheet PNG.")] = None,
    strip: Annotated[Optional[StripChoice], typer.Option("--strip", help="'email' for a mail query file.")] = None,
    rerank: Annotated[Optional[RerankChoice], typer.Option("--rerank", help=f"Binary index: re-rank a Hamming shortlist by {'|'.join(config.RERANKERS_DOCS[:-1])} (documents), {'|'.join(config.RERANKERS_IMAGES[:-1])} (images) or none.")] = None,
    shortlist: Shortlist = config.DEFAULT_SHORTLIST,
    radius: Annotated[Optional[int], typer.Option("--radius", help="Binary index: shortlist every item within this Hamming distance.")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Document index: print, for each hit, the words the decoder favours for both the query's and the hit's code.")] = False,
    label: Annotated[Optional[list[str]], typer.Option("--label", help="Only items with this label (repeat: any of them). Filters apply before the search.")] = None,
    path_prefix: Annotated[Optional[list[str]], typer.Option("--path-prefix", help="Only items whose path starts with this (repeat: any of them).")] = None,
    where: Annotated[Optional[str], typer.Option("--where", help="Only items for which this SQL condition on the item table holds (columns id, title, label, path, url, length, snippet, extra); values as :name parameters.")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", metavar="NAME=VALUE", help="A value of --where's :NAME (repeatable).")] = None,
    index_dir: IndexDir = None,
    as_json: JsonOut = False,
) -> None:
    """Find the items most similar to a text, an image, or an indexed item."""
    filters = {"label": label or None, "path_prefix": path_prefix or None, "where": where, "params": param or None}
    if batch is not None:
        if query_ is not None or file is not None or like is not None or show is not None or explain:
            raise typer.BadParameter("--batch takes the queries from its file; drop QUERY, --file, --like, --show and --explain")
        _query_batch(name, batch, index_dir, k=k, method=method, rerank=_value(rerank), shortlist=shortlist,
                     radius=radius, **filters)
        return
    result = api.search(api.Store(index_dir), name, query_, file=file, like=like, k=k, method=method,
                        show=show, strip=_value(strip), rerank=_value(rerank), shortlist=shortlist, radius=radius,
                        explain=explain, **filters)
    if result.why is not None:
        _print_explained(result.hits, result.why, as_json)
        return
    _print_hits(result.hits, as_json)
    if result.novelty is not None:
        from retrieval.novelty import describe  # NumPy: loaded by the search already

        err.print(describe(result.novelty))
    if show and not as_json:
        err.print(f"contact sheet written to {show}")


def _print_explained(hits, why: list[dict], as_json: bool) -> None:
    """Hits with the words that explain each (``query --explain``)."""
    if as_json:
        print(json.dumps([{**{k: h.to_dict()[k] for k in ("rank", "id", "score", "title", "label", "path", "url")},
                           "why": w["words"]} for h, w in zip(hits, why)], indent=2))
        return
    table = Table(show_lines=False)
    for col in ("rank", "score", "title", "label", "words of both codes"):
        table.add_column(col, overflow="fold")
    for h, w in zip(hits, why):
        table.add_row(str(h.rank), f"{h.score:.3f}", h.title[:50], h.label or "",
                      ", ".join(x["word"] for x in w["words"]))
    out.print(table)


def _query_batch(name: str, batch: str, index_dir: Path | None, **options) -> None:
    """One JSON line per query on stdout as it is answered; exit 1 at the end if any line failed."""
    if batch == "-":
        lines = sys.stdin
    else:
        import io

        from retrieval.sources.files import open_regular_file

        path = Path(batch).expanduser()
        if not path.exists():
            raise InputError(f"cannot read --batch file {batch}: it does not exist; check the path")
        # A regular file only: a folder, /dev/zero or a FIFO is refused by name, not read forever;
        # a BOM is dropped and a stray non-UTF-8 byte replaced rather than a traceback.
        lines = io.TextIOWrapper(open_regular_file(path, "--batch file"), encoding="utf-8-sig", errors="replace")
    failed = 0
    try:
        for result in api.search_batch(api.Store(index_dir), name, lines, **options):
            failed += "error" in result
            print(json.dumps(result, ensure_ascii=False), flush=True)
    finally:
        if lines is not sys.stdin:
            lines.close()
    if failed:
        err.print(f"error: {failed} of the queries failed (see their \"error\" lines)")
        raise typer.Exit(1)


@app.command()
def evaluate(
    name: Annotated[str, typer.Argument(help="Index name.")],
    queries: Annotated[str, typer.Option("--queries", help="Labelled query documents or images (same kinds of source as index).")],
    labels_from_folders: Labels = False,
    strip: Annotated[Optional[StripChoice], typer.Option("--strip", help="'email' for mail/newsgroup queries.")] = None,
    k: Annotated[int, typer.Option("-k", help="Ranking depth scored.")] = config.EVALUATE_K,
    methods: Annotated[Optional[str], typer.Option(help="Comma-separated subset of the index's methods.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use at most this many queries.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write precision-recall curves to this PNG.")] = None,
    shortlist: Shortlist = config.DEFAULT_SHORTLIST,
    query_field: Annotated[QueryFieldChoice, typer.Option("--query-field", help="The part of each query document that is the query: text (whole), title (mail Subject without Re:, JSONL/HTML title, else first line) or first-line (first line or first sentence, whichever is shorter). Short queries under 2 words are left out.")] = QueryFieldChoice(config.QUERY_FIELDS[0]),
    index_dir: IndexDir = None,
    as_json: JsonOut = False,
) -> None:
    """Compare every method of an index on labelled queries: precision, mAP, latency, bytes.

    A binary index also gets two-stage rows: 'ae>tfidf' is the Hamming shortlist re-ranked by TF-IDF cosine.
    """
    with api.RichProgress(err) as progress:
        report = api.run_evaluation(api.Store(index_dir), name, queries, labels_from_folders=labels_from_folders,
                                    strip=_value(strip), k=k, methods=methods.split(",") if methods else None,
                                    limit=limit, plot=plot, shortlist=shortlist, query_field=_value(query_field),
                                    progress=progress)
    if as_json:
        print(json.dumps({key: report[key] for key in ("index", "queries", "query_field", "k", "methods")}, indent=2))
    else:
        _print_report(report)
        if plot:
            err.print(f"precision-recall curves written to {plot}")


def _print_update(name: str, report, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        out.print(f"added {report.added}, replaced {report.replaced}, unchanged {report.unchanged}, "
                  f"removed {report.removed}, skipped {report.skipped}; {report.items} items now "
                  f"({report.seconds:.1f} s)" + (f"; {report.compacted} segments merged" if report.compacted else ""))
    if report.replaced:  # an update, but say which items changed
        more = report.replaced - len(report.replaced_examples)
        err.print(f"replaced (content changed): {', '.join(report.replaced_examples)}"
                  + (f" and {more} more" if more else ""), highlight=False, soft_wrap=True)
    _print_drift(name, report.drift)


def _print_drift(name: str, drift: dict) -> None:
    if drift.get("retrain_recommended"):
        for reason in drift["reasons"]:
            err.print(f"[yellow]retrain recommended:[/] {reason}; run 'retrieval retrain {name}'")


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="Index name.")],
    source: Annotated[str, typer.Argument(help="Documents or images to add (same kinds of source as index).")],
    labels_from_folders: LabelsAsBuilt = None,
    replace: Annotated[bool, typer.Option("--replace", help="Let items of a folder outside the index's source replace indexed items of the same id.")] = False,
    index_dir: IndexDir = None,
    as_json: JsonOut = False,
) -> None:
    """Add items with the stored models (no retraining); changed items are replaced, unchanged skipped."""
    with api.RichProgress(err) as progress:
        report = api.add_items(api.Store(index_dir), name, source, labels_from_folders=labels_from_folders,
                               replace=replace, progress=progress)
    _print_update(name, report, as_json)


@app.command("remove-items")
def remove_items(
    name: Annotated[str, typer.Argument(help="Index name.")],
    ids: Annotated[Optional[list[str]], typer.Option("--id", help="Item id to remove (repeatable).")] = None,
    path_prefix: Annotated[Optional[str], typer.Option("--path-prefix", help="Remove every item whose path starts with this.")] = None,
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="Allow removing every item of the index.")] = False,
    index_dir: IndexDir = None,
    as_json: JsonOut = False,
) -> None:
    """Remove items from every method of an index."""
    report = api.remove_items(api.Store(index_dir), name, ids=list(ids or ()), path_prefix=path_prefix,
                              allow_empty=allow_empty)
    _print_update(name, report, as_json)


@app.command()
def sync(
    name: Annotated[str, typer.Argument(help="Index name.")],
    source: Annotated[str, typer.Argument(help="The folder the index was built from, or a folder inside it (then only its items are synced).")],
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="Allow removing every item SOURCE covers when it is gone or empty.")] = False,
    allow_removals: Annotated[bool, typer.Option("--allow-removals", help=f"Allow removing more than {config.SYNC_MAX_REMOVED_FRACTION:.0%} of the index.")] = False,
    new_source: Annotated[bool, typer.Option("--new-source", help="The collection moved to SOURCE: mirror it and record it as the index's source.")] = False,
    labels_from_folders: LabelsAsBuilt = None,
    index_dir: IndexDir = None,
    as_json: JsonOut = False,
) -> None:
    """Add new and changed files, drop deleted ones."""
    with api.RichProgress(err) as progress:
        report = api.sync_items(api.Store(index_dir), name, source, allow_empty=allow_empty,
                                allow_removals=allow_removals, new_source=new_source,
                                labels_from_folders=labels_from_folders, progress=progress)
    _print_update(name, report, as_json)


@app.command()
def retrain(
    name: Annotated[str, typer.Argument(help="Index name.")],
    index_dir: IndexDir = None,
    as_json: JsonOut = False,
) -> None:
    """Refit the models on every item now indexed; swapped in atomically (the old index answers meanwhile)."""
    with api.RichProgress(err) as progress:
        manifest = api.retrain(api.Store(index_dir), name, progress=progress)
    _print_built(manifest, as_json)


@app.command()
def compact(
    name: Annotated[str, typer.Argument(help="Index name.")],
    index_dir: IndexDir = None,
    as_json: JsonOut = False,
) -> None:
    """Merge an index's segments into one, dropping removed items (no retraining; the hits do not change)."""
    report = api.compact(api.Store(index_dir), name)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        out.print(f"{report.segments_before} segments -> {report.segments}, {report.dropped} removed items dropped; "
                  f"{report.items} items ({report.seconds:.1f} s)")


@app.command()
def outliers(
    name: Annotated[str, typer.Argument(help="Index name.")],
    k: Annotated[int, typer.Option("-k", help="Number of items.")] = config.OUTLIERS_K,
    show: Annotated[Optional[Path], typer.Option("--show", help="Image index: originals beside reconstructions, as a PNG.")] = None,
    index_dir: IndexDir = None,
    as_json: JsonOut = False,
) -> None:
    """The items the autoencoder reconstructs worst: the least typical of the collection."""
    store = api.Store(index_dir)
    rows = api.outliers(store, name, k)
    if show is not None:
        api.outlier_sheet(store, name, rows, show)
        err.print(f"originals and reconstructions written to {show}")
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table()
    for col in ("rank", "novelty", "percentile", "id", "label", "title"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(str(r["rank"]), f"{r['novelty']:.3f}", f"{r['percentile']:.1f}", r["id"], r["label"] or "",
                      r["title"][:60])
    out.print(table)


@app.command()
def duplicates(
    name: Annotated[str, typer.Argument(help="Index name.")],
    threshold: Annotated[float, typer.Option("--threshold", help="Floor: verified similarity (aligned pixel correlation; documents: TF-IDF cosine) every duplicate pair reaches.")] = config.DUPLICATES_THRESHOLD,
    ratio: Annotated[float, typer.Option("--ratio", help="Neighbour test: a pair's distance (1 - similarity) is at most this share of the distance to the items' 3rd best candidate; 0: off, the --threshold alone decides.")] = config.DUPLICATES_RATIO,
    radius: Annotated[Optional[float], typer.Option("--radius", help="Candidates: every item within this code distance (1 - cosine; Hamming bits for binary codes) instead of the nearest --candidates.")] = None,
    candidates: Annotated[int, typer.Option("--candidates", help="Candidates: nearest stored codes of each item verified.")] = config.DUPLICATES_CANDIDATES,
    check: Annotated[Optional[Path], typer.Option("--check", help="Only the stored near-duplicates of this new file.")] = None,
    method: Annotated[Optional[str], typer.Option("--method", help="Method whose stored codes give the candidates.")] = None,
    show: Annotated[Optional[Path], typer.Option("--show", help="Image index: a contact sheet of the groups (or of the checked file and its matches), as a PNG.")] = None,
    index_dir: IndexDir = None,
    as_json: JsonOut = False,
) -> None:
    """Groups of near-duplicate items (copies re-saved, resized, cropped, brightened or shifted)."""
    store = api.Store(index_dir)
    if check is not None:
        if radius is not None:
            raise InputError("--radius applies to whole-index groups; --check takes the nearest --candidates")
        result = api.check_duplicate(store, name, check, threshold=threshold, candidates=candidates, method=method,
                                     show=show, ratio=ratio)
        if show is not None:
            err.print(f"checked file and its matches written to {show}")
        if as_json:
            print(json.dumps(result.to_dict(), indent=2))
            return
        if not result.matches:
            out.print(f"{check}: no near-duplicate in {name} (threshold {result.threshold}, ratio {result.ratio})")
            return
        out.print(f"{check}: {len(result.matches)} near-duplicate(s) in {name}")
        for m in result.matches:
            out.print(f"  {m.score:.3f}  {escape(m.id)}  {escape(m.label or '')}")
        return
    found = api.duplicates(store, name, threshold=threshold, candidates=candidates, radius=radius, method=method,
                           show=show, ratio=ratio)
    if show is not None and found.groups:
        err.print(f"first {min(len(found.groups), config.DUPLICATES_SHEET_GROUPS)} groups written to {show}")
    if as_json:
        print(json.dumps(found.to_dict(), indent=2))
        return
    out.print(f"{len(found.groups)} groups of near-duplicates, {sum(len(g) for g in found.groups)} of {found.items} "
              f"items ({found.candidates_checked} candidate pairs verified, threshold {found.threshold}, ratio {found.ratio}, "
              f"{found.seconds:.1f} s)")
    for g, group in enumerate(found.groups, 1):
        out.print(f"group {g}: " + ", ".join(f"{escape(d.id)} ({d.score:.3f})" for d in group))


@app.command("list")
def list_(index_dir: IndexDir = None, as_json: JsonOut = False) -> None:
    """List the indexes (a damaged one with a warning saying what is wrong)."""
    store = api.Store(index_dir)
    rows = api.list_indexes(store)
    for r in rows:
        if r["error"]:
            warnings.warn(f"index {r['name']!r} is damaged: {r['error']}", RetrievalWarning, stacklevel=1)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        err.print(f"no indexes in {store.root}")
        return
    table = Table()
    for col in ("name", "modality", "items", "methods", "created"):
        table.add_column(col)
    for r in rows:
        if r["error"]:
            table.add_row(r["name"], "[red]damaged[/]", "", "", "")
        else:
            table.add_row(r["name"], r["modality"], str(r["items"]), ",".join(r["methods"]), r["created_at"])
    out.print(table)


@app.command()
def info(name: Annotated[str, typer.Argument(help="Index name.")], index_dir: IndexDir = None,
         as_json: JsonOut = False) -> None:
    """Show an index: counts, methods, dims, sizes on disk, build time, last evaluation."""
    details = api.index_info(api.Store(index_dir), name)
    if as_json:
        print(json.dumps(details, indent=2))
        return
    m = details["manifest"]
    if details["format_on_disk"] < details["format_current"]:
        err.print(f"{m['name']} is in index format {details['format_on_disk']}; it is read as format "
                  f"{details['format_current']}: 'retrieval upgrade {m['name']}' rewrites it in place")
    out.print(f"[bold]{m['name']}[/] ({m['modality']}), format {details['format_on_disk']}, built {m['created_at']} "
              f"in {m['build_seconds']:.1f} s from {m['source']}")
    out.print(f"items {m['counts']['items']}, skipped {m['counts']['skipped']}, labels {m['counts']['labels']}; "
              f"{details['disk_bytes'] / 1e6:.1f} MB on disk at {details['path']}")
    segments = m.get("segments", [])
    removed = sum(int(s.get("deleted", 0)) for s in segments)
    out.print(f"segments {len(segments)}" + (f", {removed} removed items not yet compacted away "
                                             f"('retrieval compact {m['name']}')" if removed else ""))
    table = Table()
    for col in ("method", "encoder", "dim", "metric", "index", "bytes/item", "fit s"):
        table.add_column(col)
    for method, i in m["methods"].items():
        table.add_row(method, i["encoder"], str(i["dim"]), i["metric"], i["index"],
                      f"{i['bytes_per_item']:.0f}", f"{i['fit_seconds']:.1f}")
    out.print(table)
    drift = m.get("drift")
    if drift:
        mean = drift.get("added_novelty_percentile_mean")
        reference = m.get("novelty", {}).get("reference_mean")
        out.print(f"trained on {drift['trained_items']} items; since then added {drift['added_since_training']}, "
                  f"removed {drift['removed_since_training']}"
                  + (f"; additions' mean reconstruction error {drift['added_novelty_mean']:.3f} against "
                     f"{reference:.3f} for the training items (mean percentile {mean:.0f})"
                     if mean is not None and reference is not None and drift.get("added_novelty_mean") is not None
                     else ""))
        _print_drift(m["name"], drift)
    if "evaluation" in m:
        _print_report(m["evaluation"])


@app.command()
def remove(
    name: Annotated[str, typer.Argument(help="Index name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (needed when stdin is not a terminal).")] = False,
    index_dir: IndexDir = None,
) -> None:
    """Delete an index (asks first; --yes skips the question)."""
    store = api.Store(index_dir)
    folder = store.require(name)
    if not yes:
        if not sys.stdin.isatty():
            raise InputError(f"'retrieval remove {name}' deletes the index and cannot ask for confirmation here "
                             "(stdin is not a terminal); add --yes to delete it")
        if not typer.confirm(f"delete index {name!r} ({folder})?", default=False):
            raise InputError(f"nothing removed: index {name!r} is kept (add --yes to delete without asking)")
    store.remove(name)
    err.print(f"removed {name}")


@app.command()
def upgrade(name: Annotated[str, typer.Argument(help="Index name.")], index_dir: IndexDir = None) -> None:
    """Rewrite an index built by an older retrieval in the current format (in place, atomically)."""
    result = api.upgrade_index(api.Store(index_dir), name)
    if result["from"] == result["to"]:
        err.print(f"{name}: already format {result['to']}; nothing to do")
    else:
        err.print(f"{name}: upgraded from format {result['from']} to {result['to']}")


@app.command()
def plot(
    name: Annotated[str, typer.Argument(help="Index name.")],
    out_file: Annotated[Path, typer.Option("--out", help="PNG to write.")] = Path("map.png"),
    max_items: Annotated[int, typer.Option(help="Sample at most this many items.")] = config.MAP_MAX_ITEMS,
    epochs: Annotated[int, typer.Option(help="Epochs of the 2-d autoencoder.")] = config.MAP_EPOCHS,
    index_dir: IndexDir = None,
) -> None:
    """Draw the 2-D map: a 2-d autoencoder code beside 2-d LSA/PCA, coloured by label."""
    path = api.corpus_map(api.Retriever(name, api.Store(index_dir)), out_file, max_items=max_items, epochs=epochs)
    err.print(f"map written to {path}")


MapChoice = _choices("MapChoice", config.GENERATE_MAPS)


@app.command()
def generate(
    name: Annotated[str, typer.Argument(help="Index name.")],
    query_: Annotated[Optional[str], typer.Argument(metavar="QUERY", help="Document index: a text whose code's top words to print.")] = None,
    grid: Annotated[bool, typer.Option("--grid", help="Image index: decode an evenly spaced grid over the 2-d map of the codes (one PNG with the items' positions).")] = False,
    between: Annotated[Optional[tuple[str, str]], typer.Option("--between", metavar="ID1 ID2", help="Decode the straight path between two items' codes (images: a strip PNG; documents: top words per step).")] = None,
    sample: Annotated[Optional[int], typer.Option("--sample", metavar="N", help="Image index: decode N codes drawn from a Gaussian fitted to the codes.")] = None,
    like: Annotated[Optional[str], typer.Option("--like", help="Document index: the top words of this item's code.")] = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="PNG to write (images).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help=f"Grid tiles per side (default {config.GENERATE_GRID_STEPS}) or points of --between (default {config.GENERATE_PATH_STEPS}).")] = None,
    k: Annotated[int, typer.Option("-k", help="Top words per code.")] = config.TOP_WORDS,
    map_: Annotated[MapChoice, typer.Option("--map", help="--grid over the codes' first two principal directions (NumPy) or a 2-d autoencoder trained as 'plot' trains it.")] = MapChoice(config.GENERATE_MAPS[0]),
    max_items: Annotated[int, typer.Option(help="Items sampled for the map, the Gaussian and the drawn positions.")] = config.MAP_MAX_ITEMS,
    epochs: Annotated[int, typer.Option(help="Epochs of the 2-d autoencoder (--map autoencoder).")] = config.MAP_EPOCHS,
    seed: Seed = config.GENERATE_SEED,
    index_dir: IndexDir = None,
    as_json: JsonOut = False,
) -> None:
    """The decoder as a generator: pictures of codes no item has, or the words a code stands for."""
    result = api.generate(api.Store(index_dir), name, query_, grid=grid, between=between, sample=sample, like=like,
                          out=out_file, steps=steps, k=k, map=_value(map_), max_items=max_items, epochs=epochs,
                          seed=seed)
    for note in result.notes:
        err.print(f"note: {note}", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    if result.words is not None:
        t_values = result.info.get("t")
        for i, row in enumerate(result.words):
            head = f"t={t_values[i]:.2f}  " if t_values else ""
            out.print(head + ", ".join(word for word, _ in row), highlight=False, soft_wrap=True)
    if result.out is not None:
        what = {"grid": "grid", "between": "path", "sample": "samples"}[result.kind]
        extra = (f" (principal plane: {result.info['explained_variance']:.0%} of the code variance)"
                 if "explained_variance" in result.info else "")
        err.print(f"{what} written to {result.out}{extra}", highlight=False)


@app.command()
def explain(
    name: Annotated[str, typer.Argument(help="Index name (documents).")],
    query_: Annotated[Optional[str], typer.Argument(metavar="QUERY", help="The query text.")] = None,
    like: Annotated[Optional[list[str]], typer.Option("--like", help="The hit to explain (an item id; repeatable).")] = None,
    item: Annotated[Optional[str], typer.Option("--item", help="Instead of QUERY: an indexed item as the query.")] = None,
    k: Annotated[int, typer.Option("-k", help="Words per hit.")] = config.TOP_WORDS,
    index_dir: IndexDir = None,
    as_json: JsonOut = False,
) -> None:
    """Why a query matched a hit: the words the decoder gives high probability for both codes."""
    found = api.explain(api.Store(index_dir), name, query_, hits=like or [], query_item=item, k=k)
    if as_json:
        print(json.dumps(found, indent=2))
        return
    for entry in found:
        table = Table(title=f"query ~ {entry['id']}", show_lines=False)
        for col in ("word", "both", "p(query)", "p(hit)"):
            table.add_column(col)
        for w in entry["words"]:
            table.add_row(w["word"], f"{w['score']:.4f}", f"{w['query']:.4f}", f"{w['hit']:.4f}")
        out.print(table)


@app.command()
def serve(
    names: Annotated[Optional[list[str]], typer.Argument(metavar="NAME", help="Indexes to serve (default: every index).")] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to bind; anything but loopback exposes the indexes.")] = config.SERVER_HOST,
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = config.SERVER_PORT,
    token: Annotated[Optional[str], typer.Option("--token", envvar=config.SERVER_TOKEN_ENV, show_default=False, help=f"Bearer token that turns on the write endpoints (add, delete); also ${config.SERVER_TOKEN_ENV}. Without it they are off.")] = None,
    allow_url_queries: Annotated[bool, typer.Option("--allow-url-queries", help="Let image searches fetch a URL (off: the server fetches nothing).")] = False,
    cors: Annotated[Optional[list[str]], typer.Option("--cors", metavar="ORIGIN", help="Allow browser calls from this origin (repeatable; default: none).")] = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest request body (upload) in MB.")] = config.SERVER_MAX_UPLOAD_MB,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
    index_dir: IndexDir = None,
) -> None:
    """Serve indexes over HTTP: a JSON API and a search page at http://HOST:PORT/ (Ctrl-C stops it)."""
    from retrieval.server import serve as run_server

    run_server(names or None, store=api.Store(index_dir), host=host, port=port, token=token,
               allow_url_queries=allow_url_queries, cors=cors, max_upload_mb=max_upload_mb, access_log=access_log)


@app.command()
def crawl(
    url: Annotated[str, typer.Argument(help="Start page.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for images and manifest.jsonl.")],
    allow_host: Annotated[Optional[list[str]], typer.Option("--allow-host", help="Also follow pages on this host.")] = None,
    max_depth: Annotated[Optional[int], typer.Option(help="Links followed from the start page at most (default: no limit; --max-pages bounds the crawl).")] = CrawlConfig.max_depth,
    max_pages: Annotated[int, typer.Option(help="Pages crawled at most.")] = CrawlConfig.max_pages,
    max_images: Annotated[int, typer.Option(help="Images saved at most by this run.")] = CrawlConfig.max_images,
    concurrency: Annotated[int, typer.Option(help="HTTP requests in flight at most.")] = CrawlConfig.concurrency,
    timeout: Annotated[float, typer.Option(help="Seconds allowed per request.")] = CrawlConfig.timeout,
    no_robots: Annotated[bool, typer.Option("--ignore-robots", help="Do not read robots.txt (only for your own sites).")] = not CrawlConfig.respect_robots,
    as_json: JsonOut = False,
) -> None:
    """Crawl a website for images (robots.txt respected, bounded concurrency, resumable)."""
    options = CrawlConfig(allow_hosts=tuple(allow_host or ()), max_depth=max_depth, max_pages=max_pages,
                          max_images=max_images, concurrency=concurrency, timeout=timeout,
                          respect_robots=not no_robots)
    with api.RichProgress(err) as progress:
        report = api.crawl(url, out_dir, options, on_progress=progress.crawl_callback())
    summary = {**report.summary(), "out": str(out_dir)}
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        out.print(", ".join(f"{k} {v}" for k, v in summary.items() if not isinstance(v, dict)))
        for line in report.notes():
            out.print(line, highlight=False, soft_wrap=True)


@app.command()
def demo(
    index_dir: IndexDir = None,
    part: Annotated[DemoPartChoice, typer.Option(help="Which demo indexes to build.")] = DemoPartChoice(config.DEMO_PARTS[0]),
) -> None:
    """Build indexes from data shipped with the installed packages, query them, compare methods."""
    with api.RichProgress(err) as progress:
        for section in api.run_demo(api.Store(index_dir), part=_value(part), progress=progress):
            progress.pause()
            out.rule(section["title"])
            for q in section.get("queries", []):
                out.print(f"[bold]query:[/] {q['query']}")
                _print_hits(q["hits"], False)
            for report in section.get("reports", []):
                _print_report(report)
            for line in section.get("notes", []):
                out.print(line)
            progress.resume()


# -- entry point ----------------------------------------------------------------
def _version() -> str:
    import retrieval

    version = getattr(retrieval, "__version__", None)
    if version is None:
        from importlib.metadata import version as installed_version

        version = installed_version("retrieval")
    return version


def _print_version(value: bool) -> None:
    if value:
        print(f"retrieval {_version()}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_print_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    pass


#: Warnings aimed at programmers, not at the person running a command: dropped
#: (Python's default filters hide most of them already).
_NOISE = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ImportWarning, ResourceWarning)


class _WarningPrinter:
    """Prints warnings as one ``warning: ...`` line each; caps floods of them.

    The library's own warnings (:class:`RetrievalWarning`: a skipped file, ...)
    are printed as they are; any other warning (from the library or what it
    calls) is printed with its category, except deprecation-like noise.
    """

    limit = 20

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, message, category, filename, lineno, file=None, line=None):
        if issubclass(category, _NOISE):
            return
        text = " ".join(str(message).splitlines())
        if not issubclass(category, RetrievalWarning):
            text = f"{category.__name__}: {text}"
        self.count += 1
        if self.count <= self.limit:
            err.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)

    def summary(self) -> None:
        if self.count > self.limit:
            err.print(f"[yellow]warning:[/] {self.count - self.limit} more warnings not shown")


def _os_error(exc: OSError) -> str:
    """``strerror: filename`` of an operating-system error (read-only folder, full disk, ...)."""
    if not exc.strerror:
        return str(exc) or type(exc).__name__
    if exc.filename is None:
        return exc.strerror
    where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{exc.strerror}: {where}"


def main() -> None:
    """Console-script entry point: run the app, turning errors into one line."""
    printer = _WarningPrinter()
    warnings.showwarning = printer
    warnings.simplefilter("always", RetrievalWarning)
    code = 0
    try:
        # Standalone mode handles usage errors (exit 2), --help and Ctrl-C;
        # library errors come out of it as exceptions.
        app()
    except RetrievalError as exc:
        err.print(f"[red]error:[/] {escape(' '.join(str(exc).splitlines()))}", highlight=False, soft_wrap=True)
        code = 1
    except OSError as exc:
        err.print(f"[red]error:[/] {escape(_os_error(exc))}", highlight=False, soft_wrap=True)
        code = 1
    finally:
        printer.summary()
    sys.exit(code)


if __name__ == "__main__":
    main()
