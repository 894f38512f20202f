"""Tiny corpora (issue 12): exact duplicates score as the most similar; novelty does not overclaim."""
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from retrieval import Store, build_docs_index, build_images_index
from retrieval import novelty
from retrieval.config import NOVELTY_MIN_ITEMS, DocsConfig
from retrieval.search import Retriever
from conftest import TINY_DOCS, TINY_IMAGES, synthetic_images, write_corpus
from test_cli import run

DUPLICATE = "orbit rocket launch nasa satellite moon shuttle astronaut telescope mission"
#: Copied ten times beside the topics: words of no topic.
FOX = "quick brown fox jumps over lazy dog beside river bank meadow"
#: Three topics of distinctive words; "rocket" is in every space document and no other.
TOPICS = {"space": "orbit launch nasa satellite moon astronaut telescope".split(),
          "cooking": "recipe oven flour butter sugar bake dough pastry".split(),
          "football": "goal striker referee penalty league match stadium keeper".split()}
FILLER = "people think good time year know make work said day way place".split()


def three_topics(n_per_topic: int = 15, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    docs = []
    for label, words in TOPICS.items():
        for _ in range(n_per_topic):
            tokens = list(rng.choice(words, 10)) + list(rng.choice(FILLER, 10)) + (["rocket"] if label == "space" else [])
            rng.shuffle(tokens)
            docs.append((label, " ".join(tokens)))
    return docs


def write_copies(folder, text: str, n: int = 10) -> None:
    """``n`` files of exactly ``text`` (write_corpus would number them in a title line)."""
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"copy{i}.txt").write_text(text + "\n")


@pytest.fixture(scope="module")
def identical(tmp_path_factory):
    """An index of ten copies of one text and nothing else: (store, name)."""
    base = tmp_path_factory.mktemp("identical")
    write_copies(base / "corpus" / "dup", DUPLICATE)
    store = Store(base / "home")
    build_docs_index(base / "corpus", "same", TINY_DOCS, store=store)
    return store, "same"


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
    """3 topics x 15 documents and ten copies of one more, default settings: (store, name)."""
    base = tmp_path_factory.mktemp("topics")
    write_corpus(base / "corpus", three_topics())
    write_copies(base / "corpus" / "fox", FOX)
    store = Store(base / "home")
    # Default settings: what a user gets (TINY_DOCS' 3 epochs leave a one-word query's column untrained).
    build_docs_index(base / "corpus", "three", DocsConfig(labels_from_folders=True), store=store)
    return store, "three"


def test_identical_documents_score_one_and_tie(identical, monkeypatch, capsys):
    store, name = identical
    code, out, err = run(monkeypatch, capsys, "query", name, "--like", "dup/copy0.txt", "-k", "9", "--json",
                         "--index-dir", store.root)
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 9 and all(h["id"].startswith("dup/") for h in hits)
    scores = np.array([h["score"] for h in hits])
    assert scores.min() > 0.999 and np.ptp(scores) < 1e-5, scores  # cosine 1, a tie
    # The codes themselves carry the document, not rounding noise left by centring.
    with Retriever(name, store) as r:
        codes = r.method("ae")[0].transform(r.inputs())
    assert np.linalg.norm(codes, axis=1).min() > 1e-3


def test_duplicates_among_other_documents_rank_first(topics):
    store, name = topics
    with Retriever(name, store) as r:
        hits = r.like("fox/copy0.txt", k=10)
    assert [h.id.split("/")[0] for h in hits[:9]] == ["fox"] * 9
    assert min(h.score for h in hits[:9]) > 0.999 > hits[9].score


def test_identical_images_score_one_not_nan(tmp_path):
    synthetic_images(tmp_path / "one", n_per_class=1)
    source = next((tmp_path / "one").rglob("*.png"))
    (tmp_path / "images" / "same").mkdir(parents=True)
    for i in range(12):  # more items than code dimensions: whitening is computed
        shutil.copy(source, tmp_path / "images" / "same" / f"copy{i:02d}.png")
    store = Store(tmp_path / "home")
    build_images_index(tmp_path / "images", "copies", replace(TINY_IMAGES, epochs=1, baselines=()), store=store)
    with Retriever("copies", store) as r:
        hits = r.like("same/copy00.png", k=11)
    assert len(hits) == 11 and min(h.score for h in hits) > 0.999


def test_one_word_query_finds_its_documents_without_overclaiming_novelty(topics, monkeypatch, capsys):
    store, name = topics
    code, out, err = run(monkeypatch, capsys, "query", name, "rocket", "-k", "15", "--json", "--index-dir", store.root)
    assert code == 0, err
    assert [h["label"] for h in json.loads(out)] == ["space"] * 15
    message = " ".join(err.split())  # rich wraps long lines
    assert "novelty of the query" in message and "nothing like it" not in message
    assert f"too few to judge: the models learned from 55 items, a verdict takes {NOVELTY_MIN_ITEMS}" in message
    with Retriever(name, store) as r:
        judged = r.novelty(r.query_inputs(["rocket"]), ["rocket"])[0]
    assert judged["reference_items"] == 55 and judged["verdict"] == "unjudged" and 0 <= judged["percentile"] <= 100


def test_novelty_verdicts_with_enough_reference_items():
    reference = np.sort(np.random.default_rng(0).normal(5.0, 1.0, NOVELTY_MIN_ITEMS))
    unlike, typical, ordinary = novelty.judge(reference, [reference[-1] + 1, reference[10], np.median(reference) + 0.3])
    assert (unlike["verdict"], typical["verdict"], ordinary["verdict"]) == ("unlike", "typical", "ordinary")
    assert unlike["percentile"] == 100.0 and "nothing like it is indexed" in novelty.describe(unlike)
    assert "too few" not in novelty.describe(typical)
    small = novelty.judge(reference[:NOVELTY_MIN_ITEMS - 1], reference[-1] + 1)[0]
    assert small["verdict"] == "unjudged" and "nothing like it" not in novelty.describe(small)
