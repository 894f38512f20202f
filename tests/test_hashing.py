"""The semantic-hashing baselines (issue #4): LSH and ITQ binary codes."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from retrieval.encoders import ITQEncoder, LSHEncoder, encoder_class, load_encoder
from retrieval.encoders.hashing import (_random_rotation, check_bits, hamming_distances, pack_bits,
                                        unpack_bits)
from retrieval.errors import InputError
from retrieval.vectorize import TextVectorizer
from conftest import synthetic_docs

DOCS = synthetic_docs(15)
TFIDF = TextVectorizer().fit_transform([t for _, t in DOCS])
DOC_LABELS = np.array([label for label, _ in DOCS])


def _clustered_images(n_per: int = 12, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(k, 16, 16, 1))
    noisy = np.repeat(prototypes, n_per, axis=0) + rng.integers(-40, 41, size=(k * n_per, 16, 16, 1))
    return np.clip(noisy, 0, 255).astype(np.uint8), np.repeat(np.arange(k), n_per)


def _clusters(n_per: int = 50, d: int = 50, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k unit-variance Gaussian clusters whose centres are N(0, I) apart."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d))
    X = np.repeat(centres, n_per, axis=0) + rng.standard_normal((k * n_per, d))
    return X.astype(np.float32), np.repeat(np.arange(k), n_per)


IMAGES, IMAGE_LABELS = _clustered_images()
INPUTS = {"tfidf": TFIDF, "images": IMAGES}
FACTORIES = {"lsh": lambda seed=0: LSHEncoder(64, seed=seed), "itq": lambda seed=0: ITQEncoder(16, seed=seed)}
CASES = [(m, i) for m in FACTORIES for i in INPUTS]


def _learned(encoder) -> list[str]:
    return [k for k in vars(encoder) if k.endswith("_") and not k.startswith("_")]


@pytest.fixture(scope="module", params=CASES, ids=[f"{m}-{i}" for m, i in CASES])
def fitted(request):
    method, inputs = request.param
    encoder = FACTORIES[method]()
    X = INPUTS[inputs]
    return encoder, encoder.fit(X), X


def test_fit_returns_self_and_learned_state(fitted):
    encoder, returned, _ = fitted
    assert returned is encoder
    assert _learned(encoder)
    fresh = type(encoder)(**encoder.get_params())
    assert not _learned(fresh)
    with pytest.raises(RuntimeError, match="not fitted"):
        fresh.transform(TFIDF)


def test_transform_gives_packed_uint8_codes(fitted):
    encoder, _, X = fitted
    codes = encoder.transform(X)
    assert codes.dtype == np.uint8 and codes.flags.c_contiguous
    assert codes.shape == (X.shape[0], encoder.n_bits // 8)
    assert encoder.dim == encoder.n_bits and encoder.binary and encoder.metric == "hamming"
    assert len(np.unique(codes, axis=0)) > 1  # not a constant code


def test_float_projection_signs_are_the_bits(fitted):
    encoder, _, X = fitted
    projections = encoder.transform_float(X)
    assert projections.dtype == np.float32 and projections.shape == (X.shape[0], encoder.n_bits)
    assert np.array_equal(unpack_bits(encoder.transform(X), encoder.n_bits), projections > 0)


def test_save_load_gives_identical_codes(fitted, tmp_path):
    encoder, _, X = fitted
    encoder.save(tmp_path)
    assert not list(tmp_path.glob("*.pkl"))
    loaded = load_encoder(encoder.name, tmp_path)
    assert type(loaded) is type(encoder) and loaded.get_params() == encoder.get_params()
    assert np.array_equal(loaded.transform(X), encoder.transform(X))


def test_single_row_equals_batch(fitted):
    encoder, _, X = fitted
    rows = np.vstack([encoder.transform(X[i:i + 1]) for i in range(3)])
    assert np.array_equal(rows, encoder.transform(X)[:3])


@pytest.mark.parametrize("method", list(FACTORIES))
@pytest.mark.parametrize("inputs", list(INPUTS))
def test_seed_decides_the_codes(method, inputs):
    X = INPUTS[inputs]
    a = FACTORIES[method](seed=3).fit(X).transform(X)
    assert np.array_equal(a, FACTORIES[method](seed=3).fit(X).transform(X))
    assert not np.array_equal(a, FACTORIES[method](seed=4).fit(X).transform(X))


def test_registered():
    assert encoder_class("lsh") is LSHEncoder and encoder_class("itq") is ITQEncoder


@pytest.mark.parametrize("bad", [0, 7, 60, 2048, -8, 1032, 64.0, "64", True])
def test_check_bits_rejects(bad):
    with pytest.raises(InputError, match="multiple of 8") as info:
        check_bits(bad)
    assert str(info.value).endswith(f"got {bad!r}")


@pytest.mark.parametrize("good", [8, 16, 32, 64, 128, 1024, np.int64(256)])
def test_check_bits_accepts(good):
    assert check_bits(good) == good and type(check_bits(good)) is int


@pytest.mark.parametrize("make", [lambda: LSHEncoder(60), lambda: ITQEncoder(12)])
def test_fit_rejects_bad_bits(make):
    with pytest.raises(InputError, match="got (60|12)"):
        make().fit(TFIDF)


def test_itq_rejects_too_many_bits():
    with pytest.raises(InputError, match=r"min\(items, features\) = 48; got 64"):
        ITQEncoder(64).fit(IMAGES)  # 48 images


def test_itq_rejects_negative_iterations():
    with pytest.raises(InputError, match="got -1"):
        ITQEncoder(16, iterations=-1).fit(IMAGES)


def test_feature_mismatch_is_an_input_error():
    encoder = LSHEncoder(16).fit(IMAGES)
    with pytest.raises(InputError, match="fitted on 256"):
        encoder.transform(np.zeros((2, 8, 8, 1), np.uint8))


@pytest.mark.parametrize("bad", [np.zeros((3, 16, 16, 1), np.float32), np.zeros(5), np.array([["a"]])])
def test_unusable_input_is_an_input_error(bad):
    with pytest.raises(InputError, match="got shape"):
        LSHEncoder(16).fit(bad)


def test_lsh_sparse_path_equals_dense_formula():
    encoder = LSHEncoder(32, seed=1).fit(TFIDF)
    dense = TFIDF.toarray()
    assert np.allclose(encoder.mean_, dense.mean(axis=0), atol=1e-6)
    expected = (dense - encoder.mean_) @ encoder.planes_
    assert np.allclose(encoder.transform_float(TFIDF), expected, atol=1e-4)
    assert np.allclose(encoder.transform_float(dense), expected, atol=1e-4)
    uncentred = LSHEncoder(32, center=False, seed=1).fit(TFIDF)
    assert not uncentred.mean_.any()
    assert np.allclose(uncentred.transform_float(TFIDF), dense @ uncentred.planes_, atol=1e-4)


def test_lsh_hamming_fraction_estimates_the_angle():
    rng = np.random.default_rng(0)
    U = rng.standard_normal((40, 8))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    codes = LSHEncoder(256, center=False).fit(U).transform(U)
    upper = np.triu_indices(len(U), 1)
    fraction = hamming_distances(codes, codes)[upper] / 256
    angle = np.arccos(np.clip(U @ U.T, -1, 1))[upper] / np.pi
    assert np.corrcoef(fraction, angle)[0, 1] > 0.9  # measured 0.97
    assert abs(fraction.mean() - angle.mean()) < 0.03


def test_itq_rotation_lowers_the_quantization_loss():
    X, _ = _clusters()
    encoder = ITQEncoder(32, iterations=30).fit(X)
    losses = encoder.quantization_loss_
    assert len(losses) == 31
    assert np.all(np.diff(losses) <= 1e-3 * losses[0])  # each alternation can only lower it
    R = encoder.rotation_
    assert np.allclose(R.T @ R, np.eye(32), atol=1e-4)

    # Recompute independently: V are the centred projections before rotation.
    V = encoder.transform_float(X) @ R.T

    def loss(rotation):
        Z = V @ rotation
        return np.square(np.where(Z > 0, 1, -1) - Z).sum() / len(V)

    initial = loss(_random_rotation(32, encoder.seed))
    assert np.isclose(initial, losses[0], rtol=1e-3) and np.isclose(loss(R), losses[-1], rtol=1e-3)
    assert loss(R) < 0.95 * initial  # measured 165 vs 194


def test_itq_without_iterations_keeps_the_initial_rotation():
    encoder = ITQEncoder(16, iterations=0, seed=2).fit(IMAGES)
    assert np.allclose(encoder.rotation_, _random_rotation(16, 2))
    assert len(encoder.quantization_loss_) == 1


@pytest.mark.parametrize("X", [_clusters()[0], IMAGES, TFIDF], ids=["gaussians", "images", "tfidf"])
def test_itq_bits_are_balanced(X):
    bits = unpack_bits(ITQEncoder(16).fit(X).transform(X), 16)
    assert np.all((bits.mean(axis=0) > 0.2) & (bits.mean(axis=0) < 0.8))


def _nearest_same_label(codes: np.ndarray, labels: np.ndarray) -> float:
    distances = hamming_distances(codes, codes).astype(float)
    np.fill_diagonal(distances, np.inf)
    return float(np.mean(labels[distances.argmin(axis=1)] == labels))


@pytest.mark.parametrize("make", [lambda: LSHEncoder(64), lambda: ITQEncoder(32)], ids=["lsh", "itq"])
def test_nearest_code_is_of_the_same_cluster(make):
    """Chance is 0.25 with four clusters; thresholds sit below the measured rates."""
    X, labels = _clusters()
    assert _nearest_same_label(make().fit(X).transform(X), labels) > 0.85  # measured lsh 0.945, itq 1.0
    assert _nearest_same_label(make().fit(TFIDF).transform(TFIDF), DOC_LABELS) > 0.85
    assert _nearest_same_label(make().fit(IMAGES).transform(IMAGES), IMAGE_LABELS) > 0.85


@settings(max_examples=50, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(0, 6), st.sampled_from([8, 16, 24, 64]))))
def test_pack_unpack_round_trip(bits):
    codes = pack_bits(bits)
    assert codes.dtype == np.uint8 and codes.shape == (len(bits), bits.shape[1] // 8)
    assert np.array_equal(unpack_bits(codes, bits.shape[1]), bits)


def test_pack_bits_treats_nonzero_as_one_and_msb_first():
    assert pack_bits(np.array([[1, 0, 0, 0, 0, 0, 0, 1.0]])).tolist() == [[129]]


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_hamming_distances_equal_a_brute_force_count(data):
    n_bytes = data.draw(st.integers(1, 5))
    a = data.draw(arrays(np.uint8, (data.draw(st.integers(0, 5)), n_bytes)))
    b = data.draw(arrays(np.uint8, (data.draw(st.integers(1, 5)), n_bytes)))
    expected = [[sum(bin(x ^ y).count("1") for x, y in zip(ra, rb)) for rb in b] for ra in a]
    result = hamming_distances(a, b)
    assert result.shape == (len(a), len(b)) and result.tolist() == expected


def test_hamming_distances_blocks_rows(monkeypatch):
    """Row blocks of the XOR give the same distances as one block."""
    import retrieval.encoders.hashing as hashing

    a = np.random.default_rng(0).integers(0, 256, (10, 4), dtype=np.uint8)
    whole = hamming_distances(a, a)
    monkeypatch.setattr(hashing, "_BLOCK_BYTES", 12)  # three rows of a at a time
    assert np.array_equal(hamming_distances(a, a), whole)
    assert np.array_equal(np.diag(whole), np.zeros(10))
