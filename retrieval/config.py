"""Build options as frozen dataclasses; they round-trip through the manifest."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from numbers import Integral, Real
from typing import NamedTuple

from .errors import InputError

DOC_BASELINES = ("lsa", "tfidf")
IMAGE_BASELINES = ("pca", "pixels")
#: Hashing baselines, built beside learned binary codes (``--bits``).
HASH_BASELINES = ("itq", "lsh")

# -- allowed values of the choice options (the CLI shows them in --help) ------
#: ``strip``: cleaning of mail/newsgroup text (``None``: no cleaning).
STRIP_MODES = ("email",)
#: ``pretrain``: greedy layer-wise pre-training of the document autoencoder.
PRETRAIN_MODES = ("none", "layerwise")
#: ``color``: channels images are read as.
COLORS = ("auto", "grey", "rgb")
#: ``fit``: how an image is made square (letterbox or centre crop).
FITS = ("pad", "crop")
#: ``decoder`` of the image autoencoder: dense layers, transposed convolutions,
#: or max-unpooling at the argmax positions of a max-pooling encoder.
DECODERS = ("dense", "deconv", "unpool")
#: ``index_kind``: the FAISS index type (``auto`` picks by collection size).
INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")
#: ``index --engine``: where a build encodes its items (``local``: this
#: process; ``ray``: actors of a Ray cluster, ``pip install -e '.[ray]'``).
ENGINES = ("local", "ray")
#: ``evaluate --query-field``: the part of each labelled query document that is
#: the query (the first is the default). ``text``: the whole document;
#: ``title``: its title as the corpus reader gives it (the mail ``Subject:``
#: with ``--strip email``, without "Re:"/"Fwd:" prefixes; JSONL ``title``;
#: HTML ``<title>``; else the first non-empty line); ``first-line``: the first
#: non-empty line or the first sentence, whichever is shorter (a docstring's
#: summary, a headline).
QUERY_FIELDS = ("text", "title", "first-line")
#: Short queries (``title``, ``first-line``) with fewer words than this are
#: left out of an evaluation: one word is a keyword lookup, not a query.
MIN_QUERY_WORDS = 2
#: ``retrieval demo --part`` (the first is the default).
DEMO_PARTS = ("all", "docs", "images")
#: Re-rankers of a Hamming shortlist, per modality (``none``: Hamming order).
RERANKERS_DOCS = ("tfidf", "tfidf-prf", "float", "tfidf+float", "none")
RERANKERS_IMAGES = ("pixels", "float", "none")
#: Every re-ranker of either modality (what ``query --rerank`` accepts).
RERANKERS = tuple(dict.fromkeys(RERANKERS_DOCS[:-1] + RERANKERS_IMAGES))

# -- the Ray engine ---------------------------------------------------------------
#: Items one actor call encodes: large enough that the per-call overhead of
#: Ray (~ms) vanishes beside the forward passes, small enough that two
#: workers get many chunks each (ordered results are put back by position).
RAY_CHUNK_ITEMS = 1024

# -- defaults of query-time operations -----------------------------------------
#: Results of a query (``query -k``).
DEFAULT_K = 10
#: Ranking depth scored by an evaluation (``evaluate -k``).
EVALUATE_K = 100
#: Items listed by ``outliers -k``.
OUTLIERS_K = 20
#: ``duplicates``: a candidate pair is a near-duplicate only if its aligned signature correlation
#: (images) or TF-IDF cosine (documents) is at least this floor (``--threshold``) and it passes the
#: neighbour test of ``DUPLICATES_RATIO``. The four settings below were chosen together on the validation
#: planted sets of ``benchmarks/duplicates_bench.py`` (Fashion-MNIST and photo tiles, best F1 of both halves;
#: BENCHMARKS.md, "Near-duplicates on planted copies").
DUPLICATES_THRESHOLD = 0.93
#: ``duplicates``: the neighbour (ratio) test: a pair's distance ``1 - score`` must be at most this share of
#: the distance from either item to its ``DUPLICATES_REFERENCE_RANK``-th best candidate (``--ratio``; 0: off,
#: the floor alone decides). Near-identical collections (small garments) get a strict bar, sparse ones a loose one.
DUPLICATES_RATIO = 0.125
#: ``duplicates``: rank of the reference candidate of the ratio test (3: two copies of one item do not veto
#: each other's match with the original).
DUPLICATES_REFERENCE_RANK = 3
#: ``duplicates``: a pair scoring at least this is a duplicate whatever its neighbours (large groups of copies).
DUPLICATES_CERTAIN = 0.9985
#: ``duplicates``: nearest stored codes of each item verified as candidates (``--candidates``).
DUPLICATES_CANDIDATES = 20
#: ``duplicates --show``: groups drawn on the contact sheet (one row each).
DUPLICATES_SHEET_GROUPS = 30
#: A ``sync`` that would remove more than this share of an index's items
#: refuses without ``--allow-removals``: a wrong folder or a half-mounted
#: drive looks like mass deletion.
SYNC_MAX_REMOVED_FRACTION = 0.5
#: Hamming shortlist re-ranked by two-stage search (``--shortlist``). Measured
#: on 20NG at 64 bits (BENCHMARKS.md, shortlist table): TF-IDF re-ranks best on
#: short lists, the float codes are as good at 250 as at 1,000.
DEFAULT_SHORTLIST = 250
#: Items the build-time self-check samples as queries (seeded by the build
#: seed), and the neighbours it compares (retrieval/selfcheck.py).
SELF_CHECK_SAMPLE = 500
SELF_CHECK_K = 10
#: Below this many items the self-check warns that the corpus is too small
#: for its figures (and the autoencoder) to mean much.
SELF_CHECK_MIN_ITEMS = 100
#: An autoencoder's codes are centred (and whitened) only when they spread by
#: more than this fraction of their size (root mean square distance from the
#: mean code over root mean square norm): codes that do not spread (every item
#: the same text or image) would all become the zero vector, whose cosine is
#: rounding noise. 20NG's codes spread by 0.95; float32 rounding is ~1e-7.
CODE_MIN_SPREAD = 1e-4
#: A query's novelty percentile at or above this reads "nothing like it is
#: indexed"; at or below the second, "a typical item".
NOVELTY_UNLIKE_PERCENTILE = 99.0
NOVELTY_TYPICAL_PERCENTILE = 50.0
#: Fewest training items that calibrate a novelty verdict. An item of the
#: collection's own kind scores above all n of them with probability
#: 1 / (n + 1): below 100 items "above the 99th percentile" happens by chance
#: more often than 1 % (and an autoencoder of so few items has barely learned,
#: see SELF_CHECK_MIN_ITEMS). Below it the percentile is reported, not judged.
NOVELTY_MIN_ITEMS = round(100 / (100 - NOVELTY_UNLIKE_PERCENTILE))
#: Filtered search (``query --label/--path-prefix/--where``): a filter keeping
#: at most this many items is answered by scoring exactly those items (their
#: stored codes, the index's metric); a larger one by the index's own search
#: restricted to them (a FAISS ``IDSelectorBitmap``). Either way nothing is
#: filtered after the candidates, so a filter never loses results. Measured
#: (BENCHMARKS.md, "Filtered search"): 600 of 60,000 items score in well under
#: the unfiltered scan's time.
FILTER_EXACT_ITEMS = 5000
#: Resolved path-prefix / ``--where`` filters an opened index remembers (the
#: SQL scans every item row; a label filter needs no SQL).
FILTER_CACHE_ENTRIES = 64
#: Longest ``--where`` condition accepted, in characters, and the time its
#: SQL may run per segment before it is stopped (a condition is user input).
FILTER_WHERE_MAX_CHARS = 2000
FILTER_WHERE_SECONDS = 5.0
#: Items sampled for the 2-d map (``plot --max-items``).
MAP_MAX_ITEMS = 5000
#: Epochs of the 2-d autoencoder of the map (``plot --epochs``).
MAP_EPOCHS = 10
#: Points of the map the server draws (``GET /api/indexes/NAME/map``): a
#: browser scatter stays responsive at this size.
SERVER_MAP_ITEMS = 2000

# -- the decoder as a generator (retrieval generate / explain) ------------------
#: Tiles per side of ``generate --grid``.
GENERATE_GRID_STEPS = 10
#: Points of ``generate --between`` (both items' own reconstructions included).
GENERATE_PATH_STEPS = 8
#: The 2-d map a grid is laid over: the first two principal directions of the
#: codes (NumPy only) or a 2-d autoencoder trained as ``plot`` trains it (TensorFlow).
GENERATE_MAPS = ("pca", "autoencoder")
#: The grid spans these percentiles of the items' 2-d positions on each axis:
#: the full range would spend its edge tiles on a handful of outliers.
GENERATE_GRID_PERCENTILES = (2.0, 98.0)
#: Seed of ``generate``'s samples (items for the map, Gaussian draws, the 2-d autoencoder).
GENERATE_SEED = 0
#: Words printed per code by ``generate --like/--between`` and ``explain``.
TOP_WORDS = 10
#: Words shown per hit by ``query --explain``.
EXPLAIN_HIT_WORDS = 5

# -- segments: automatic compaction after add / remove-items / sync ------------------
#: Segments whose item counts have the same number of digits (a tier: 1,000 to
#: 9,999 items, 10,000 to 99,999, ...) are merged once a tier holds this many:
#: the size-tiered policy of log-structured stores (Lucene, Cassandra). It
#: keeps at most 3 segments per power of ten (10 for a million items grown by
#: adds of 1,000) while each item is rewritten about once per tier, and it
#: merges segments of similar size only: the build's big segment waits until
#: three as big exist. ``retrieval compact`` merges everything into one.
#: Measured: BENCHMARKS.md, "Index segments".
COMPACT_TIER_SEGMENTS = 4
#: A segment with more than this fraction of its items removed is rewritten
#: without them: removed items still cost scan time and disk until then.
COMPACT_DELETED_FRACTION = 0.25
#: A segment keeps the count of each label in the manifest (``info`` shows the
#: totals without reading the item tables) up to this many distinct labels;
#: above, the counts are recomputed from its table at each write.
LABEL_COUNTS_MAX = 1000

# -- defaults of ``retrieval serve`` -----------------------------------------------
#: Interface the server binds: loopback unless told otherwise (``--host``).
SERVER_HOST = "127.0.0.1"
SERVER_PORT = 8000
#: Request bodies (uploads, added items) larger than this are refused with 413.
SERVER_MAX_UPLOAD_MB = 10
#: Longest text query accepted, in characters (a long article pasted whole fits).
SERVER_MAX_QUERY_CHARS = 20_000
#: Largest ``k`` a search request may ask for.
SERVER_MAX_K = 1000
#: Environment variable holding the bearer token of the write endpoints.
SERVER_TOKEN_ENV = "RETRIEVAL_TOKEN"
#: Square side images are resized to when neither ``size`` nor the source
#: (an IDX file) gives one.
DEFAULT_IMAGE_SIZE = 32

# -- builds of large collections ---------------------------------------------------
#: Items the encoders of a build are fitted on (``--train-sample``): a seeded
#: uniform sample of a larger collection; every item is still encoded. A sample
#: at least as large as the collection is the whole collection. Measured
#: (BENCHMARKS.md, "Training on a sample"): fitted on 5,000 of 20NG's 11,290
#: postings the autoencoder loses 0.031 of precision@100, more than the 0.01
#: allowed; so the defaults lie above both benchmark corpora (which keep their
#: figures) and bound the fitting of a larger collection at what 50,000
#: documents or 60,000 images cost.
TRAIN_SAMPLE_DOCS = 50_000
TRAIN_SAMPLE_IMAGES = 60_000

# -- VQ codes (issue 14) -----------------------------------------------------------
#: Training rows whose codes seed the VQ codebook (k-means) and find its dead
#: entries after every epoch (a fixed sample: cheap next to an epoch).
VQ_SAMPLE = 10_000
#: Default groups (bytes per item) and codebook entries per group of ``--quantize vq``.
VQ_GROUPS = 8
VQ_CODEBOOK = 256
#: Decay of the moving averages the VQ codebook follows (EMA updates); 0: it learns by its own loss.
VQ_DECAY = 0.99
#: ``--quantize``: float codes, or VQ-VAE codes (groups quantised to a learned codebook).
QUANTIZE_MODES = ("none", "vq")
#: The space VQ quantises: ``whitened`` (the float codes' retrieval space,
#: centred and partially whitened, the whole code unit length) or ``groups``
#: (the raw code; what indexes built before the choice existed use). Either
#: way ``unit_groups`` then scales each group to unit length. Each modality's
#: defaults (``vq_space``, ``unit_groups``, ``vq_freeze_encoder`` below) were
#: chosen on a validation split: BENCHMARKS.md, "Fourth round: VQ in the float
#: codes' space".
VQ_SPACES = ("whitened", "groups")


def check_vq_options(config) -> None:
    """Validate the ``--quantize`` options of a build config (the encoder checks them again when fitted)."""
    _check_choice("--quantize", config.quantize, QUANTIZE_MODES)
    if config.quantize != "vq":
        return
    from .encoders.vq import check_decay, check_quantizer

    if config.bits:
        raise InputError("--quantize vq and --bits exclude each other: VQ codes are --groups bytes, not bits")
    check_quantizer(config.groups, config.codebook, config.code_dim)
    _check_choice("vq_space", config.vq_space, VQ_SPACES)
    dim = config.baseline_dim or config.code_dim
    if dim % config.groups:
        raise InputError(f"--baseline-dim {dim} must be a multiple of --groups {config.groups} "
                         "(the PQ baseline splits it into groups)")
    Range("--vq-epochs", 1).check(config.vq_epochs)
    Range("commitment", 0, integer=False).check(config.commitment)
    check_decay(config.codebook_decay)
#: Items read, vectorised and encoded at a time by a build: what bounds its
#: memory (besides what the indexes themselves hold).
BUILD_CHUNK_DOCS = 10_000
BUILD_CHUNK_IMAGES = 10_000


def _check_choice(option: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{option} must be one of {', '.join(allowed)}; got {value!r}")


class Range(NamedTuple):
    """The values a numeric option accepts (bounds inclusive unless ``open_low`` / ``open_high``).

    Attributes:
        option: The name shown in the error (the CLI flag, e.g. ``--code-dim``).
        low, high: The bounds (``None``: unbounded).
        integer: Only whole numbers.
        open_low, open_high: Exclude the bound itself.
        optional: ``None`` is allowed (a default decided later).
    """

    option: str
    low: float | None = None
    high: float | None = None
    integer: bool = True
    open_low: bool = False
    open_high: bool = False
    optional: bool = False

    def check(self, value) -> None:
        """Raise :class:`InputError` naming the option, ``value`` and the range unless ``value`` is in it."""
        if value is None and self.optional:
            return
        kind = Integral if self.integer else Real
        ok = isinstance(value, kind) and not isinstance(value, bool) and value == value  # NaN != NaN
        if ok and self.low is not None:
            ok = value > self.low if self.open_low else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.open_high else value <= self.high
        if not ok:
            bounds = [f"{'>' if self.open_low else '>='} {self.low}"] if self.low is not None else []
            bounds += [f"{'<' if self.open_high else '<='} {self.high}"] if self.high is not None else []
            raise InputError(f"{self.option} must be {'an integer' if self.integer else 'a number'} "
                             f"{' and '.join(bounds)}; got {value!r}")


def check_widths(option: str, value, *, allow_empty: bool = False) -> None:
    """Raise :class:`InputError` unless ``value`` is a sequence of layer widths (integers >= 1)."""
    ok = isinstance(value, (tuple, list)) and (allow_empty or len(value) > 0) and all(
        isinstance(v, Integral) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok:
        raise InputError(f"{option} must be {'' if allow_empty else 'one or more '}widths >= 1 "
                         f"(comma-separated on the command line, like 500,250); got {value!r}")


#: Two-stage search: the Hamming shortlist size and radius (``query``, ``evaluate``).
SHORTLIST_RANGE = Range("--shortlist", 1, optional=True)
RADIUS_RANGE = Range("--radius", 0, optional=True)
#: Seeds go to NumPy's legacy seeding (through Keras and scikit-learn): 0 to 2**32 - 1.
_SEED = Range("--seed", 0, 2**32 - 1)
#: The numeric build options both modalities share; each config adds its own.
_BUILD_RANGES = {
    "code_dim": Range("--code-dim", 1), "epochs": Range("--epochs", 1), "batch_size": Range("batch_size", 1),
    "learning_rate": Range("learning_rate", 0, integer=False, open_low=True),
    "noise": Range("--noise", 0, 1, integer=False, open_high=True), "binary_epochs": Range("--binary-epochs", 1),
    "baseline_dim": Range("--baseline-dim", 1, optional=True), "seed": _SEED,
    "train_sample": Range("--train-sample", 0, optional=True),
}


def check_two_stage(shortlist: int | None, radius: int | None) -> None:
    """Validate ``--shortlist`` (``None``: the default) and ``--radius`` (``None``: off)."""
    SHORTLIST_RANGE.check(shortlist)
    RADIUS_RANGE.check(radius)


def _check_ranges(config, ranges: dict[str, Range]) -> None:
    for field, allowed in ranges.items():
        allowed.check(getattr(config, field))


def check_query_field(value: str) -> str:
    """Validate an ``evaluate --query-field`` value (one of :data:`QUERY_FIELDS`)."""
    _check_choice("--query-field", value, QUERY_FIELDS)
    return value


def _resolve_baselines(config, floats: tuple[str, ...]) -> None:
    """Fill in the default baselines and check them against ``--bits``."""
    value = config.baselines
    if value is None:
        value = floats + (HASH_BASELINES if config.bits else ())
    value = _parse_baselines(value, floats + HASH_BASELINES)
    hashing = [v for v in value if v in HASH_BASELINES]
    if hashing and not config.bits:
        raise InputError(f"baseline {hashing[0]!r} makes binary codes; give --bits (e.g. --bits 64) or drop it")
    object.__setattr__(config, "baselines", value)
    if config.bits is not None:
        from .encoders.hashing import check_bits

        check_bits(config.bits)


def _parse_baselines(value, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip() and v.strip() != "none"]
    value = tuple(value)
    bad = [v for v in value if v not in allowed]
    if bad:
        raise InputError(f"unknown baseline {bad[0]!r}; use a comma-separated subset of {','.join(allowed)} or 'none'")
    return value


@dataclass(frozen=True)
class _Config:
    def to_dict(self) -> dict:
        """Plain JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict):
        """Rebuild from :meth:`to_dict`, ignoring unknown keys."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class DocsConfig(_Config):
    """Options of ``retrieval index docs``.

    Attributes:
        vocab_size: TF-IDF vocabulary cap.
        strip: ``"email"`` to remove headers, quotes and signatures.
        labels_from_folders: Label = first-level sub-folder.
        code_dim: Autoencoder code dimension.
        hidden: Autoencoder hidden layer widths.
        epochs: Maximum training epochs.
        batch_size: Mini-batch size.
        learning_rate: Adam learning rate.
        noise: Input dropout (denoising) rate.
        short_views: Share of training documents replaced, each batch, by a
            short view (a few of their words) that still reconstructs the
            whole document: training for short queries (off when ``noise``
            is set: dense inputs, dropout is the corruption).
        decoder_hidden: Decoder hidden widths (empty: code -> softmax directly).
        code_norm: Batch-normalise the code.
        neighbours: Neighbours mixed into the reconstruction target (0: off).
        neighbour_weight: Their weight in the target.
        pretrain: ``"none"`` or ``"layerwise"``.
        quantize: ``"vq"``: VQ-VAE codes of ``groups`` bytes per item (each
            group one of ``codebook`` learned vectors, ``vq_epochs`` of
            training through the quantiser, commitment weight
            ``commitment``, in the space ``vq_space``),
            searched with the query float; the build adds ``pq-ae`` and the
            linear baseline in FAISS' product quantiser at the same bytes.
        groups, codebook, commitment, vq_epochs: See ``quantize``.
        vq_space: ``whitened`` or ``groups`` (see :data:`VQ_SPACES`).
        unit_groups: Scale each group to unit length in the quantised space.
        vq_freeze_encoder: Keep the encoder's float-phase weights through the
            VQ phase (the codebook and the decoder still learn).
        codebook_decay: Decay of the moving averages the VQ codebook follows
            (0: the codebook learns by its own loss).
        bits: Learn binary codes of this many bits (semantic hashing) instead
            of float codes; ``None`` for float codes.
        binary_epochs: Epochs of binarised training after the float phase.
        keep_inputs: Keep the TF-IDF matrix in the index (needed by
            ``--like``, ``--rerank tfidf`` and ``plot``).
        baselines: Baselines built beside the autoencoder (``lsa``, ``tfidf``,
            and with ``bits`` also ``itq``, ``lsh``); ``None`` for all.
        baseline_dim: LSA dimension (default: the code dimension).
        index_kind: ``auto``, ``flat``, ``ivf`` or ``hnsw``.
        train_sample: Fit the autoencoder and the baselines on a seeded
            uniform sample of this many documents, then encode every
            document (``0`` or ``None``: fit on all).
        seed: Random seed of everything.
    """

    vocab_size: int = 10_000
    strip: str | None = None
    labels_from_folders: bool = False
    code_dim: int = 32
    hidden: tuple[int, ...] = (500, 250)
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 2e-3
    noise: float = 0.0
    short_views: float = 0.5
    decoder_hidden: tuple[int, ...] = ()
    code_norm: bool = True
    neighbours: int = 20
    neighbour_weight: float = 0.8
    pretrain: str = "none"
    bits: int | None = None
    binary_epochs: int = 5
    quantize: str = "none"
    groups: int = VQ_GROUPS
    codebook: int = VQ_CODEBOOK
    commitment: float = 0.25
    unit_groups: bool = True
    vq_space: str = "groups"
    vq_freeze_encoder: bool = False
    vq_epochs: int = 5
    codebook_decay: float = VQ_DECAY
    keep_inputs: bool = True
    baselines: tuple[str, ...] | None = None
    baseline_dim: int | None = None
    index_kind: str = "auto"
    train_sample: int | None = TRAIN_SAMPLE_DOCS
    seed: int = 0

    def __post_init__(self):
        _resolve_baselines(self, DOC_BASELINES)
        _check_ranges(self, _DOCS_RANGES)
        check_vq_options(self)
        check_widths("--hidden", self.hidden)
        check_widths("decoder_hidden", self.decoder_hidden, allow_empty=True)
        if self.strip not in (None, "", "none") + STRIP_MODES:
            raise InputError(f"--strip must be one of {', '.join(STRIP_MODES)} or left out; got {self.strip!r}")
        _check_choice("--pretrain", self.pretrain, PRETRAIN_MODES)
        _check_choice("--index", self.index_kind, INDEX_KINDS)


@dataclass(frozen=True)
class ImagesConfig(_Config):
    """Options of ``retrieval index images``.

    Attributes:
        size: Square side images are resized to (``None``: native size of an
            IDX file, else the reader's default).
        color: ``auto``, ``grey`` or ``rgb``.
        fit: ``pad`` (letterbox) or ``crop`` (centre crop).
        labels_from_folders: Label = first-level sub-folder.
        code_dim: Autoencoder code dimension.
        filters: Channels of the strided convolutions.
        decoder: ``dense``, ``deconv`` (transposed convolutions) or
            ``unpool`` (max-pooling encoder, max-unpooling decoder).
        epochs: Maximum training epochs.
        batch_size: Mini-batch size.
        learning_rate: Adam learning rate.
        patience: Early stopping: epochs without a lower validation loss
            before training stops (the best epoch's weights are kept).
        noise: Input dropout (denoising) rate.
        whiten: Partial whitening exponent of the codes.
        augment: Shift/mirror corruption in training (fraction of the side).
        mirror: Mirroring in that corruption (off for glyphs such as digits).
        bits: Learn binary codes of this many bits instead of float codes.
        binary_epochs: Epochs of binarised training after the float phase.
        keep_inputs: Keep the pixels in the index (needed by ``--like``,
            ``--show``, ``--rerank pixels`` and ``plot``).
        baselines: Baselines built beside the autoencoder (``pca``, ``pixels``,
            and with ``bits`` also ``itq``, ``lsh``); ``None`` for all.
        baseline_dim: PCA dimension (default: the code dimension).
        index_kind: ``auto``, ``flat``, ``ivf`` or ``hnsw``.
        limit: Index at most this many images (``None``: all).
        train_sample: Fit the autoencoder and the baselines on a seeded
            uniform sample of this many images, then encode every image
            (``0`` or ``None``: fit on all).
        seed: Random seed of everything.
    """

    size: int | None = None
    color: str = "auto"
    fit: str = "pad"
    labels_from_folders: bool = False
    code_dim: int = 32
    filters: tuple[int, ...] = (32, 64, 128)
    decoder: str = "dense"
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 3
    noise: float = 0.0
    whiten: float = 0.25
    augment: float = 0.07
    mirror: bool = True
    bits: int | None = None
    binary_epochs: int = 4
    quantize: str = "none"
    groups: int = VQ_GROUPS
    codebook: int = VQ_CODEBOOK
    commitment: float = 0.25
    # Chosen on Fashion-MNIST's validation split: BENCHMARKS.md, "Fourth round".
    unit_groups: bool = False
    vq_space: str = "whitened"
    vq_freeze_encoder: bool = True
    vq_epochs: int = 4
    codebook_decay: float = VQ_DECAY
    keep_inputs: bool = True
    baselines: tuple[str, ...] | None = None
    baseline_dim: int | None = None
    index_kind: str = "auto"
    limit: int | None = None
    train_sample: int | None = TRAIN_SAMPLE_IMAGES
    seed: int = 0

    def __post_init__(self):
        _resolve_baselines(self, IMAGE_BASELINES)
        _check_ranges(self, _IMAGES_RANGES)
        check_vq_options(self)
        check_widths("--filters", self.filters)
        if self.patience < 1:
            raise InputError(f"--patience must be >= 1 epoch; got {self.patience}")
        if self.size is not None and not 8 <= self.size <= 512:
            raise InputError(f"--size must be between 8 and 512 pixels; got {self.size}")
        _check_choice("--color", self.color, COLORS)
        _check_choice("--fit", self.fit, FITS)
        _check_choice("--decoder", self.decoder, DECODERS)
        if self.decoder == "unpool" and self.bits:
            raise InputError(f"--decoder unpool does not combine with --bits {self.bits}; "
                             "use --decoder deconv or dense for binary codes")
        if self.decoder == "unpool" and getattr(self, "quantize", None) == "vq":
            # The VQ phase feeds the decoder quantised codes alone; unpooling needs the encoder's maps too.
            raise InputError("--decoder unpool does not combine with --quantize vq; use --decoder deconv or dense")
        _check_choice("--index", self.index_kind, INDEX_KINDS)


_DOCS_RANGES = _BUILD_RANGES | {
    "vocab_size": Range("--vocab-size", 1), "short_views": Range("--short-views", 0, 1, integer=False),
    "neighbours": Range("--neighbours", 0), "neighbour_weight": Range("--neighbour-weight", 0, 1, integer=False),
}
#: ``whiten``: 0 is none, 0.5 full whitening (see ``_partial_whitening``); ``augment``: shifts up to half the side.
_IMAGES_RANGES = _BUILD_RANGES | {
    "whiten": Range("--whiten", 0, 0.5, integer=False), "augment": Range("--augment", 0, 0.5, integer=False),
    "limit": Range("--limit", 1, optional=True),
}


# -- the crawler -------------------------------------------------------------------
def _user_agent() -> str:
    from . import __version__

    return f"retrieval/{__version__} (+https://github.com/retrieval/retrieval; image crawler)"


#: User-Agent sent by the crawler; robots.txt groups match on ``retrieval``.
DEFAULT_USER_AGENT = _user_agent()
#: Largest response body the crawler accepts, in bytes.
CRAWL_MAX_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class CrawlConfig:
    """Limits and politeness settings of one crawl.

    The dataclass is frozen so the shared default instance of :func:`crawl`
    cannot be changed by accident; use :func:`dataclasses.replace` to derive
    variants.

    Attributes:
        allow_hosts: Further host names whose pages may be followed besides the
            start host (``"docs.example.com"``; a ``host:port`` entry matches
            only that port). Images are fetched from any host regardless.
        max_depth: Link distance from the start page (depth 0) beyond which
            pages are not fetched, or ``None`` for no limit. Images on pages at
            ``max_depth`` are still collected.
        max_pages: Maximum number of pages crawled successfully.
        max_images: Maximum number of images saved by this run.
        concurrency: Maximum number of HTTP requests in flight at any time.
        timeout: Seconds allowed per request (connect, headers and body).
        max_bytes: Largest accepted response body in bytes.
        max_redirects: Redirects followed per URL before giving up.
        respect_robots: Obey robots.txt ``Disallow`` and ``Crawl-delay``.
        user_agent: ``User-Agent`` header sent with every request.
        retries: Further attempts at a URL answered with HTTP 429 or 503.
        backoff: Seconds before the first such retry; doubled for each next
            one. A ``Retry-After`` header replaces it.
        max_retry_wait: Seconds the crawl may pause one host in total for
            retries. A ``Retry-After`` longer than what is left, or a spent
            budget, skips the URL instead of waiting.
    """

    allow_hosts: tuple[str, ...] = ()
    # No depth limit: pages are crawled nearest first, so max_pages already
    # drops the farthest ones, while a depth limit cuts long chains the page
    # budget would afford (five pages of "next" links need depth 4; wget -r
    # stops at 5, Scrapy's DEPTH_LIMIT is off by default). The crawl reports
    # how many links either limit left unfollowed.
    max_depth: int | None = None
    max_pages: int = 200
    max_images: int = 10_000
    concurrency: int = 8
    timeout: float = 10.0
    max_bytes: int = CRAWL_MAX_BYTES
    max_redirects: int = 5
    respect_robots: bool = True
    user_agent: str = DEFAULT_USER_AGENT
    # Three retries 1, 2 and 4 s apart ride out a brief overload; a host that
    # keeps refusing costs the crawl at most two minutes, not one per URL.
    retries: int = 3
    backoff: float = 1.0
    max_retry_wait: float = 120.0

    def __post_init__(self) -> None:
        hosts = self.allow_hosts
        # A bare string would otherwise turn into a tuple of single letters.
        if isinstance(hosts, str):
            hosts = (hosts,)
        object.__setattr__(self, "allow_hosts", tuple(hosts))
        minimums = {
            "max_depth": 0, "max_pages": 1, "max_images": 0, "concurrency": 1,
            "max_bytes": 1, "max_redirects": 0, "retries": 0,
        }
        for name, low in minimums.items():
            value = getattr(self, name)
            if name == "max_depth" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(
                    f"CrawlConfig.{name} must be an integer >= {low}, got {value!r}"
                )
        for name in ("timeout", "backoff", "max_retry_wait"):
            value = getattr(self, name)
            # A timeout of 0 would fail every request; no wait between retries is fine.
            bound = "> 0" if name == "timeout" else ">= 0"
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
                value > 0 if name == "timeout" else value >= 0
            )
            if not ok:
                raise InputError(
                    f"CrawlConfig.{name} must be a number of seconds {bound}, got {value!r}"
                )
        if not self.user_agent.strip():
            raise InputError("CrawlConfig.user_agent must not be empty")
