import numpy as np
from hypothesis import given, settings, strategies as st

from retrieval.vectorize import TextVectorizer, empty_rows, word_distribution
from conftest import synthetic_docs

TEXTS = [t for _, t in synthetic_docs(10)]
VEC = TextVectorizer(max_features=50).fit(TEXTS)


def test_vocabulary_cap_and_idf():
    assert VEC.n_features == 50
    assert VEC.idf_.dtype == np.float32 and VEC.idf_.shape == (50,)
    assert "the" not in VEC.vocabulary_  # English stop words are dropped


def test_save_load_rebuilds_exactly(tmp_path):
    VEC.save(tmp_path)
    loaded = TextVectorizer.load(tmp_path)
    assert loaded.vocabulary_ == VEC.vocabulary_
    a, b = VEC.transform(TEXTS), loaded.transform(TEXTS)
    assert abs(a - b).max() == 0


words = st.sampled_from(" ".join(TEXTS).split() + ["unknownword", "the", "and", "ORBIT", "Rocket!"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(words, max_size=30).map(" ".join), min_size=1, max_size=8))
def test_fast_path_equals_sklearn(texts):
    fast = VEC.transform(texts)  # <= 8 texts take the direct path
    slow = VEC._vec.transform(texts)
    assert fast.shape == slow.shape
    assert np.allclose(fast.toarray(), slow.toarray(), atol=1e-6)


def test_stop_words_only_gives_empty_row():
    X = VEC.transform(["the and of to", "orbit rocket"])
    assert empty_rows(X).tolist() == [True, False]


def test_word_distribution_rows_sum_to_one():
    P = word_distribution(VEC.transform(TEXTS + ["the"]))
    sums = np.asarray(P.sum(axis=1)).ravel()
    assert np.allclose(sums[:-1], 1) and sums[-1] == 0
