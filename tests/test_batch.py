"""``retrieval query NAME --batch``: JSON lines in, one JSON result line per query out, the index loaded once."""
import io
import json
import sys

from retrieval import api
from test_cli import run


def _results(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_batch_answers_every_line_and_reports_bad_ones(monkeypatch, capsys, built_docs, tmp_path):
    store, name, _ = built_docs
    like = api.search(store, name, "orbit rocket", k=1).hits[0].id
    lines = [{"text": "orbit rocket nasa"}, {"like": like, "k": 2}, "not json", {"image": "x.png"},
             {"text": "engine brake", "k": 0}, {"like": "no-such-id"}, {"text": "doctor patient", "method": "lsa", "k": 3},
             {"text": "a", "like": like}, {"query": "x"}]
    batch = tmp_path / "q.jsonl"
    batch.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines[:4]) + "\n\n"
                     + "\n".join(json.dumps(x) for x in lines[4:]) + "\n")
    code, out, err = run(monkeypatch, capsys, "query", name, "--batch", batch, "--index-dir", store.root)
    assert code == 1 and "6 of the queries failed" in err  # reported at the end, after every line
    results = _results(out)
    assert [r["line"] for r in results] == [1, 2, 3, 4, 6, 7, 8, 9, 10]  # line 5 is blank
    first, second, bad_json, image, zero_k, unknown, lsa, two, key = results
    # A tiny model's first hit may miss; most of its ten must be on topic.
    assert len(first["hits"]) == 10 and [h["label"] for h in first["hits"]].count("space") >= 6
    assert set(first["hits"][0]) == set(api.HIT_FIELDS) and first["novelty"]["score"] > 0
    assert len(second["hits"]) == 2 and like not in [h["id"] for h in second["hits"]]
    assert len(lsa["hits"]) == 3 and lsa["hits"][0]["label"] == "medicine"
    assert bad_json["error"].startswith("line 3: not JSON")
    assert 'line 4: index holds documents; give "text"' in image["error"]
    assert zero_k["error"].startswith("line 6:") and '"k"' in zero_k["error"]
    assert unknown["error"].startswith("line 7:") and "no-such-id" in unknown["error"]
    assert "exactly one of" in two["error"] and "unknown key 'query'" in key["error"]


def test_batch_from_stdin_on_an_image_index(monkeypatch, capsys, built_images):
    store, name, root = built_images
    image = sorted((root / "disc").glob("*.png"))[0]
    stdin = json.dumps({"image": str(image), "k": 3}) + "\n" + json.dumps({"text": "a disc"}) + "\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code, out, _ = run(monkeypatch, capsys, "query", name, "--batch", "-", "--index-dir", store.root)
    hits, text = _results(out)
    # The batch line answers as the single query does (a 36-image, 2-epoch model's ranking is not a quality test).
    single = api.search(store, name, str(image), k=3)
    assert code == 1 and [h["id"] for h in hits["hits"]] == [h.id for h in single.hits]
    assert str(image).endswith(hits["hits"][0]["path"]) and hits["hits"][0]["label"] == "disc"  # itself first
    assert 'index holds images; give "image"' in text["error"]


def test_batch_all_good_exits_0_and_refuses_a_query_beside_it(monkeypatch, capsys, built_docs, tmp_path):
    store, name, _ = built_docs
    batch = tmp_path / "q.jsonl"
    batch.write_text(json.dumps({"text": "engine wheel brake tire", "method": "tfidf"}) + "\n")
    code, out, _ = run(monkeypatch, capsys, "query", name, "--batch", batch, "--index-dir", store.root)
    assert code == 0 and _results(out)[0]["hits"][0]["label"] == "cars"
    code, _, err = run(monkeypatch, capsys, "query", name, "text", "--batch", batch, "--index-dir", store.root)
    assert code == 2 and "--batch" in err
    code, _, err = run(monkeypatch, capsys, "query", name, "--batch", tmp_path / "missing.jsonl",
                       "--index-dir", store.root)
    assert code == 1 and "cannot read --batch file" in err
