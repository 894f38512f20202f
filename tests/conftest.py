"""Shared fixtures: seeded synthetic corpora and tiny model settings."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from retrieval.config import DocsConfig, ImagesConfig

TOPICS = {
    "space": "orbit rocket launch nasa satellite moon planet shuttle astronaut telescope mission gravity",
    "cars": "engine wheel brake tire dealer sedan horsepower transmission fuel highway clutch mileage",
    "medicine": "doctor patient disease symptom treatment drug clinic diagnosis surgery vaccine therapy cancer",
    "computers": "keyboard monitor software driver windows memory disk processor graphics printer cable modem",
}
COMMON = "the people think good time year really know make like just work said".split()


def synthetic_docs(n_per_topic: int = 30, seed: int = 0, length: int = 40) -> list[tuple[str, str]]:
    """(label, text) pairs: topic words mixed with common filler words."""
    rng = np.random.default_rng(seed)
    docs = []
    for label, words in TOPICS.items():
        vocab = words.split()
        for _ in range(n_per_topic):
            topical = rng.choice(vocab, size=length // 2)
            filler = rng.choice(COMMON + sum((w.split() for w in TOPICS.values()), []), size=length // 2)
            tokens = np.concatenate([topical, filler])
            rng.shuffle(tokens)
            docs.append((label, " ".join(tokens)))
    return docs


def write_corpus(root, docs, prefix: str = "doc") -> None:
    """Write (label, text) pairs as root/label/prefixNNN.txt."""
    for i, (label, text) in enumerate(docs):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{prefix}{i:03d}.txt").write_text(f"{label} document {i}\n{text}\n")


#: Tiny models: these tests check behaviour, not quality.
TINY_DOCS = DocsConfig(labels_from_folders=True, code_dim=4, hidden=(16,), epochs=3, batch_size=32,
                       neighbours=3, baseline_dim=4)
TINY_IMAGES = ImagesConfig(labels_from_folders=True, size=16, code_dim=4, filters=(4, 8), epochs=2, batch_size=16)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Tests never write into the project's indexes/ folder."""
    monkeypatch.setenv("RETRIEVAL_HOME", str(tmp_path / "home"))


@pytest.fixture
def docs_dir(tmp_path):
    root = tmp_path / "corpus"
    write_corpus(root, synthetic_docs())
    return root


@pytest.fixture
def queries_dir(tmp_path):
    root = tmp_path / "queries"
    write_corpus(root, synthetic_docs(n_per_topic=5, seed=1), prefix="q")
    return root


@pytest.fixture(scope="session")
def built_docs(tmp_path_factory):
    """One tiny document index shared by read-only tests: (store, name, corpus dir)."""
    from retrieval import Store, build_docs_index

    base = tmp_path_factory.mktemp("built")
    root = base / "corpus"
    write_corpus(root, synthetic_docs())
    store = Store(base / "home")
    build_docs_index(root, "tiny", TINY_DOCS, store=store)
    return store, "tiny", root


def synthetic_images(root, n_per_class: int = 12, size: int = 24, seed: int = 0) -> None:
    """Write PNGs of three drawn shapes (labels: disc, square, bars) with noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for label in ("disc", "square", "bars"):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(200, 256, 3)))
            draw = ImageDraw.Draw(img)
            colour = tuple(int(v) for v in rng.integers(0, 120, 3))
            o = int(rng.integers(1, 5))
            if label == "disc":
                draw.ellipse([o, o, size - o, size - o], fill=colour)
            elif label == "square":
                draw.rectangle([o, o, size - o, size - o], fill=colour)
            else:
                for x in range(o, size, 6):
                    draw.rectangle([x, 0, x + 2, size], fill=colour)
            noisy = np.asarray(img, np.int16) + rng.integers(-10, 10, (size, size, 3))
            Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"{label}{i:02d}.png")


@pytest.fixture(scope="session")
def built_images(tmp_path_factory):
    """One tiny image index shared by read-only tests: (store, name, image dir)."""
    from retrieval import Store, build_images_index

    base = tmp_path_factory.mktemp("built_images")
    root = base / "images"
    synthetic_images(root)
    store = Store(base / "home")
    build_images_index(root, "pics", TINY_IMAGES, store=store)
    return store, "pics", root
