"""Short queries in evaluations: --query-field title | first-line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TOPICS

from retrieval import Index, InputError, Retriever, run_evaluation
from retrieval.errors import RetrievalWarning
from retrieval.evaluate import evaluate_index, load_queries
from retrieval.sources.documents import query_text, read_documents
from retrieval.sources.text import first_sentence, strip_reply_prefix


def _mail(subject: str, body: str) -> str:
    return f"From: someone@example.org\nSubject: {subject}\nLines: 3\n\n{body}\n"


def _topic_words(label: str, n: int, seed: int) -> list[str]:
    return list(np.random.default_rng(seed).choice(TOPICS[label].split(), n))


def write_mail_queries(root, per_topic: int = 4) -> None:
    """Mail queries: a long body of topic words; a subject of two topic words after reply prefixes.

    The subject's words are drawn from the label's topic, so title queries are
    valid but far shorter than the bodies. Besides, three queries whose
    subject is one word, stop words only, or empty after its "Re:" (left out
    of title runs; a mail with no subject at all is titled by its first line).
    """
    for label in TOPICS:
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_topic):
            subject = " ".join(_topic_words(label, 2, seed=i + 7 * len(label)))
            body = " ".join(_topic_words(label, 30, seed=100 + i + 7 * len(label)))
            (folder / f"m{i}").write_text(_mail(f"Re: RE: Fwd: {subject}", body))
    space = root / "space"
    for name, subject in (("one", "Re: orbit"), ("stop", "Re: the of and"), ("none", "Re: ")):
        (space / name).write_text(_mail(subject, " ".join(_topic_words("space", 30, seed=5))))


def test_text_helpers():
    assert strip_reply_prefix("Re: re: FWD: Fw: Re[2]: engine noise") == "engine noise"
    assert strip_reply_prefix("Regarding engines") == "Regarding engines"  # a word, not a prefix
    assert first_sentence("Solve a linear system. Uses LAPACK.\nMore.") == "Solve a linear system."
    # The first line when it is shorter than the first sentence (a wrapped summary).
    assert first_sentence("\n  Compute the matrix\nexponential of A. Then more.") == "Compute the matrix"
    assert first_sentence("No full stop at all") == "No full stop at all"


def test_query_text_of_each_reader(tmp_path):
    root = tmp_path / "mail" / "cars"
    root.mkdir(parents=True)
    (root / "1").write_text(_mail("Re: Re: brake fluid", "The brakes squeal. I replaced the pads.\nAnd more."))
    mail = read_documents(tmp_path / "mail", labels_from_folders=True, strip="email").items[0]
    assert query_text(mail, "title") == "brake fluid"  # the Subject, reply prefixes removed
    assert query_text(mail, "first-line") == "The brakes squeal."
    assert query_text(mail, "text") == mail.text and "pads" in mail.text

    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text(json.dumps({"text": "Orbit insertion went well.\nThe rocket...", "title": "Launch report",
                                 "label": "space"}) + "\n")
    item = read_documents(jsonl).items[0]
    assert query_text(item, "title") == "Launch report"
    assert query_text(item, "first-line") == "Orbit insertion went well."

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("\n\nEngine failure on the highway\nThe car stopped. It was late.")
    (plain / "b.html").write_text("<html><head><title>Vaccine news</title></head><body><p>Doctors say."
                                  "</p></body></html>")
    a, b = read_documents(plain).items
    assert query_text(a, "title") == "Engine failure on the highway" == query_text(a, "first-line")
    assert query_text(b, "title") == "Vaccine news" and query_text(b, "first-line") == "Doctors say."


def test_short_queries_are_left_out_with_one_warning(built_docs, tmp_path):
    store, name, _ = built_docs
    write_mail_queries(tmp_path / "q")
    retriever = Retriever(name, store)
    with pytest.warns(RetrievalWarning) as caught:
        queries = load_queries(retriever, tmp_path / "q", labels_from_folders=True, strip="email",
                               query_field="title")
    messages = [str(w.message) for w in caught if "left out" in str(w.message)]
    assert messages == ["3 of 19 queries were left out: their title has fewer than 2 words or no word of the "
                        "index vocabulary"]
    assert len(queries.labels) == 16 and queries.field == "title"
    assert all(len(text.split()) == 2 for text in queries.raw)  # the subjects, not the bodies


def test_title_queries_give_other_valid_figures(built_docs, tmp_path):
    store, name, _ = built_docs
    write_mail_queries(tmp_path / "q")
    common = dict(labels_from_folders=True, strip="email", k=10, methods=["ae", "lsa", "tfidf"])
    whole = run_evaluation(store, name, tmp_path / "q", **common)
    with pytest.warns(RetrievalWarning, match="3 of 19 queries were left out"):
        titles = run_evaluation(store, name, tmp_path / "q", query_field="title", **common)
    assert whole["query_field"] == "text" and whole["queries"] == 19
    assert titles["query_field"] == "title" and titles["queries"] == 16
    assert store.read_manifest(name)["evaluation"]["query_field"] == "title"
    for report in (whole, titles):
        for row in report["methods"].values():
            assert 0 <= row["precision@10"] <= 1 and 0 <= row["map@10"] <= 1
        assert report["methods"]["tfidf"]["precision@10"] > 0.5  # topic words: valid queries either way
    assert any(whole["methods"][m]["precision@10"] != titles["methods"][m]["precision@10"]
               for m in whole["methods"])


def test_python_api_query_field(built_docs):
    store, name, _ = built_docs
    index = Index.open(name, store)
    texts = [" ".join(_topic_words(label, 30, seed=i)) for i, label in enumerate(TOPICS)]
    titles = [" ".join(_topic_words(label, 3, seed=50 + i)) for i, label in enumerate(TOPICS)]
    labels = list(TOPICS)
    whole = index.evaluate(texts, labels=labels, k=5, methods=["tfidf"])
    short = index.evaluate(texts, labels=labels, titles=titles, k=5, methods=["tfidf"], query_field="title")
    assert whole["query_field"] == "text" and short["query_field"] == "title"
    assert short["queries"] == whole["queries"] == 4
    with pytest.raises(InputError, match="--query-field must be one of text, title, first-line; got 'body'"):
        index.evaluate(texts, labels=labels, query_field="body")


def test_images_have_no_short_query_field(built_images):
    store, name, root = built_images
    with pytest.raises(InputError, match="--query-field title needs documents"):
        run_evaluation(store, name, root, labels_from_folders=True, query_field="title")
    with Retriever(name, store) as retriever:
        q = load_queries(retriever, root, labels_from_folders=True)
        assert evaluate_index(retriever, q, k=5, methods=["pixels"], latency_samples=1)["query_field"] == "text"
