"""Real-world input: MIME mail, unknown encodings, damaged archives, symbolic links, odd query files."""
from __future__ import annotations

import base64
import gzip
import io
import json
import os
import struct
import tarfile
import threading
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from retrieval import api
from retrieval.errors import InputError, RetrievalWarning
from retrieval.sources.documents import MAX_DOC_BYTES, corpus_from_records, decode, read_documents, read_text_file
from retrieval.sources.images import load_image, read_images
from retrieval.sources.text import mail_subject, read_mail, strip_email
from test_cli import run

# -- --strip email: MIME --------------------------------------------------------------------------------------


def _read_mail(tmp_path, raw: bytes):
    (tmp_path / "g").mkdir(exist_ok=True)
    (tmp_path / "g" / "1").write_bytes(raw)
    [item] = read_documents(tmp_path, strip="email").items
    return item


def test_base64_body_is_decoded_then_quotes_and_signature_stripped(tmp_path):
    body = "Someone wrote:\n> old quoted line\nCheap flights to Paris in spring.\n--\nAnn, travel desk\n"
    raw = (b"From: a@b.example\nSubject: offers\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
           b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(body.encode()))
    item = _read_mail(tmp_path, raw)
    assert item.text == "Cheap flights to Paris in spring."
    assert strip_email(raw.decode()) == item.text  # the same from text (JSONL, memory) as from a file


def test_quoted_printable_and_declared_charsets(tmp_path):
    raw = (b"From: a@b\nSubject: menu\nContent-Type: text/plain; charset=utf-8\n"
           b"Content-Transfer-Encoding: quoted-printable\n\nCaf=C3=A9 cr=C3=A8me, a very long line that is =\nsoft-wrapped\n")
    assert _read_mail(tmp_path, raw).text == "Café crème, a very long line that is soft-wrapped"
    latin = b"From: a@b\nSubject: x\nContent-Type: text/plain; charset=iso-8859-1\n\nna\xefve caf\xe9 \x93quoted\x94\n"
    assert _read_mail(tmp_path, latin).text == "naïve café “quoted”"  # latin-1 labels read as cp1252


@pytest.mark.parametrize("charset", ["x-no-such-charset", "us-ascii", "rot13"])
def test_a_wrong_or_unknown_charset_falls_back_to_detection(tmp_path, charset):
    raw = (f"From: a@b\nSubject: x\nContent-Type: text/plain; charset={charset}\n\n".encode()
           + "Grüße aus München".encode("utf-8"))
    assert _read_mail(tmp_path, raw).text == "Grüße aus München"


def test_multipart_keeps_the_text_and_drops_boundaries_and_attachments(tmp_path):
    pdf = base64.encodebytes(b"%PDF-1.4 secret attachment bytes").decode()
    notes = base64.encodebytes(b"attached notes file").decode()
    raw = f"""From: a@b
Subject: report
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="XYZ"

This is a multi-part message in MIME format.
--XYZ
Content-Type: multipart/alternative; boundary="ALT"

--ALT
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

The quarterly report is attached, na=C3=AFve reader.
--ALT
Content-Type: text/html; charset=utf-8

<html><body><p>The quarterly report is attached (HTML copy).</p></body></html>
--ALT--
--XYZ
Content-Type: application/pdf; name="r.pdf"
Content-Disposition: attachment; filename="r.pdf"
Content-Transfer-Encoding: base64

{pdf}
--XYZ
Content-Type: text/plain; name="notes.txt"
Content-Disposition: attachment; filename="notes.txt"
Content-Transfer-Encoding: base64

{notes}
--XYZ--
""".encode()
    text = _read_mail(tmp_path, raw).text
    assert text == "The quarterly report is attached, naïve reader."  # plain alternative only, no HTML copy


def test_html_only_mail_becomes_visible_text(tmp_path):
    raw = (b"From: a@b\nSubject: news\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=B\n\n"
           b"--B\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
           + base64.encodebytes(b"<html><head><style>p{x:1}</style></head><body><p>Rocket launch today</p>"
                                b"<script>var tracking=1;</script></body></html>") + b"--B--\n")
    assert _read_mail(tmp_path, raw).text == "Rocket launch today"


