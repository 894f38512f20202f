"""Synthetic labelled corpora for scale tests, resampled from real data.

Two generators, both streaming (memory bounded by one chunk, whatever ``N``)
and deterministic for a given ``--seed``:

``docs N OUT``
    ``N`` labelled documents written as JSONL (``{"id", "text", "label"}`` per
    line, the product's ``.jsonl`` reader takes it as it is). The source is the
    20 Newsgroups training postings, read and cleaned exactly as
    ``retrieval index docs SOURCE --labels-from-folders --strip email`` reads
    them, then tokenised as the product's TF-IDF tokenises (lower case, words
    of two or more word characters). A synthetic document of label ``l``:

    * its *primary* posting: a real posting drawn uniformly from the training
      set (so labels keep their training frequencies), ``l`` its label;
    * a *secondary* posting: another posting of label ``l`` at random;
    * its length: the length of a third random posting of ``l`` (the label's
      own length distribution), clipped to ``[--min-words, --max-words]``;
    * each word, independently: with probability ``mix[0]`` a word drawn from
      the primary posting's words (with their frequencies), ``mix[1]`` from
      the secondary's, ``mix[2]`` from the label's unigram distribution (all
      its postings' words together).

    So every document is a bag of words of its label's vocabulary centred on
    one real posting's subject, never a copy of a posting (words are drawn
    with replacement, mixed with a second posting and the label's words), and
    two documents rarely share both postings: at a million documents a
    primary posting recurs ~90 times, but a (primary, secondary) pair almost
    never, so the corpus does not degenerate into clusters of near-copies
    that would inflate precision@100. Word order is random (every method of
    the product is a bag of words).

``images N OUT``
    ``N`` Fashion-MNIST training images, each a random training image shifted
    by up to ``--max-shift`` pixels in each direction (blank pixels filled with
    0, the background) and its intensity scaled by a random factor in
    ``[1 - jitter, 1 + jitter]``, written as the IDX pair
    ``OUT/train-images-idx3-ubyte.gz`` + ``OUT/train-labels-idx1-ubyte.gz``
    (index ``OUT/train-images-idx3-ubyte.gz``; the reader finds the labels).

Usage (from a checkout)::

    python benchmarks/synth_corpus.py docs 1000000 /tmp/synth/docs-1m.jsonl \\
        --source /tmp/ng/20news-bydate-train --seed 0
    python benchmarks/synth_corpus.py images 1000000 /tmp/synth/fashion-1m \\
        --source /usr/share/datasets/fashion-mnist --seed 0 --max-shift 2

Each run prints its wall time, peak RSS and output size on stderr. Outputs
are written to a temporary name and renamed when complete.
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import resource
import struct
import sys
import time
import warnings
from pathlib import Path

import numpy as np

# Run from a source checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.sources.documents import read_documents  # noqa: E402
from retrieval.sources.images import read_idx  # noqa: E402

#: scikit-learn's default ``token_pattern``, the one the product's
#: TextVectorizer uses: synthetic words are exactly the tokens it will see.
TOKEN = re.compile(r"(?u)\b\w\w+\b")
DEFAULT_DOCS_SOURCE = "/tmp/ng/20news-bydate-train"
DEFAULT_IMAGES_SOURCE = "/usr/share/datasets/fashion-mnist"
#: (primary posting, secondary posting of the label, label unigram).
DEFAULT_MIX = (0.5, 0.3, 0.2)
CHUNK = 10_000


# --------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------


class WordModel:
    """The training postings as token ids, grouped by label.

    Postings are sorted by label, so a label's postings and a label's tokens
    are contiguous ranges: drawing a uniform position in a range is drawing
    from that label's postings or from its unigram distribution.

    Attributes:
        labels: Label names, in id order.
        vocab: Token strings, in id order.
        tokens: int32 token ids of every posting, concatenated.
        starts, lengths: Per posting, its range in ``tokens``.
        posting_label: Per posting, its label id.
        label_first, label_count: Per label, its postings' range.
        label_tok_first, label_tok_count: Per label, its tokens' range.
    """

    def __init__(self, texts: list[str], labels: list[str]) -> None:
        vocab: dict[str, int] = {}
        label_names = sorted(set(labels))
        label_ids = {name: i for i, name in enumerate(label_names)}
        per_label: list[list[list[int]]] = [[] for _ in label_names]
        for text, label in zip(texts, labels):
            ids = [vocab.setdefault(w, len(vocab)) for w in TOKEN.findall(text.lower())]
            if ids:  # a posting without a token can neither be a template nor be found
                per_label[label_ids[label]].append(ids)
        postings = [ids for group in per_label for ids in group]
        if not postings:
            raise ValueError("no posting has a word of two or more letters")
        self.labels = label_names
        self.vocab = list(vocab)
        self.lengths = np.array([len(p) for p in postings], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.tokens = np.fromiter((t for p in postings for t in p), dtype=np.int32, count=int(self.lengths.sum()))
        self.label_count = np.array([len(g) for g in per_label], dtype=np.int64)
        self.label_first = np.concatenate([[0], np.cumsum(self.label_count)[:-1]])
        self.posting_label = np.repeat(np.arange(len(label_names)), self.label_count)
        tok_per_label = np.bincount(self.posting_label, weights=self.lengths, minlength=len(label_names))
        self.label_tok_count = tok_per_label.astype(np.int64)
        self.label_tok_first = np.concatenate([[0], np.cumsum(self.label_tok_count)[:-1]])

    @classmethod
    def from_folders(cls, source: str | Path) -> "WordModel":
        """Read ``source/<label>/<posting>`` as ``index docs --labels-from-folders --strip email`` does."""
        with warnings.catch_warnings():
            # Postings that are empty once stripped are skipped with a warning each.
            warnings.simplefilter("ignore")
            corpus = read_documents(source, labels_from_folders=True, strip="email")
        items = [item for item in corpus.items if item.label is not None]
        return cls([item.text for item in items], [item.label for item in items])


def _same_label(rng: np.random.Generator, model: WordModel, label: np.ndarray) -> np.ndarray:
    """One random posting of each given label."""
    return model.label_first[label] + (rng.random(len(label)) * model.label_count[label]).astype(np.int64)


def sample_documents(model: WordModel, n: int, rng: np.random.Generator, *, mix=DEFAULT_MIX,
                     min_words: int = 10, max_words: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` synthetic documents (see the module docstring).

    Returns:
        ``(label, lengths, words)``: label id and word count per document, and
        the token ids of all documents concatenated.
    """
    primary = rng.integers(len(model.lengths), size=n)
    label = model.posting_label[primary]
    secondary = _same_label(rng, model, label)
    lengths = np.clip(model.lengths[_same_label(rng, model, label)], min_words, max_words)
    # Per document, the three ranges its words are drawn from (columns:
    # primary posting, secondary posting, label unigram) ...
    first = np.stack([model.starts[primary], model.starts[secondary], model.label_tok_first[label]], axis=1)
    count = np.stack([model.lengths[primary], model.lengths[secondary], model.label_tok_count[label]], axis=1)
    # ... and per word, which of them: one flat gather instead of a where per component.
    bounds = np.cumsum(np.asarray(mix, dtype=np.float64) / sum(mix))[:-1]
    u = rng.random(int(lengths.sum()))
    flat = np.repeat(np.arange(n) * 3, lengths) + (u >= bounds[0]) + (u >= bounds[1])
    positions = first.ravel()[flat] + (rng.random(len(flat)) * count.ravel()[flat]).astype(np.int64)
    return label, lengths, model.tokens[positions]


