"""The evaluation metrics are pure functions: check them against hand counts."""
import numpy as np
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from retrieval.evaluate import average_precision_at, pr_curve, precision_at, relevance


def test_relevance_and_precision():
    labels = np.array(["a", "a", "b", "b", None], dtype=object)
    positions = np.array([[0, 2, 1], [3, 4, -1]])
    rel = relevance(np.array(["a", "b"], dtype=object), positions, labels)
    assert rel.tolist() == [[True, False, True], [True, False, False]]
    assert precision_at(rel, 2).tolist() == [0.5, 0.5]
    assert precision_at(rel, 3).tolist() == [2 / 3, 1 / 3]


def test_average_precision_by_hand():
    rel = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], bool)
    ap = average_precision_at(rel, np.array([2, 5, 0]), 4)
    assert np.allclose(ap, [(1 + 2 / 3) / 2, 0.0, 0.0])  # R = 0 scores 0


@given(arrays(bool, st.tuples(st.integers(1, 5), st.integers(1, 20))))
def test_ap_bounds_and_perfect_ranking(rel):
    n_relevant = rel.sum(axis=1) + 3
    ap = average_precision_at(rel, n_relevant, rel.shape[1])
    assert ((ap >= 0) & (ap <= 1)).all()
    perfect = np.ones_like(rel)
    assert np.allclose(average_precision_at(perfect, np.full(len(rel), rel.shape[1]), rel.shape[1]), 1)


def test_pr_curve_end_points():
    rel = np.array([[1, 0, 1, 0]], bool)
    recall, precision = pr_curve(rel, np.array([2]), np.array([1, 4]))
    assert recall.tolist() == [0.5, 1.0] and precision.tolist() == [1.0, 0.5]
