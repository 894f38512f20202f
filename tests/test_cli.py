"""The command line: thin wrapper, one error line, exit codes."""
import json
import sys

import pytest

from retrieval import cli


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["retrieval", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


TINY = ["--code-dim", "4", "--hidden", "16", "--epochs", "2", "--neighbours", "3", "--labels-from-folders"]


def test_index_query_info_list_remove(monkeypatch, capsys, docs_dir, queries_dir, tmp_path):
    code, out, err = run(monkeypatch, capsys, "index", "docs", docs_dir, "--name", "c", *TINY, "--json")
    assert code == 0, err
    built = json.loads(out)
    assert built["counts"]["items"] == 120
    assert built["self_check"]["sample"] == 120 and "ae~tfidf" in built["self_check"]["overlap"]

    code, out, _ = run(monkeypatch, capsys, "query", "c", "orbit rocket nasa", "-k", "3", "--method", "tfidf",
                       "--json")
    hits = json.loads(out)
    assert code == 0 and len(hits) == 3
    assert set(hits[0]) == {"rank", "id", "score", "title", "label", "path", "url"}
    assert hits[0]["label"] == "space"

    code, out, _ = run(monkeypatch, capsys, "query", "c", "--like", hits[0]["id"], "-k", "2", "--json")
    assert code == 0 and hits[0]["id"] not in [h["id"] for h in json.loads(out)]

    qfile = tmp_path / "q.txt"
    qfile.write_text("engine brake tire")
    code, out, _ = run(monkeypatch, capsys, "query", "c", "--file", qfile, "--method", "lsa")
    assert code == 0 and "rank" in out

    code, out, _ = run(monkeypatch, capsys, "evaluate", "c", "--queries", queries_dir, "--labels-from-folders",
                       "-k", "10", "--json")
    report = json.loads(out)
    assert code == 0 and set(report) == {"index", "queries", "query_field", "k", "methods"}
    assert report["query_field"] == "text"
    assert set(report["methods"]["ae"]) == {"precision@10", "precision@10", "map@10", "query_ms_p50",
                                            "bytes_per_item"}
    # Short queries: each query file's first line ("space document 3"), not its text.
    code, out, err = run(monkeypatch, capsys, "evaluate", "c", "--queries", queries_dir, "--labels-from-folders",
                         "-k", "10", "--query-field", "first-line", "--json")
    short = json.loads(out)
    assert code == 0, err
    assert short["query_field"] == "first-line" and short["queries"] == report["queries"]
    assert short["methods"]["tfidf"] != report["methods"]["tfidf"]

    code, out, _ = run(monkeypatch, capsys, "info", "c")
    assert code == 0 and "bytes/item" in out and "precision@10" in out
    code, out, _ = run(monkeypatch, capsys, "list", "--json")
    assert [r["name"] for r in json.loads(out)] == ["c"]
    code, _, err = run(monkeypatch, capsys, "index", "docs", docs_dir, "--name", "c", *TINY)
    assert code == 1 and "--force" in err
    code, _, err = run(monkeypatch, capsys, "remove", "c", "--yes")
    assert code == 0
    code, out, _ = run(monkeypatch, capsys, "list", "--json")
    assert json.loads(out) == []


@pytest.mark.parametrize("args, message", [
    (["query", "ghost", "hello"], "no index named 'ghost'"),
    (["index", "docs", "/nonexistent/path", "--name", "x"], "does not exist"),
    (["info", "../evil"], "invalid index name"),
    (["index", "docs", ".", "--name", "x", "--baselines", "bm25"], "unknown baseline"),
    (["index", "docs", ".", "--name", "x", "--hidden", "a,b"], "--hidden"),
])
def test_errors_are_one_line_exit_1(monkeypatch, capsys, args, message):
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 1
    assert message in err and "Traceback" not in err
    assert err.strip().startswith("error:")


def test_bad_k_and_stop_word_query(monkeypatch, capsys, built_docs):
    store, name, _ = built_docs
    for k in ("0", "-5"):
        code, _, err = run(monkeypatch, capsys, "query", name, "orbit", "-k", k, "--index-dir", store.root)
        assert code == 1 and "-k must be a positive" in err
    code, out, err = run(monkeypatch, capsys, "query", name, "the of and", "--index-dir", store.root)
    assert code == 1 and "no word of the index vocabulary" in err and "nan" not in out.lower()


def test_empty_folder_and_binary_folder(monkeypatch, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run(monkeypatch, capsys, "index", "docs", tmp_path / "empty", "--name", "e")
    assert code == 1 and "no readable documents" in err
    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "x.txt").write_bytes(b"\x00\xff" * 50)
    code, _, err = run(monkeypatch, capsys, "index", "docs", binary, "--name", "b")
    assert code == 1 and "warning: skipped x.txt: binary file" in err and "no readable documents" in err


def test_usage_error_exit_code(monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "query")
    assert code == 2 and "Missing argument" in err