class _LineWriter:
    """Renders chunks of documents as JSONL bytes with NumPy gathers, no per-document Python.

    Every piece of a line (the ``{"id": ..., "text": "`` head, each word with
    or without its leading space, the ``", "label": ...}`` tail) is an entry of
    one byte table; a chunk is the concatenation of its pieces' bytes, and the
    zero-padded id digits are written into the heads afterwards. Tokens are
    ``\\w`` characters only, so they need no JSON escaping.
    """

    def __init__(self, model: WordModel, width: int) -> None:
        words = [w.encode() for w in model.vocab]
        self.vocab = len(words)
        self.width = width
        self.digits_at = len(b'{"id": "s')
        head = b'{"id": "s' + b"0" * width + b'", "text": "'
        tails = [f'", "label": {json.dumps(name)}}}\n'.encode() for name in model.labels]
        entries = [b" " + w for w in words] + words + tails + [head]
        self.head = len(entries) - 1
        self.tail = 2 * self.vocab
        self.sizes = np.array([len(e) for e in entries], dtype=np.int64)
        self.offsets = np.cumsum(self.sizes) - self.sizes
        self.table = np.frombuffer(b"".join(entries), dtype=np.uint8)

    def render(self, label: np.ndarray, lengths: np.ndarray, words: np.ndarray, first_id: int) -> np.ndarray:
        """The JSONL lines of one chunk of documents, as a uint8 array."""
        n = len(lengths)
        head_slot = np.cumsum(lengths + 2) - (lengths + 2)
        pieces = np.empty(len(words) + 2 * n, dtype=np.int64)
        pieces[np.arange(len(words)) + np.repeat(2 * np.arange(n) + 1, lengths)] = words
        pieces[head_slot] = self.head
        pieces[head_slot + 1] += self.vocab  # the first word, without its leading space
        pieces[head_slot + lengths + 1] = self.tail + label
        size = self.sizes[pieces]
        start = np.cumsum(size) - size
        out = self.table[np.repeat(self.offsets[pieces] - start, size) + np.arange(int(size.sum()))]
        ids = np.arange(first_id, first_id + n)
        for k in range(self.width):
            out[start[head_slot] + self.digits_at + k] = 48 + ids // 10 ** (self.width - 1 - k) % 10
        return out


