"""The build-time self-check: agreement with the baselines beside chance, and degenerate training."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_DOCS

from retrieval import Index, Store
from retrieval.ann import FlatIndex
from retrieval.errors import RetrievalWarning
from retrieval import selfcheck


def test_a_normal_build_agrees_with_the_baselines_above_chance(built_docs):
    store, name, _ = built_docs
    check = store.read_manifest(name)["self_check"]
    assert check["items"] == 120 and check["sample"] == 120 and check["k"] == 10
    assert check["chance"] == pytest.approx(10 / 119, abs=1e-4)
    assert set(check["overlap"]) == {"ae~lsa", "ae~tfidf", "lsa~tfidf"}
    # Four topics of 30 documents: codes that find the topic share far more than chance.
    assert check["overlap"]["ae~tfidf"] > 2 * check["chance"]
    assert check["overlap"]["lsa~tfidf"] > 2 * check["chance"]
    assert check["codes"]["dead_units"] == 0 and check["codes"]["effective_rank"] > 1.5
    assert not any("collapsed" in w or "barely agree" in w for w in check["warnings"])
    assert check["seconds"] < 3


def test_the_cli_prints_the_self_check(built_docs, capsys):
    from retrieval import cli

    store, name, _ = built_docs
    cli._print_built(store.read_manifest(name), False)
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("self-check"))
    assert "ae~lsa" in line and "chance 0.084" in line and "effective rank" in line


class _Constant:
    """A degenerate encoder: every item gets the same code; its loss never fell."""

    binary = False
    dim = 8
    metric = "cosine"
    history_ = {"loss": [2.0, 2.0, 2.0], "val_loss": [1.50, 1.51, 1.50]}

    def transform(self, X):
        return np.ones((X.shape[0], self.dim), np.float32)


class _Identity:
    binary = False
    metric = "cosine"

    def transform(self, X):
        return np.asarray(X, np.float32)


def test_a_degenerate_encoder_triggers_the_warnings():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 16)).astype(np.float32) + np.repeat(rng.normal(size=(3, 16)) * 3, 100, axis=0)
    encoders = {"ae": _Constant(), "lsa": _Identity(), "tfidf": _Identity()}
    indexes = {}
    for method, encoder in encoders.items():
        indexes[method] = FlatIndex("cosine")
        indexes[method].add(encoder.transform(X))
    with pytest.warns(RetrievalWarning) as caught:
        check = selfcheck.run(encoders, indexes, X, linear="lsa", exact="tfidf", seed=0, sample=100)
    messages = " ".join(str(w.message) for w in caught)
    assert "codes collapsed" in messages and "8 of 8 code units are constant" in messages
    assert "val_loss did not fall" in messages and "barely agree" in messages
    assert check["codes"]["dead_units"] == 8 and check["sample"] == 100
    assert check["overlap"]["lsa~tfidf"] == 1.0  # the same codes: the same neighbours
    assert len(check["warnings"]) == 3


def test_a_build_whose_codes_are_all_equal_warns(tmp_path, monkeypatch):
    from conftest import synthetic_docs
    from retrieval.encoders.autoencoder import TextAutoencoder

    def constant(self, X):
        return np.ones((X.shape[0], self.code_dim), np.float32)

    monkeypatch.setattr(TextAutoencoder, "transform", constant)
    docs = synthetic_docs(n_per_topic=30)
    with pytest.warns(RetrievalWarning, match="self-check: the autoencoder's codes collapsed") as caught:
        index = Index.build_docs([t for _, t in docs], labels=[label for label, _ in docs], name="flat",
                                 config=TINY_DOCS, store=Store(tmp_path / "home"))
    assert any("barely agree" in str(w.message) for w in caught)
    assert len(index.manifest["self_check"]["warnings"]) >= 2


def test_overlap_and_health_helpers():
    a = np.array([[1, 2, 3], [4, 5, 6]])
    assert selfcheck.overlap(a, a) == 1.0
    assert selfcheck.overlap(a, np.array([[3, 9, 8], [-1, -1, -1]])) == pytest.approx(1 / 6)
    healthy = selfcheck.code_health(np.random.default_rng(0).normal(size=(200, 8)))
    assert healthy["dead_units"] == 0 and healthy["effective_rank"] > 6 and abs(healthy["mean_cosine"]) < 0.1
    rank_one = selfcheck.code_health(np.outer(np.linspace(-1, 1, 50), np.ones(8)))
    assert rank_one["effective_rank"] == pytest.approx(1.0, abs=0.01)
