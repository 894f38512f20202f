"""Figures: the 2-D map and precision-recall curves are written and readable."""
import pytest
from PIL import Image

from retrieval import Retriever, corpus_map
from retrieval.errors import InputError
from retrieval.plots import plot_pr_curves


@pytest.mark.parametrize("fixture", ["built_docs", "built_images"])
def test_corpus_map(request, fixture, tmp_path):
    store, name, _ = request.getfixturevalue(fixture)
    out = corpus_map(Retriever(name, store), tmp_path / "map.png", epochs=1, max_items=50)
    with Image.open(out) as img:
        assert img.width >= 2 * img.height * 0.9  # two panels side by side


def test_pr_curves(tmp_path):
    report = {"index": "x", "queries": 3, "curves": {
        "ae": {"recall": [0.1, 0.5, 1.0], "precision": [0.9, 0.6, 0.3]},
        "lsa": {"recall": [0.1, 0.5, 1.0], "precision": [0.8, 0.5, 0.3]}}}
    out = plot_pr_curves(report, tmp_path / "pr.png")
    assert out.stat().st_size > 1000


def test_plot_file_checks(tmp_path):
    with pytest.raises(InputError, match=".png"):
        plot_pr_curves({"curves": {}}, tmp_path / "pr.txt")
    with pytest.raises(InputError, match="does not exist"):
        plot_pr_curves({"curves": {}}, tmp_path / "missing" / "pr.png")
