"""Every backend: exactness against brute force, self-retrieval, persistence."""
import numpy as np
import pytest
import scipy.sparse as sp

from retrieval.errors import InputError
from retrieval.ann import BACKENDS, APPROX_THRESHOLD, FlatIndex, SparseIndex, check_k, make_index

rng = np.random.default_rng(0)
CODES = rng.normal(size=(500, 16)).astype(np.float32)
DENSE_KINDS = ["flat", "ivf", "hnsw"]


def brute_force(codes, queries, metric, k):
    if metric == "cosine":
        a = codes / np.linalg.norm(codes, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        scores = q @ a.T
    else:
        scores = -np.sqrt(((queries[:, None, :] - codes[None]) ** 2).sum(-1))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), order


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_flat_equals_brute_force(metric):
    index = FlatIndex(metric)
    index.add(CODES)
    scores, positions = index.search(CODES[:20] + 0.1, 10)
    want_scores, want_positions = brute_force(CODES, CODES[:20] + 0.1, metric, 10)
    assert np.allclose(scores, want_scores, atol=1e-4)
    assert (positions == want_positions).mean() > 0.99  # ties may swap


@pytest.mark.parametrize("kind", DENSE_KINDS)
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_item_queried_with_itself_ranks_first(kind, metric):
    index = BACKENDS[kind](metric)
    index.add(CODES)
    _, positions = index.search(CODES, 1)
    assert (positions[:, 0] == np.arange(len(CODES))).mean() >= 0.98


@pytest.mark.parametrize("kind", DENSE_KINDS)
def test_approximate_recall(kind):
    index = BACKENDS[kind]("cosine")
    index.add(CODES)
    _, got = index.search(CODES[:50] * 1.01 + 0.05, 10)
    _, want = brute_force(CODES, CODES[:50] * 1.01 + 0.05, "cosine", 10)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)])
    assert recall >= 0.9


@pytest.mark.parametrize("kind", DENSE_KINDS + ["sparse"])
def test_save_load_identical(kind, tmp_path):
    data = sp.random(200, 300, density=0.05, random_state=1, format="csr", dtype=np.float32) if kind == "sparse" \
        else CODES
    index = BACKENDS[kind]("cosine")
    index.add(data)
    index.save(tmp_path)
    loaded = type(index).load(tmp_path, "cosine")
    a, b = index.search(data[:30], 7), loaded.search(data[:30], 7)
    assert len(loaded) == len(index)
    assert np.array_equal(a[1], b[1]) and np.allclose(a[0], b[0])


def test_sparse_equals_dense_cosine():
    X = sp.random(300, 50, density=0.2, random_state=2, format="csr", dtype=np.float32)
    X = X[np.diff(X.indptr) > 0]
    index = SparseIndex()
    index.add(X)
    scores, positions = index.search(X[:25], 5)
    want_scores, _ = brute_force(X.toarray(), X[:25].toarray(), "cosine", 5)
    assert np.allclose(scores, want_scores, atol=1e-5)
    assert (positions[:, 0] == np.arange(25)).all()


def test_sparse_search_in_small_blocks_equals_one_block(monkeypatch):
    import retrieval.ann as ann

    X = sp.random(300, 50, density=0.2, random_state=3, format="csr", dtype=np.float32)
    X = X[np.diff(X.indptr) > 0]
    index = SparseIndex()
    index.add(X)
    whole = index.search(X[:40], 9)
    monkeypatch.setattr(ann, "SPARSE_BLOCK_CELLS", 7 * X.shape[0])  # 7 queries a block
    blocks = index.search(X[:40], 9)
    assert np.array_equal(whole[1], blocks[1]) and np.array_equal(whole[0], blocks[0])


def test_k_larger_than_index_is_clamped():
    index = FlatIndex()
    index.add(CODES[:5])
    scores, positions = index.search(CODES[:2], 100)
    assert positions.shape == (2, 5)


@pytest.mark.parametrize("k", [0, -3])
def test_bad_k(k):
    with pytest.raises(InputError, match="-k must be a positive"):
        check_k(k)


def test_factory():
    assert make_index("auto", "cosine", 100).kind == "flat"
    assert make_index("auto", "cosine", APPROX_THRESHOLD + 1).kind == "hnsw"
    assert make_index("flat", "cosine", 10, sparse=True).kind == "sparse"
    with pytest.raises(InputError, match="unknown index kind"):
        make_index("annoy", "cosine", 10)
