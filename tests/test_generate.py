"""The decoder as a generator: grids, paths, samples, top words and explanations (tiny seeded models)."""
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval import Retriever, Store, build_docs_index
from retrieval import generate as gen
from retrieval.api import explain as api_explain
from retrieval.api import generate as api_generate
from retrieval.errors import InputError, ItemNotFound

from conftest import TINY_DOCS, TOPICS, synthetic_docs, write_corpus
from test_cli import run


# -- pure functions ---------------------------------------------------------------------


def test_principal_plane_projects_onto_orthonormal_axes():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(200, 6)) * np.array([5, 3, 1, 0.5, 0.2, 0.1]) + 7
    mean, axes, coords = gen.principal_plane(codes)
    assert np.allclose(mean, codes.mean(axis=0))
    assert np.allclose(axes @ axes.T, np.eye(2), atol=1e-9)
    # The two directions are the two largest-variance ones: here the first two coordinates.
    assert abs(axes[0, 0]) > 0.99 and abs(axes[1, 1]) > 0.99
    assert np.allclose(coords, (codes - mean) @ axes.T)
    assert np.var(coords[:, 0]) > np.var(coords[:, 1])
    with pytest.raises(InputError, match="at least 2"):
        gen.principal_plane(codes[:1])


def test_grid_points_span_the_positions_top_row_first():
    coords = np.column_stack([np.linspace(-1, 1, 101), np.linspace(10, 20, 101)])
    points, xs, ys = gen.grid_points(coords, 4, percentiles=(0, 100))
    assert points.shape == (16, 2)
    assert np.allclose(xs, np.linspace(-1, 1, 4)) and np.allclose(ys, np.linspace(20, 10, 4))
    assert tuple(points[0]) == (-1, 20) and tuple(points[3]) == (1, 20) and tuple(points[-1]) == (1, 10)
    with pytest.raises(InputError, match="--steps"):
        gen.grid_points(coords, 1)


def test_plane_to_codes_inverts_the_projection():
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(50, 2)) @ rng.normal(size=(2, 5))  # rank 2: the plane holds every code
    mean, axes, coords = gen.principal_plane(codes)
    assert np.allclose(gen.plane_to_codes(mean, axes, coords), codes, atol=1e-5)


def test_interpolate_ends_at_both_codes():
    a, b = np.array([0.0, 1.0, 2.0]), np.array([4.0, -1.0, 2.0])
    path = gen.interpolate(a, b, 5)
    assert path.shape == (5, 3) and path.dtype == np.float32
    assert np.array_equal(path[0], a.astype(np.float32)) and np.array_equal(path[-1], b.astype(np.float32))
    assert np.allclose(path[2], (a + b) / 2)


def test_gaussian_sample_matches_the_fitted_moments():
    rng = np.random.default_rng(2)
    codes = rng.multivariate_normal([1, -2, 3], [[2, 0.5, 0], [0.5, 1, 0], [0, 0, 0.1]], size=3000)
    drawn = gen.gaussian_sample(codes, 4000, seed=3)
    assert drawn.shape == (4000, 3)
    assert np.allclose(drawn.mean(axis=0), codes.mean(axis=0), atol=0.1)
    assert np.allclose(np.cov(drawn, rowvar=False), np.cov(codes, rowvar=False), atol=0.15)
    assert np.array_equal(drawn, gen.gaussian_sample(codes, 4000, seed=3))  # seeded
    singular = np.repeat(codes[:, :1], 3, axis=1)  # collinear codes: a singular covariance still samples
    assert np.isfinite(gen.gaussian_sample(singular, 5)).all()


def test_top_and_shared_words():
    vocabulary = ["rocket", "orbit", "engine", "brake", "doctor"]
    first = np.array([0.5, 0.3, 0.1, 0.05, 0.05])
    second = np.array([0.05, 0.4, 0.05, 0.45, 0.05])
    assert [w for w, _ in gen.top_words(first[None], vocabulary, 3)[0]] == ["rocket", "orbit", "engine"]
    shared = gen.shared_words(first, second, vocabulary, 2)
    # "orbit" is high for both; "rocket" and "brake" only for one each.
    assert shared[0]["word"] == "orbit" and shared[0]["first"] == 0.3 and shared[0]["second"] == 0.4
    with pytest.raises(InputError, match="vocabulary"):
        gen.top_words(first[None, :4], vocabulary)


# -- on indexes -------------------------------------------------------------------------

#: Enough training for the decoder to learn the planted topics (still a few seconds).
TOPIC_DOCS = replace(TINY_DOCS, code_dim=8, hidden=(32,), epochs=30)


