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


def test_loaded_vectorizer_analyses_queries_as_scikit_learn_does_without_importing_it(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from sklearn.feature_extraction.text import TfidfVectorizer

    from retrieval.vectorize import _word_analyzer

    texts = ["The Orbit of the MOON, re-entry & don't stop", "naïve café über 42 x2 a_b", "engine wheel brake tire"] * 4
    assert all(_word_analyzer("english")(t) == TfidfVectorizer(stop_words="english").build_analyzer()(t) for t in texts)
    assert _word_analyzer(None)(texts[0]) == TfidfVectorizer(stop_words=None).build_analyzer()(texts[0])
    fitted = TextVectorizer()
    fitted.fit(texts)
    fitted.save(tmp_path / "vec")
    loaded = TextVectorizer.load(tmp_path / "vec")
    few, many = loaded.transform(texts[:3]).toarray(), fitted.transform(texts).toarray()[:3]
    assert abs(few - many).max() < 1e-6  # the query path equals scikit-learn's transform
    code = ("import sys; from pathlib import Path; from retrieval.vectorize import TextVectorizer; "
            f"v = TextVectorizer.load(Path({str(tmp_path / 'vec')!r})); v.transform(['orbit moon']); "
            "v.oov_fraction(['orbit moon']); print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"
