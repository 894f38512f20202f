"""benchmarks/synth_corpus.py: synthetic documents and images resampled from tiny fake sources."""
from __future__ import annotations

import gzip
import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from retrieval.sources.documents import read_documents
from retrieval.sources.images import read_idx, read_images

REPO = Path(__file__).resolve().parents[1]
# Each label's words, disjoint, so a generated word names the label it came from.
VOCAB = {
    "sci.space": "orbit rocket launch nasa satellite moon planet shuttle astronaut telescope".split(),
    "rec.autos": "engine wheel brake tire dealer sedan horsepower transmission fuel clutch".split(),
    "sci.med": "doctor patient disease symptom treatment clinic diagnosis surgery vaccine therapy".split(),
}
# Header, quote and signature words: --strip email must keep them out.
NOISE = {"alice", "example", "quoted", "signaturepart"}


@pytest.fixture(scope="module")
def synth():
    spec = importlib.util.spec_from_file_location("synth_corpus", REPO / "benchmarks" / "synth_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def postings(tmp_path_factory):
    """A 20NG-like folder: four mail postings per label, with headers, a quote and a signature."""
    root = tmp_path_factory.mktemp("ng")
    rng = np.random.default_rng(1)
    bodies = {}
    for label, words in VOCAB.items():
        (root / label).mkdir()
        for i in range(4):
            body = " ".join(rng.choice(words, size=int(rng.integers(8, 30))))
            bodies.setdefault(label, []).append(body.split())
            (root / label / str(100 + i)).write_text(
                f"From: alice@example.com\nSubject: about {words[i]}\n\n"
                f"> quoted text\n{body}\n-- \nsignaturepart\n")
    return root, bodies


def _docs(synth, source, n, out, **kwargs):
    synth.write_documents(synth.WordModel.from_folders(source), n, out, **kwargs)
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_documents_keep_their_labels_and_are_not_copies(synth, postings, tmp_path):
    source, bodies = postings
    docs = _docs(synth, source, 60, tmp_path / "d.jsonl", chunk=25, min_words=5, max_words=40)
    assert len(docs) == 60 and len({d["id"] for d in docs}) == 60
    assert all(set(d) == {"id", "text", "label"} for d in docs)
    assert {d["label"] for d in docs} == set(VOCAB)
    for d in docs:
        words = d["text"].split()
        assert 5 <= len(words) <= 40
        # Only the label's own words, and nothing of headers, quotes or signatures.
        assert set(words) <= set(VOCAB[d["label"]])
        assert not set(words) & NOISE
        assert words not in bodies[d["label"]]
    # The product reads the file with its labels.
    corpus = read_documents(tmp_path / "d.jsonl")
    assert [item.label for item in corpus.items] == [d["label"] for d in docs]


def test_documents_are_deterministic_by_seed(synth, postings, tmp_path):
    source, _ = postings
    a = _docs(synth, source, 30, tmp_path / "a.jsonl", seed=3)
    b = _docs(synth, source, 30, tmp_path / "b.jsonl", seed=3)
    c = _docs(synth, source, 30, tmp_path / "c.jsonl", seed=4)
    assert a == b
    assert [d["text"] for d in a] != [d["text"] for d in c]


def test_documents_mix_follows_the_weights(synth, postings, tmp_path):
    # All weight on the primary posting: every document's words come from one posting.
    source, bodies = postings
    docs = _docs(synth, source, 40, tmp_path / "p.jsonl", mix=(1, 0, 0), min_words=20, max_words=20)
    assert all(any(set(d["text"].split()) <= set(body) for body in bodies[d["label"]]) for d in docs)


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """A tiny IDX pair: 12 images 10x10 with a blank border of 2 px, 4 labels."""
    root = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(2)
    images = np.zeros((12, 10, 10), np.uint8)
    images[:, 2:8, 2:8] = rng.integers(1, 256, size=(12, 6, 6))
    labels = np.arange(12) % 4
    _write_idx(root / "train-images-idx3-ubyte.gz", images)
    _write_idx(root / "train-labels-idx1-ubyte.gz", labels)
    return root, images, labels


def test_images_are_shifted_source_images_with_their_labels(synth, fashion, tmp_path):
    source, images, labels = fashion
    out = tmp_path / "out"
    synth.write_images(source, 50, out, max_shift=2, jitter=0, chunk=16)
    got = read_idx(out / "train-images-idx3-ubyte.gz")
    got_labels = read_idx(out / "train-labels-idx1-ubyte.gz")
    assert got.shape == (50, 10, 10) and got.dtype == np.uint8 and got_labels.shape == (50,)
    # The border is blank, so a shift loses no pixel: every image is a source
    # image of the same label rolled by at most 2 px.
    shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    rolled = np.stack([np.roll(images, s, axis=(1, 2)) for s in shifts], axis=1)  # (source, shift, 10, 10)
    equal = (rolled[None] == got[:, None, None]).all(axis=(3, 4))  # (output, source, shift)
    assert equal.any(axis=(1, 2)).all()
    source_of, shift_of = np.unravel_index(equal.reshape(len(got), -1).argmax(axis=1), equal.shape[1:])
    assert (labels[source_of] == got_labels).all()
    moved = (np.array(shifts)[shift_of] != 0).any(axis=1).sum()
    assert moved > 25  # 24 of 25 shifts move the image
    # The product's reader takes the pair as a labelled corpus.
    assert len(read_images(out / "train-images-idx3-ubyte.gz").items) == 50


def test_image_jitter_and_determinism(synth, fashion, tmp_path):
    source, _, _ = fashion
    for name, seed, jitter in (("a", 5, 0.2), ("b", 5, 0.2), ("c", 6, 0.2), ("plain", 5, 0.0)):
        synth.write_images(source, 20, tmp_path / name, seed=seed, max_shift=1, jitter=jitter)
    a, b, c = ((tmp_path / name / "train-images-idx3-ubyte.gz").read_bytes() for name in "abc")
    assert a == b and a != c
    got = read_idx(tmp_path / "a" / "train-images-idx3-ubyte.gz")
    plain = read_idx(tmp_path / "plain" / "train-images-idx3-ubyte.gz").astype(float)
    assert got.dtype == np.uint8 and got.shape == (20, 10, 10)
    # Same picks and shifts as without jitter; each image scaled by one factor in [0.8, 1.2].
    assert ((got > 0) == (plain > 0)).all() and not np.array_equal(got, plain)
    ratio = got.sum(axis=(1, 2)) / plain.sum(axis=(1, 2))
    assert ((ratio > 0.79) & (ratio < 1.21)).all() and np.ptp(ratio) > 0.01


def test_shift_images_moves_pixels_and_fills_with_zero(synth):
    image = np.zeros((1, 5, 5), np.uint8)
    image[0, 0, 4] = 9
    moved = synth.shift_images(image, np.array([2]), np.array([-1]), max_shift=2)
    assert moved.shape == (1, 5, 5) and moved.dtype == np.uint8
    assert moved[0, 2, 3] == 9 and moved.sum() == 9
    assert synth.shift_images(image, np.array([0]), np.array([1]), max_shift=2).sum() == 0  # shifted out


def test_command_line(synth, postings, fashion, tmp_path, capsys):
    assert synth.main(["docs", "7", str(tmp_path / "x.jsonl"), "--source", str(postings[0])]) == 0
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 7
    assert json.loads(capsys.readouterr().err.splitlines()[-1])["documents"] == 7
    assert synth.main(["images", "9", str(tmp_path / "im"), "--source", str(fashion[0])]) == 0
    assert read_idx(tmp_path / "im" / "train-labels-idx1-ubyte.gz").shape == (9,)
    with pytest.raises(SystemExit):
        synth.main(["docs", "7", str(tmp_path / "x.txt"), "--source", str(postings[0])])
    assert "must end in .jsonl" in capsys.readouterr().err