@pytest.fixture(scope="module")
def topic_docs(tmp_path_factory):
    """A document index of the four planted topics and a binary twin: (store, float name, binary name)."""
    base = tmp_path_factory.mktemp("generate_docs")
    write_corpus(base / "corpus", synthetic_docs(n_per_topic=30, seed=4))
    store = Store(base / "home")
    build_docs_index(base / "corpus", "topics", TOPIC_DOCS, store=store)
    # The binary twin is checked for its codes and notes, not its words: a few epochs do.
    build_docs_index(base / "corpus", "topics-bits", replace(TOPIC_DOCS, epochs=3, bits=8, binary_epochs=2,
                                                             baselines="lsa"), store=store)
    return store, "topics", "topics-bits"


def _ids_of(retriever, label):
    labels = retriever.metadata.labels()
    return [i for i, lab in zip(retriever.metadata.ids(), labels) if lab == label]


def _topical(words, label, k=5):
    return sum(w in TOPICS[label].split() for w, _ in words[:k])


def test_top_words_of_items_and_queries_are_their_topics(topic_docs):
    store, name, _ = topic_docs
    with Retriever(name, store) as retriever:
        vocabulary = set(retriever.state.vocabulary_)
        for label in TOPICS:
            result = gen.words(retriever, like=_ids_of(retriever, label)[0], k=5)
            assert len(result.words) == 1 and {w for w, _ in result.words[0]} <= vocabulary
            assert _topical(result.words[0], label) >= 4, (label, result.words)
            probabilities = [p for _, p in result.words[0]]
            assert probabilities == sorted(probabilities, reverse=True)
        assert _topical(gen.words(retriever, query="doctor patient surgery").words[0], "medicine") >= 4


def test_words_between_two_documents_move_from_one_topic_to_the_other(topic_docs):
    store, name, _ = topic_docs
    with Retriever(name, store) as retriever:
        first, second = _ids_of(retriever, "space")[0], _ids_of(retriever, "cars")[0]
        result = gen.between(retriever, first, second, steps=5, k=5)
        assert len(result.words) == 5 and result.codes.shape == (5, 8)
        assert _topical(result.words[0], "space") >= 4 and _topical(result.words[-1], "cars") >= 4
        # The ends are the items' own codes: their words are the items' top words.
        for end, item in ((result.words[0], first), (result.words[-1], second)):
            own = gen.words(retriever, like=item, k=5).words[0]
            assert [w for w, _ in end] == [w for w, _ in own]
            assert np.allclose([p for _, p in end], [p for _, p in own], rtol=1e-4)


def test_explain_gives_words_both_codes_favour(topic_docs):
    store, name, _ = topic_docs
    space, cars = None, None
    with Retriever(name, store) as retriever:
        space, cars = _ids_of(retriever, "space")[1], _ids_of(retriever, "cars")[1]
    found = api_explain(store, name, "rocket orbit launch", hits=[space, cars], k=5)
    assert [entry["id"] for entry in found] == [space, cars]
    words = [w["word"] for w in found[0]["words"]]
    assert sum(w in TOPICS["space"].split() for w in words) >= 4
    for entry in found:
        for w in entry["words"]:
            assert w["score"] == pytest.approx(np.sqrt(w["query"] * w["hit"]), rel=1e-5)
    # A hit of another topic shares less with the query, and fewer of its topic's words.
    assert sum(w["score"] for w in found[0]["words"]) > sum(w["score"] for w in found[1]["words"])
    assert sum(w["word"] in TOPICS["space"].split() for w in found[1]["words"]) < 4


def test_cli_query_explain_and_explain(topic_docs, monkeypatch, capsys):
    store, name, _ = topic_docs
    monkeypatch.setenv("RETRIEVAL_HOME", str(store.root))
    code, out, err = run(monkeypatch, capsys, "query", name, "nasa rocket moon", "-k", "3", "--explain", "--json")
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 3 and all(len(h["why"]) == 5 for h in hits)
    assert hits[0]["label"] == "space" and sum(w["word"] in TOPICS["space"] for w in hits[0]["why"]) >= 4
    code, out, err = run(monkeypatch, capsys, "explain", name, "nasa rocket moon", "--like", hits[0]["id"], "-k", "3")
    assert code == 0, err
    assert "p(query)" in out and hits[0]["why"][0]["word"] in out
    code, out, err = run(monkeypatch, capsys, "generate", name, "--between", hits[0]["id"], hits[1]["id"],
                         "--steps", "3")
    assert code == 0, err
    assert out.count("t=") == 3
    code, _, err = run(monkeypatch, capsys, "generate", name, "--like", "no/such-id")
    assert code == 1 and err.startswith("error:") and "no/such-id" in err