def test_rfc2047_subject_is_decoded(tmp_path):
    raw = b"From: a@b\nSubject: =?utf-8?q?Caf=C3=A9?= =?iso-8859-1?b?5w==?=a va\n\nbody text\n"
    assert _read_mail(tmp_path, raw).title == "Caféça va"
    assert mail_subject("Subject: Re: =?UTF-8?B?w7xiZXI=?= alles\n\nx") == "Re: über alles"
    [item] = corpus_from_records([{"text": raw.decode()}], strip="email").items
    assert item.title == "Caféça va"


def test_plain_newsgroup_posting_is_unchanged(tmp_path):
    raw = (b"From: someone@example.com\nSubject: Re: orbit question\nOrganization: NASA\nLines: 4\n\n"
           b"In article <1@x> bob@y writes:\n> quoted line\nThe orbit is elliptic, caf\xe9 or not.\n\n--\nBob\n")
    item = _read_mail(tmp_path, raw)
    assert (item.title, item.text.strip()) == ("Re: orbit question", "The orbit is elliptic, café or not.")
    # An empty Subject is no subject (the title falls back to the first line), not the next header.
    item = _read_mail(tmp_path, b"From: a@b\nSubject: \nLines: 3\n\nEngines and wheels.\n")
    assert item.title == "Engines and wheels."


@settings(max_examples=50, deadline=None)
@given(st.sampled_from([b"Subject: =?x?q?a=ZZ?= ", b"Content-Type: multipart/mixed; boundary=b\n\n--b\n",
                        b"Content-Transfer-Encoding: base64\nContent-Type: text/plain; charset=\xff\n\n",
                        b"Content-Type: text/html; charset=utf-16\n\n"]),
       st.binary(max_size=300))
def test_no_mail_makes_the_reader_raise(head, tail):
    subject, body = read_mail(head + tail)
    for text in (subject, body, strip_email((head + tail).decode("latin-1"))):
        text.encode("utf-8")  # storable: no lone surrogates


# -- encodings ------------------------------------------------------------------------------------------------


def test_encodings_are_detected(tmp_path, monkeypatch):
    japanese = "日本語のテキストです。検索エンジンのテストをしています。"
    (tmp_path / "sjis.txt").write_bytes(japanese.encode("shift_jis"))
    (tmp_path / "utf16.txt").write_bytes("Grüße, “smart” UTF-16 text".encode("utf-16"))  # with its BOM
    (tmp_path / "utf16be.txt").write_bytes(b"\xfe\xff" + "big endian words".encode("utf-16-be"))
    (tmp_path / "cp1252.txt").write_bytes(b"He said \x93hello\x94 \x96 it\x92s fine.")
    (tmp_path / "bom8.txt").write_bytes("\ufeffplain words".encode("utf-8"))
    (tmp_path / "page.html").write_bytes('<html><head><meta charset="windows-1251"><title>Новости</title></head>'
                                         '<body><p>Привет</p></body></html>'.encode("cp1251"))
    texts = {it.id: it.text for it in read_documents(tmp_path).items}
    assert texts == {"sjis.txt": japanese, "utf16.txt": "Grüße, “smart” UTF-16 text", "utf16be.txt": "big endian words",
                     "cp1252.txt": "He said “hello” – it’s fine.", "bom8.txt": "plain words", "page.html": "Привет"}
    # Valid UTF-8 never reaches the detector (the fast path).
    import charset_normalizer

    monkeypatch.setattr(charset_normalizer, "from_bytes", lambda *a, **k: pytest.fail("detector called"))
    assert decode("naïve façade ✓".encode()) == "naïve façade ✓"


def test_a_cut_multibyte_character_does_not_spoil_the_document(tmp_path):
    (tmp_path / "long.txt").write_text("é" * 50, encoding="utf-8")  # 100 bytes
    with pytest.warns(RetrievalWarning, match="truncated long.txt"):
        [item] = read_documents(tmp_path, max_bytes=51).items
    assert item.text == "é" * 25


def test_jsonl_with_a_bom_keeps_its_first_record(tmp_path):
    lines = [json.dumps({"id": "a", "text": "first record"}), json.dumps({"id": "b", "text": "zweite Zeile: Grüße"})]
    (tmp_path / "u8.jsonl").write_bytes("\ufeff".encode() + "\n".join(lines).encode())
    (tmp_path / "u16.jsonl").write_bytes("\n".join(lines).encode("utf-16"))
    for name in ("u8.jsonl", "u16.jsonl"):
        corpus = read_documents(tmp_path / name)
        assert [(it.id, it.text) for it in corpus.items] == [("a", "first record"), ("b", "zweite Zeile: Grüße")]
        assert corpus.skipped == []


