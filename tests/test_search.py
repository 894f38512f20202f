"""Queries against a built document index."""
import numpy as np
import pytest

from retrieval import Retriever, run_evaluation
from retrieval.errors import EmptyQueryError, InputError


@pytest.fixture(scope="module")
def retriever(built_docs):
    store, name, _ = built_docs
    return Retriever(name, store)


@pytest.mark.parametrize("method", ["ae", "lsa", "tfidf"])
def test_item_queried_with_itself_ranks_first(retriever, method):
    encoder, index = retriever.method(method)
    X = retriever.inputs()
    _, positions = index.search(encoder.transform(X), 1)
    assert (positions[:, 0] == np.arange(X.shape[0])).mean() >= 0.95


@pytest.mark.parametrize("method", ["ae", "lsa", "tfidf"])
def test_query_text_finds_topic(retriever, method):
    hits = retriever.search("nasa rocket launch into orbit around the moon", k=5, method=method)
    assert len(hits) == 5 and [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(h.score) for h in hits)
    assert hits[0].score >= hits[-1].score
    if method != "ae":  # tiny 3-epoch autoencoder: no quality claim
        assert sum(h.label == "space" for h in hits) >= 4


def test_query_like_excludes_itself(retriever):
    first = retriever.metadata.rows([0])[0]["id"]
    hits = retriever.like(first, k=4, method="tfidf")
    assert len(hits) == 4 and first not in [h.id for h in hits]


@pytest.mark.parametrize("text", ["the and of to is", "zzzz qqqq", "   "])
def test_stop_words_or_unknown_words_give_clear_error(retriever, text):
    with pytest.raises(EmptyQueryError):
        retriever.search(text, k=3)


def test_unknown_method_and_id(retriever):
    with pytest.raises(InputError, match="no method 'bm25'"):
        retriever.search("orbit", method="bm25")
    with pytest.raises(InputError, match="no item with id"):
        retriever.like("nope")


@pytest.mark.parametrize("k", [0, -1])
def test_bad_k(retriever, k):
    with pytest.raises(InputError, match="-k"):
        retriever.search("orbit", k=k)


def test_evaluation_report(built_docs, queries_dir, tmp_path):
    store, name, _ = built_docs
    report = run_evaluation(store, name, str(queries_dir), labels_from_folders=True, k=10,
                            plot=tmp_path / "pr.png")
    assert report["queries"] == 20 and report["k"] == 10
    assert set(report["methods"]) == {"ae", "lsa", "tfidf"}
    for row in report["methods"].values():
        assert 0 <= row["precision@10"] <= 1 and 0 <= row["map@10"] <= 1
        assert row["query_ms_p50"] > 0 and row["bytes_per_item"] > 0
    assert report["methods"]["tfidf"]["precision@10"] > 0.6  # synthetic topics are easy for TF-IDF
    assert (tmp_path / "pr.png").stat().st_size > 1000
    assert store.read_manifest(name)["evaluation"]["queries"] == 20


def test_precision_at_10_is_over_ten_results_at_any_k(built_docs, queries_dir):
    """evaluate -k 5 once reported precision@10 over 5 results (0.5 when all 5 were relevant)."""
    from retrieval.evaluate import evaluate_index, load_queries

    store, name, _ = built_docs
    retriever = Retriever(name, store)
    queries = load_queries(retriever, queries_dir, labels_from_folders=True)
    at5 = evaluate_index(retriever, queries, k=5, methods=["tfidf"], latency_samples=1)["methods"]["tfidf"]
    at10 = evaluate_index(retriever, queries, k=10, methods=["tfidf"], latency_samples=1)["methods"]["tfidf"]
    assert at5["precision@10"] == pytest.approx(at10["precision@10"])
    assert at5["precision@5"] >= 0.9  # the synthetic topics are easy for TF-IDF; p@10 over 5 results would be <= 0.5
    assert set(at10) == {"precision@10", "map@10", "query_ms_p50", "bytes_per_item"}


def test_evaluate_table_has_one_precision_at_10_column(built_docs, queries_dir, monkeypatch, capsys):
    import sys

    from retrieval import cli

    store, name, _ = built_docs
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["retrieval", "evaluate", name, "--queries", str(queries_dir),
                                      "--labels-from-folders", "-k", "10", "--methods", "tfidf",
                                      "--index-dir", str(store.root)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    header = next(line for line in out.splitlines() if "precision@10" in line)
    assert header.count("precision@10") == 1 and "map@10" in header


def test_evaluate_warns_about_query_labels_the_index_lacks(built_docs, tmp_path):
    from conftest import synthetic_docs, write_corpus

    from retrieval.errors import RetrievalWarning
    from retrieval.evaluate import evaluate_index, load_queries

    store, name, _ = built_docs
    # A mixed query folder: the known labels are scored, the unknown one is left out with a warning.
    docs = synthetic_docs(n_per_topic=1)
    write_corpus(tmp_path / "q", docs + [("gardening", text) for _, text in docs])
    retriever = Retriever(name, store)
    queries = load_queries(retriever, tmp_path / "q", labels_from_folders=True)
    with pytest.warns(RetrievalWarning, match="labels the index does not have \\('gardening'\\)"):
        result = evaluate_index(retriever, queries, k=5, methods=["tfidf"], latency_samples=1)
    assert result["queries"] == len(docs)