def test_binary_index_decodes_its_bits_and_says_so(topic_docs, monkeypatch, capsys):
    store, _, name = topic_docs
    with Retriever(name, store) as retriever:
        item = _ids_of(retriever, "medicine")[0]
        result = gen.words(retriever, like=item, k=5)
        assert result.notes == [gen.BINARY_NOTE]
        assert set(np.unique(result.codes)) <= {-1.0, 1.0}
        path = gen.between(retriever, item, _ids_of(retriever, "space")[0], steps=3)
        assert len(np.unique(path.codes[1])) > 2 or not np.array_equal(path.codes[0], path.codes[2])
    monkeypatch.setenv("RETRIEVAL_HOME", str(store.root))
    code, _, err = run(monkeypatch, capsys, "generate", name, "--like", item)
    assert code == 0 and "note: binary index" in err


def test_image_grid_between_and_sample(built_images, tmp_path):
    store, name, _ = built_images
    with Retriever(name, store) as retriever:
        result = gen.grid(retriever, tmp_path / "grid.png", steps=4, max_items=30)
        assert result.images.shape == (16, 16, 16, 3) and result.images.dtype == np.uint8
        assert result.codes.shape == (16, 4) and result.info["items"] == 30
        assert 0 < result.info["explained_variance"] <= 1
        with Image.open(result.out) as img:
            assert img.width > img.height  # the grid beside the map
        encoder = gen.autoencoder(retriever)
        assert np.array_equal(result.images, gen.to_pixels(encoder.decode(result.codes).reshape(16, 16, 16, 3)))

        ids = retriever.metadata.ids()
        path = gen.between(retriever, ids[0], ids[-1], steps=5, out=tmp_path / "path.png")
        stored = retriever.inputs()
        # The path's ends decode to the two items' own reconstructions.
        own = encoder.reconstruct(stored[[0, len(ids) - 1]])
        assert np.abs(path.images[[0, -1]].astype(int) - own.astype(int)).max() <= 1
        with Image.open(path.out) as img:
            assert img.width > 6 * img.height * 0.8  # one row: original, 5 steps, original

        drawn = gen.sample(retriever, 6, tmp_path / "sample.png", seed=1)
        assert drawn.images.shape == (6, 16, 16, 3) and drawn.out.exists()
        assert not np.array_equal(drawn.images[0], drawn.images[1])


def test_image_grid_over_a_2d_autoencoder(built_images, tmp_path):
    store, name, _ = built_images
    result = api_generate(store, name, grid=True, out=tmp_path / "g.png", steps=3, map="autoencoder", epochs=1,
                          max_items=20)
    assert result.images.shape == (9, 16, 16, 3) and result.codes.shape == (9, 2) and result.out.exists()


def test_errors_name_the_fix(built_images, topic_docs, tmp_path):
    store, name, _ = built_images
    docs_store, docs_name, _ = topic_docs
    with Retriever(name, store) as retriever:
        with pytest.raises(ItemNotFound, match="nope"):
            gen.between(retriever, "nope", retriever.metadata.ids()[0], out=tmp_path / "x.png")
        with pytest.raises(InputError, match="--out"):
            gen.between(retriever, *retriever.metadata.ids()[:2])
        with pytest.raises(InputError, match="needs an index of documents"):
            gen.words(retriever, like=retriever.metadata.ids()[0])
        with pytest.raises(InputError, match="--steps"):
            gen.grid(retriever, tmp_path / "x.png", steps=1)
        with pytest.raises(InputError, match=".png"):
            gen.grid(retriever, tmp_path / "x.txt")
    with Retriever(docs_name, docs_store) as retriever:
        with pytest.raises(InputError, match="needs an index of images"):
            gen.grid(retriever, tmp_path / "x.png")
        with pytest.raises(InputError, match="needs an index of images"):
            gen.sample(retriever, 3, tmp_path / "x.png")
    with pytest.raises(InputError, match="exactly one"):
        api_generate(store, name, grid=True, sample=3, out=tmp_path / "x.png")
    with pytest.raises(InputError, match="exactly one"):
        api_generate(store, name)
    with pytest.raises(InputError, match="--out"):
        api_generate(store, name, grid=True)
    with pytest.raises(InputError, match="--like"):
        api_explain(docs_store, docs_name, "rocket", hits=[])


def test_generating_words_imports_no_tensorflow(topic_docs):
    store, name, _ = topic_docs
    code = ("import sys; from retrieval import Retriever, Store; from retrieval import generate as g; "
            f"r = Retriever({name!r}, Store({str(store.root)!r})); w = g.words(r, query='rocket orbit'); "
            "g.explain(r, r.metadata.ids()[:2], query='rocket orbit'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')), len(w.words[0]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "10"]