def write_documents(model: WordModel, n: int, out: str | Path, *, seed: int = 0, mix=DEFAULT_MIX,
                    min_words: int = 10, max_words: int = 1000, chunk: int = CHUNK) -> dict:
    """Write ``n`` synthetic documents to the JSONL file ``out``.

    Returns:
        ``{"documents", "words", "bytes"}`` of what was written.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = _LineWriter(model, width=len(str(max(n - 1, 0))))
    total_words = 0
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as fh:
        for begin in range(0, n, chunk):
            label, lengths, words = sample_documents(model, min(chunk, n - begin), rng, mix=mix,
                                                     min_words=min_words, max_words=max_words)
            fh.write(lines.render(label, lengths, words, begin).data)
            total_words += int(lengths.sum())
    os.replace(tmp, out)
    return {"documents": n, "words": total_words, "bytes": out.stat().st_size}


# --------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------


def _idx_header(dtype_code: int, dims: tuple[int, ...]) -> bytes:
    return struct.pack(">HBB", 0, dtype_code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def shift_images(images: np.ndarray, dy: np.ndarray, dx: np.ndarray, max_shift: int) -> np.ndarray:
    """Shift each image by ``(dy[i], dx[i])`` pixels, filling with 0; one gather for the batch."""
    n, rows, cols = images.shape
    s = max_shift
    padded = np.pad(images, ((0, 0), (s, s), (s, s)))
    r = np.arange(rows)[None, :] - dy[:, None] + s
    c = np.arange(cols)[None, :] - dx[:, None] + s
    return padded[np.arange(n)[:, None, None], r[:, :, None], c[:, None, :]]


def write_images(source: str | Path, n: int, out: str | Path, *, seed: int = 0, max_shift: int = 2,
                 jitter: float = 0.1, chunk: int = CHUNK, compresslevel: int = 1) -> dict:
    """Write ``n`` shifted, intensity-jittered training images as an IDX pair in the folder ``out``.

    gzip level 1: compression is most of the time, and level 6 saves only 3 %
    of the size on these images at 1.6 times the CPU.

    Returns:
        ``{"images", "bytes"}``: count and total size of the two files.
    """
    source, out = Path(source), Path(out)
    images = read_idx(source / "train-images-idx3-ubyte.gz")
    labels = read_idx(source / "train-labels-idx1-ubyte.gz")
    if images.ndim != 3 or images.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise ValueError(f"{source}: expected uint8 images (n, rows, cols) and n labels, "
                         f"got {images.dtype} {images.shape} and {labels.shape}")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = {kind: out / f"train-{kind}-idx{nd}-ubyte.gz" for kind, nd in (("images", 3), ("labels", 1))}
    tmps = {kind: path.with_name(path.name + ".tmp") for kind, path in paths.items()}
    with contextlib.ExitStack() as stack:
        # mtime=0 and no file name in the gzip header: the same seed gives the same bytes.
        img_fh, lab_fh = (stack.enter_context(gzip.GzipFile(fileobj=stack.enter_context(tmps[kind].open("wb")),
                                                            filename="", mode="wb", mtime=0,
                                                            compresslevel=compresslevel))
                          for kind in ("images", "labels"))
        img_fh.write(_idx_header(0x08, (n, *images.shape[1:])))
        lab_fh.write(_idx_header(0x08, (n,)))
        for begin in range(0, n, chunk):
            m = min(chunk, n - begin)
            pick = rng.integers(len(images), size=m)
            dy, dx = rng.integers(-max_shift, max_shift + 1, size=(2, m))
            batch = shift_images(images[pick], dy, dx, max_shift)
            if jitter:
                scale = 1.0 + rng.uniform(-jitter, jitter, size=(m, 1, 1)).astype(np.float32)
                batch = np.clip(np.rint(batch * scale), 0, 255)
            img_fh.write(batch.astype(np.uint8).tobytes())
            lab_fh.write(labels[pick].astype(np.uint8).tobytes())
    for kind in paths:
        os.replace(tmps[kind], paths[kind])
    return {"images": n, "bytes": sum(p.stat().st_size for p in paths.values())}


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _mix(text: str) -> tuple[float, float, float]:
    parts = tuple(float(x) for x in text.split(","))
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise argparse.ArgumentTypeError(f"--mix {text!r}: give three non-negative weights, e.g. 0.5,0.3,0.2")
    return parts


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    docs = sub.add_parser("docs", help="labelled JSONL documents resampled from 20 Newsgroups postings")
    docs.add_argument("n", type=int)
    docs.add_argument("out", type=Path, help="the .jsonl file to write")
    docs.add_argument("--source", default=DEFAULT_DOCS_SOURCE, help="folder of per-label folders of postings")
    docs.add_argument("--seed", type=int, default=0)
    docs.add_argument("--mix", type=_mix, default=DEFAULT_MIX,
                      help="weights of primary posting, secondary posting, label unigram (default 0.5,0.3,0.2)")
    docs.add_argument("--min-words", type=int, default=10)
    docs.add_argument("--max-words", type=int, default=1000)
    images = sub.add_parser("images", help="shifted Fashion-MNIST training images as an IDX pair")
    images.add_argument("n", type=int)
    images.add_argument("out", type=Path, help="the folder to write the IDX pair into")
    images.add_argument("--source", default=DEFAULT_IMAGES_SOURCE, help="folder with train-{images,labels}-*.gz")
    images.add_argument("--seed", type=int, default=0)
    images.add_argument("--max-shift", type=int, default=2)
    images.add_argument("--jitter", type=float, default=0.1, help="intensity scale in [1-j, 1+j] (0 = off)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"N={args.n}: give a positive number of items")
    if args.kind == "docs" and not 1 <= args.min_words <= args.max_words:
        parser.error(f"--min-words {args.min_words} --max-words {args.max_words}: need 1 <= min <= max")
    if args.kind == "images" and (args.max_shift < 0 or not 0 <= args.jitter < 1):
        parser.error(f"--max-shift {args.max_shift} --jitter {args.jitter}: need a shift >= 0 and 0 <= jitter < 1")
    started = time.perf_counter()
    if args.kind == "docs":
        if args.out.suffix != ".jsonl":
            parser.error(f"{args.out}: the output must end in .jsonl (the product reads JSONL by its suffix)")
        model = WordModel.from_folders(args.source)
        print(f"read {len(model.lengths):,} postings, {len(model.labels)} labels, {len(model.vocab):,} word types "
              f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        stats = write_documents(model, args.n, args.out, seed=args.seed, mix=args.mix,
                                min_words=args.min_words, max_words=args.max_words)
        stats["mean_words"] = round(stats["words"] / args.n, 1)
    else:
        stats = write_images(args.source, args.n, args.out, seed=args.seed, max_shift=args.max_shift,
                             jitter=args.jitter)
    stats.update(seconds=round(time.perf_counter() - started, 1), peak_rss_mb=round(_peak_rss_mb()))
    print(json.dumps(stats), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
