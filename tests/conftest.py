"""Shared fixtures: seeded synthetic corpora and tiny model settings."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


#: Where a fresh build puts its items: its one segment (see retrieval/storage/layout.py).
FIRST_SEGMENT = "segments/g000001"

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


# -- a served store: `retrieval serve` in a subprocess (tests/test_browser.py; usable by server tests) --
SERVED_DOCS, SERVED_IMAGES = "tiny", "pics"


@pytest.fixture(scope="session")
def served_home(tmp_path_factory, built_docs, built_images):
    """One store holding copies of the tiny ``built_docs`` and ``built_images`` indexes, the documents evaluated.

    Copies, not new builds: the suite builds those two once already.

    Returns:
        ``(home, docs corpus dir, image dir)``; the indexes are :data:`SERVED_DOCS` and :data:`SERVED_IMAGES`.
    """
    import shutil

    from retrieval import Store
    from retrieval.api import run_evaluation

    (docs_store, docs_name, docs), (images_store, images_name, images) = built_docs, built_images
    assert (docs_name, images_name) == (SERVED_DOCS, SERVED_IMAGES)
    base = tmp_path_factory.mktemp("served")
    shutil.copytree(docs_store.path(docs_name), base / "home" / SERVED_DOCS)
    shutil.copytree(images_store.path(images_name), base / "home" / SERVED_IMAGES)
    queries = base / "queries"
    write_corpus(queries, synthetic_docs(n_per_topic=3, seed=1), prefix="q")
    run_evaluation(Store(base / "home"), SERVED_DOCS, queries, labels_from_folders=True, k=10)
    return base / "home", docs, images


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m retrieval serve NAME... --port FREE`` on 127.0.0.1, stopped by its PID.

    Args:
        home: The store (``RETRIEVAL_HOME`` of the subprocess).
        names: Indexes to serve.
        *args: More ``serve`` options (``--token``, ...).
        startup: Seconds to wait for ``/healthz`` (start-up loads every index once).
    """

    def __init__(self, home, names, *args: str, startup: float = 120.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()
        env = dict(os.environ, RETRIEVAL_HOME=str(home),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                            os.environ.get("PYTHONPATH")])))
        self.process = subprocess.Popen([sys.executable, "-m", "retrieval", "serve", *names, "--port", str(self.port),
                                         *args], env=env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait(startup)
        except BaseException:
            self.stop()
            raise

    def _wait(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"retrieval serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"retrieval serve did not answer /healthz within {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        """What the server printed so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        """Stop the process (SIGTERM to its PID, SIGKILL after 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: it ignored SIGTERM
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
