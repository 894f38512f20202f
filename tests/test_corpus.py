"""Reading document corpora, and each bad input the issue names."""
from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest

from retrieval.sources.documents import MAX_DOC_BYTES, read_documents, read_text_file
from retrieval.errors import InputError, RetrievalWarning


def test_folder_with_labels(docs_dir):
    corpus = read_documents(docs_dir, labels_from_folders=True)
    assert len(corpus.items) == 120
    assert {it.label for it in corpus.items} == {"space", "cars", "medicine", "computers"}
    first = corpus.items[0]
    assert first.id == first.path and "/" in first.id
    assert first.title.endswith("document 0") or "document" in first.title


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_documents(tmp_path / "nope")


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no readable documents"):
        read_documents(tmp_path)


def test_only_binary_files(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\x00\x01\x02binary" * 10)
    (tmp_path / "b").write_bytes(bytes(range(256)))
    with pytest.warns(RetrievalWarning, match="a.txt: binary"):
        with pytest.raises(InputError, match="2 skipped"):
            read_documents(tmp_path)


def test_binary_skipped_rest_indexed(tmp_path):
    (tmp_path / "good.txt").write_text("graphics cards render polygons")
    (tmp_path / "bad.txt").write_bytes(b"\x00" * 100)
    with pytest.warns(RetrievalWarning, match="bad.txt"):
        corpus = read_documents(tmp_path)
    assert [it.id for it in corpus.items] == ["good.txt"]
    assert corpus.skipped == [("bad.txt", "binary file")]


def test_non_utf8_falls_back_to_latin1(tmp_path):
    (tmp_path / "l1.txt").write_bytes("café crème brûlée".encode("latin-1"))
    (tmp_path / "u8.txt").write_text("naïve façade", encoding="utf-8")
    texts = {it.id: it.text for it in read_documents(tmp_path).items}
    assert texts["l1.txt"] == "café crème brûlée"
    assert texts["u8.txt"] == "naïve façade"


def test_huge_file_truncated_with_warning(tmp_path):
    line = b"retrieval engines index documents quickly\n"
    with (tmp_path / "huge.txt").open("wb") as fh:
        for _ in range(100 * 1024 * 1024 // len(line) + 1):  # 100 MB of text
            fh.write(line)
    (tmp_path / "small.txt").write_text("a small document about engines")
    with pytest.warns(RetrievalWarning, match="truncated huge.txt"):
        corpus = read_documents(tmp_path)
    huge = next(it for it in corpus.items if it.id == "huge.txt")
    assert len(huge.text) <= MAX_DOC_BYTES
    assert corpus.truncated == ["huge.txt"]
    assert len(corpus.items) == 2


def test_empty_document_skipped(tmp_path):
    (tmp_path / "empty.txt").write_text("   \n\n")
    (tmp_path / "full.txt").write_text("content here")
    with pytest.warns(RetrievalWarning, match="empty.txt: empty document"):
        corpus = read_documents(tmp_path)
    assert [it.id for it in corpus.items] == ["full.txt"]


def test_unknown_extensions_ignored_quietly(tmp_path, recwarn):
    (tmp_path / "data.csv").write_text("a,b\n1,2")
    (tmp_path / "note.md").write_text("# Title\nbody text")
    (tmp_path / "page.html").write_text("<html><head><title>Hello page</title><script>var x=1;</script></head>"
                                        "<body><p>Visible words</p></body></html>")
    corpus = read_documents(tmp_path)
    assert sorted(it.id for it in corpus.items) == ["note.md", "page.html"]
    page = next(it for it in corpus.items if it.id == "page.html")
    assert page.title == "Hello page" and "Visible words" in page.text and "var x" not in page.text
    assert not [w for w in recwarn if issubclass(w.category, RetrievalWarning)]


def _archive_members(tmp_path):
    return {"top/sci/a.txt": "space orbit rocket", "top/rec/b.txt": "car engine wheel", "top/rec/c": "tire brake"}


def test_tar_gz_and_inner_folder(tmp_path):
    path = tmp_path / "c.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, text in _archive_members(tmp_path).items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    corpus = read_documents(path, labels_from_folders=True)  # single top folder stripped
    assert sorted((it.id, it.label) for it in corpus.items) == [("rec/b.txt", "rec"), ("rec/c", "rec"),
                                                                 ("sci/a.txt", "sci")]
    inner = read_documents(tmp_path / "c.tar.gz" / "top" / "rec", labels_from_folders=False)
    assert sorted(it.id for it in inner.items) == ["b.txt", "c"]


def test_zip(tmp_path):
    path = tmp_path / "c.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in _archive_members(tmp_path).items():
            zf.writestr(name, text)
    assert len(read_documents(path).items) == 3


def test_jsonl(tmp_path):
    path = tmp_path / "docs.jsonl"
    lines = [json.dumps({"id": "x1", "text": "orbit rocket", "title": "Rockets", "label": "space"}),
             "not json", json.dumps({"text": "engine wheel", "label": 7}), json.dumps({"title": "no text"})]
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(RetrievalWarning) as record:
        corpus = read_documents(path)
    assert [(it.id, it.title, it.label) for it in corpus.items] == [("x1", "Rockets", "space"),
                                                                     ("3", "engine wheel", "7")]
    assert any("docs.jsonl:2" in str(w.message) for w in record)
    assert any("docs.jsonl:4" in str(w.message) for w in record)


def test_jsonl_duplicate_ids(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "x y"}) + "\n" + json.dumps({"id": "a", "text": "z"}) + "\n")
    with pytest.raises(InputError, match="duplicate"):
        read_documents(path)


def test_not_a_corpus(tmp_path):
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    with pytest.raises(InputError, match="not a folder"):
        read_documents(tmp_path / "x.pdf")


def test_labels_from_folders_without_folders(tmp_path):
    (tmp_path / "a.txt").write_text("words here")
    with pytest.raises(InputError, match="no sub-folders"):
        read_documents(tmp_path, labels_from_folders=True)


def test_strip_email_and_subject_title(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "1").write_text(
        "From: someone@example.com\nSubject: Re: orbit question\nOrganization: NASA\n\n"
        "In article <1@x> bob@y writes:\n> quoted line\nThe orbit is elliptic.\n\n--\nBob, signature\n")
    item = read_documents(tmp_path, strip="email").items[0]
    assert item.title == "Re: orbit question"
    assert item.text.strip() == "The orbit is elliptic."


def test_bad_strip_mode(tmp_path):
    with pytest.raises(InputError, match="--strip"):
        read_documents(tmp_path, strip="html")


def test_read_text_file(tmp_path):
    (tmp_path / "q.txt").write_text("query words")
    assert read_text_file(tmp_path / "q.txt") == "query words"
    with pytest.raises(InputError, match="does not exist"):
        read_text_file(tmp_path / "none.txt")
    (tmp_path / "b.bin").write_bytes(b"\x00\x00")
    with pytest.raises(InputError, match="binary"):
        read_text_file(tmp_path / "b.bin")