def test_lone_surrogates_and_non_utf8_file_names_become_storable_text(tmp_path):
    # JSON may escape lone surrogates; Linux file names may be any bytes. SQLite (the
    # index metadata) refuses both, so a build crashed at its end.
    record = {"id": "x\udfff", "text": "orbit \ud800 rocket", "title": "t\udce9", "label": "sp\ud801"}
    (tmp_path / "c.jsonl").write_text(json.dumps(record) + "\n")
    [item] = read_documents(tmp_path / "c.jsonl").items
    assert (item.id, item.text, item.label) == ("x\ufffd", "orbit \ufffd rocket", "sp\ufffd")
    folder = tmp_path / "files"
    folder.mkdir()
    try:
        with open(os.fsencode(folder) + b"/caf\xe9.txt", "wb") as fh:
            fh.write(b"engine wheel")
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    [item] = read_documents(folder).items
    assert item.id == item.path == "café.txt" and item.text == "engine wheel"


# -- damaged archives -----------------------------------------------------------------------------------------


def _tar_gz(path, n=60):
    rng = np.random.default_rng(0)
    words = np.array(["orbit", "rocket", "engine", "wheel", "doctor", "patient", "graphics", "pixel"])
    with tarfile.open(path, "w:gz") as tf:
        for i in range(n):
            data = " ".join(rng.choice(words, 400)).encode() + bytes(rng.integers(97, 123, 2000, dtype=np.uint8))
            info = tarfile.TarInfo(f"top/g{i % 2}/doc{i:03d}.txt")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_damaged_archives_give_one_clear_error(tmp_path):
    full = _tar_gz(tmp_path / "full.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(full[: len(full) * 2 // 3])
    (tmp_path / "junk.tar.gz").write_bytes(b"this is not an archive at all\n" * 20)
    (tmp_path / "junk.zip").write_bytes(b"PK-ish but not a zip\n" * 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(5):
            zf.writestr(f"d/{i}.txt", f"document number {i} about engines")
    (tmp_path / "cut.zip").write_bytes(buf.getvalue()[:-30])  # the central directory is at the end
    for name, kind in [("cut.tar.gz", "tar"), ("junk.tar.gz", "tar"), ("junk.zip", "zip"), ("cut.zip", "zip")]:
        with pytest.raises(InputError, match=rf"{name}: damaged, truncated or not a {kind} archive.*download"):
            read_documents(tmp_path / name)
    with pytest.raises(InputError, match=r"cut.tar.gz: .* after \d+ document\(s\).*nothing was indexed"):
        read_documents(tmp_path / "cut.tar.gz" / "top" / "g1")  # lazily read inner folder: no partial corpus
    assert len(read_documents(tmp_path / "full.tar.gz").items) == 60


def test_cli_reports_a_truncated_archive_in_one_line(monkeypatch, capsys, tmp_path):
    full = _tar_gz(tmp_path / "full.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(full[: len(full) // 2])
    code, _, err = run(monkeypatch, capsys, "index", "docs", tmp_path / "cut.tar.gz", "--name", "x")
    assert code == 1 and err.startswith("error:") and "cut.tar.gz" in err and "Aborted" not in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_damaged_idx_files_give_one_clear_error(tmp_path):
    images = np.arange(5 * 8 * 8, dtype=np.uint8).reshape(5, 8, 8)
    raw = struct.pack(">HBB3I", 0, 8, 3, 5, 8, 8) + images.tobytes()
    packed = gzip.compress(raw)
    cases = {"cut-images-idx3-ubyte.gz": packed[: len(packed) // 2],
             "bad-deflate-images.gz": b"\x1f\x8b\x08\x00" + b"\xff\x00" * 20,
             "cut-images-idx3-ubyte": raw[:100]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match=name.replace(".", r"\.")):
            read_images(tmp_path / name)


# -- symbolic links -------------------------------------------------------------------------------------------


def _linked_tree(tmp_path, content: dict[str, bytes]):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    (root / ".store").mkdir()
    outside.mkdir()
    for name, data in content.items():
        (root / "a" / name).write_bytes(data)
        (outside / f"secret-{name}").write_bytes(data)
        (root / ".store" / f"kept-{name}").write_bytes(data)
    first = next(iter(content))
    (root / "escape-file").symlink_to(outside / f"secret-{first}")
    (root / "escape-dir").symlink_to(outside, target_is_directory=True)
    (root / "a" / "twin").symlink_to(root / "a" / first)  # the same file again
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)  # a loop
    (root / "b").symlink_to(root / ".store", target_is_directory=True)  # only way to a hidden folder's files
    return root


def test_document_folder_links_stay_inside_and_are_read_once(tmp_path):
    root = _linked_tree(tmp_path, {"one.txt": b"orbit rocket launch", "two.txt": b"engine wheel brake"})
    with pytest.warns(RetrievalWarning) as record:
        corpus = read_documents(root)
    ids = sorted(it.id for it in corpus.items)
    assert ids == ["a/one.txt", "a/two.txt", "b/kept-one.txt", "b/kept-two.txt"]
    assert not any("secret" in it.path or "escape" in it.id for it in corpus.items)
    skipped = dict(corpus.skipped)
    assert set(skipped) == {"escape-file", "escape-dir"} and "outside the source folder" in skipped["escape-file"]
    assert any("escape-file" in str(w.message) for w in record)


def test_image_folder_links_stay_inside(tmp_path):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "PNG")
    root = _linked_tree(tmp_path, {"red.png": buf.getvalue()})
    with pytest.warns(RetrievalWarning) as record:
        corpus = read_images(root, size=8)
    assert sorted(it.id for it in corpus.items) == ["a/red.png", "b/kept-red.png"]
    assert {os.path.basename(p) for p, _ in corpus.skipped} == {"escape-file", "escape-dir"}
    assert sum("outside the source folder" in str(w.message) for w in record) == 2


# -- query files ----------------------------------------------------------------------------------------------


def _fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def _refused_quickly(call):
    """``call()`` raises InputError without blocking (a FIFO open must not wait for a writer)."""
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(_raises(call)), daemon=True)
    worker.start()
    worker.join(10)
    assert outcome, "blocked on a FIFO"
    return outcome[0]


def _raises(call):
    try:
        call()
    except InputError as exc:
        return str(exc)
    return "no error"


def test_query_files_must_be_regular_files(tmp_path):
    with pytest.raises(InputError, match="is a folder, not a file"):
        read_text_file(tmp_path)
    if os.path.exists("/dev/zero"):
        with pytest.raises(InputError, match="/dev/zero is not a regular file"):
            read_text_file("/dev/zero")
    assert "is not a regular file" in _refused_quickly(lambda: read_text_file(_fifo(tmp_path)))
    big = tmp_path / "big.txt"
    big.write_bytes(b"words and more words\n" * (MAX_DOC_BYTES // 20 + 100))
    with pytest.warns(RetrievalWarning, match=f"truncated query file {big}"):
        assert len(read_text_file(big)) <= MAX_DOC_BYTES
    with pytest.raises(InputError, match="is a folder, not a file"):
        load_image(tmp_path, size=8)
    assert "is not a regular file" in _refused_quickly(lambda: load_image(tmp_path / "pipe", size=8))
    assert "regular file" in _refused_quickly(lambda: read_images(tmp_path / "pipe"))


def test_cli_query_file_and_image_messages(monkeypatch, capsys, built_docs, built_images, tmp_path):
    store, name, _ = built_docs
    code, _, err = run(monkeypatch, capsys, "query", name, "--file", tmp_path, "--index-dir", store.root)
    assert code == 1 and "is a folder, not a file" in err
    if os.path.exists("/dev/zero"):
        code, _, err = run(monkeypatch, capsys, "query", name, "--file", "/dev/zero", "--index-dir", store.root)
        assert code == 1 and "is not a regular file" in err
        code, _, err = run(monkeypatch, capsys, "query", name, "--batch", "/dev/zero", "--index-dir", store.root)
        assert code == 1 and "is not a regular file" in err
    images, pics, _ = built_images
    with pytest.raises(InputError, match="is a folder, not a file"):
        api.search(images, pics, str(tmp_path))
    with pytest.raises(InputError, match="is a folder, not a file"):
        api.search(images, pics, file=tmp_path)
