"""Generated bad inputs for the readers and the CLI (issue 12's fuzz test).

Every generator takes a :class:`random.Random` and writes one hostile but
realistic input under a folder: broken text encodings, malformed MIME mail,
HTML with bad charsets, JSONL with broken records, corrupt and truncated
archives, path-traversal member names, broken and oversized images, bad IDX
files, symlinks out of the corpus and into loops, odd option values. A case is
reproducible from its ``(seed, number)``.

Used by ``tests/test_fuzz.py`` (a quick run in CI) and ``benchmarks/fuzz.py``
(a long run). A hand-written generator rather than hypothesis strategies: the
inputs are files and archives whose *structure* is what matters (a zip cut at
a random byte, a MIME part with a lying charset), and a plain seeded generator
keeps every case cheap to name, replay and count.
"""
from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import os
import random
import signal
import struct
import sys
import tarfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

WORDS = ("rocket orbit launch engine brake wheel doctor patient vaccine keyboard disk printer "
         "the of and café naïve Überraschung 東京 привет").split()


def words(rng: random.Random, n: int | None = None) -> str:
    """A few plausible words (some non-ASCII)."""
    return " ".join(rng.choice(WORDS) for _ in range(n or rng.randint(3, 30)))


def cut(rng: random.Random, data: bytes) -> bytes:
    """``data`` truncated at a random byte (never the whole)."""
    return data[: rng.randrange(0, max(1, len(data)))]


def flip(rng: random.Random, data: bytes, n: int | None = None) -> bytes:
    """``data`` with a few random bytes overwritten."""
    buf = bytearray(data)
    for _ in range(n or rng.randint(1, 8)):
        if buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    return bytes(buf)


# -- documents ---------------------------------------------------------------


def text_bytes(rng: random.Random) -> bytes:
    """One bad or odd text document."""
    text = words(rng)
    choice = rng.randrange(14)
    if choice == 0:
        return rng.randbytes(rng.randint(0, 3000))
    if choice == 1:
        return text.encode("utf-8")[:-1] + b"\xc3"  # truncated multi-byte sequence
    if choice == 2:
        return b"\xef\xbb\xbf" + text.encode("utf-8")
    if choice == 3:
        return text.encode("utf-16")  # BOM + NUL bytes
    if choice == 4:
        return text.encode("utf-16-le")  # no BOM
    if choice == 5:
        return text.encode("cp1252", "replace").replace(b" ", b" \x93", 2)
    if choice == 6:
        return ("東京 " + text).encode("shift_jis", "replace")
    if choice == 7:
        return b""
    if choice == 8:
        return b" \n\t\r\n" * rng.randint(0, 50)
    if choice == 9:
        return (text + "\x00" + text).encode()
    if choice == 10:
        return ("x" * rng.randint(1, 200_000)).encode()
    if choice == 11:
        return ("\u202e\ufeff\u200b" + text + "\ud800".encode("utf-8", "surrogatepass").decode("latin-1")).encode(
            "utf-8", "surrogatepass")
    if choice == 12:
        return flip(rng, text.encode("utf-8"))
    return ("\n".join(words(rng, 1) for _ in range(rng.randint(1, 2000)))).encode()


def mail_bytes(rng: random.Random) -> bytes:
    """One malformed or tricky MIME message."""
    body = words(rng)
    head = f"From: a@b.c\nSubject: {rng.choice(['=?utf-8?q?Caf=C3=A9?=', '=?bogus?b?!!!?=', 'Re: ' + body[:20], ''])}\n"
    choice = rng.randrange(10)
    if choice == 0:
        enc = base64.b64encode(body.encode()).decode()
        return (head + "Content-Transfer-Encoding: base64\n\n" + enc[: rng.randrange(len(enc) + 1)] + "!!").encode()
    if choice == 1:
        return (head + "Content-Type: text/plain; charset=no-such-charset\n"
                "Content-Transfer-Encoding: quoted-printable\n\nCaf=C3=A9 =ZZ =\n" + body).encode()
    if choice == 2:
        return (head + 'Content-Type: multipart/mixed; boundary="XX"\n\n--XX\nContent-Type: text/plain\n\n'
                + body + "\n--XX\nContent-Type: application/octet-stream\n"
                "Content-Disposition: attachment; filename=a.bin\nContent-Transfer-Encoding: base64\n\n"
                + base64.b64encode(rng.randbytes(200)).decode() + "\n").encode()  # no closing boundary
    if choice == 3:
        nested = body
        for i in range(rng.randint(1, 60)):
            nested = f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n{nested}\n--b{i}--\n'
        return (head + nested).encode()
    if choice == 4:
        return (head + "Content-Type: multipart/alternative; boundary=\n\n--\n" + body).encode()
    if choice == 5:
        return (head + "Content-Type: text/html; charset=utf-8\n\n<p>" + body + "<script>x</script>").encode()
    if choice == 6:
        return (head + "Content-Transfer-Encoding: x-uuencode\n\nbegin 644 a\n" + body).encode()
    if choice == 7:
        return head.encode() * rng.randint(1, 500)
    if choice == 8:
        return ("Subject: " + "A" * rng.randint(1, 100_000) + "\n\n" + body).encode()
    return flip(rng, (head + "Content-Type: text/plain; charset=utf-16\n\n").encode() + body.encode("utf-16"))


def html_bytes(rng: random.Random) -> bytes:
    """One broken HTML page."""
    body = words(rng)
    choice = rng.randrange(8)
    if choice == 0:
        return f'<meta charset="nonsense"><title>{body}</title><p>{body}'.encode()
    if choice == 1:
        return f"<html><head><meta charset=iso-8859-1></head><body>caf\xe9 {body}".encode("latin-1", "replace")
    if choice == 2:
        return ("<div>" * rng.randint(1, 5000) + body).encode()
    if choice == 3:
        return f"<script>{body}</script><style>{body}</style>".encode()
    if choice == 4:
        return f"<p>&#xFFFFFFFF; &#0; &bogus; &#55296; {body}</p>".encode()
    if choice == 5:
        return f'<img alt="{"x" * rng.randint(1, 100_000)}"><p>{body}'.encode()
    if choice == 6:
        return f"<title>{body}".encode("utf-16")
    return flip(rng, f"<html><title>{body}</title><body><p>{body}</p></body></html>".encode())


def jsonl_bytes(rng: random.Random) -> bytes:
    """A JSONL file with some broken records (and maybe some good ones)."""
    lines: list[bytes] = []
    for i in range(rng.randint(1, 12)):
        choice = rng.randrange(12)
        if choice == 0:
            lines.append(json.dumps({"text": words(rng), "label": rng.choice(["a", "b", 3, None])}).encode())
        elif choice == 1:
            lines.append(b"{not json")
        elif choice == 2:
            lines.append(json.dumps([words(rng)]).encode())
        elif choice == 3:
            lines.append(json.dumps({"text": rng.choice([None, 5, [], {}])}).encode())
        elif choice == 4:
            lines.append(json.dumps({"text": words(rng), "id": "dup"}).encode())
        elif choice == 5:
            lines.append(json.dumps({"text": words(rng), "id": rng.choice([1e308, -0.0, True, [1], {"a": 1}])}).encode())
        elif choice == 6:
            lines.append(b"\xef\xbb\xbf" + json.dumps({"text": words(rng)}).encode())
        elif choice == 7:
            lines.append(("[" * rng.randint(1, 100_000)).encode())
        elif choice == 8:
            lines.append(json.dumps({"text": words(rng), "title": {"x": 1}, "label": [1, 2]}).encode())
        elif choice == 9:
            lines.append(rng.randbytes(rng.randint(1, 300)).replace(b"\n", b""))
        elif choice == 10:
            lines.append(json.dumps({"text": "\x00" + words(rng), "id": "\n../../etc"}).encode())
        else:
            lines.append(json.dumps({"text": words(rng)}, ensure_ascii=False).encode("utf-16"))
    return b"\n".join(lines)


def doc_member(rng: random.Random) -> tuple[str, bytes]:
    """A file name and bad contents for a document corpus."""
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice(["a.txt", "b.md", "noext", "c.rst", "mail.1"]), text_bytes(rng)
    if kind == 1:
        return rng.choice(["m.txt", "12345", "post.eml.txt"]), mail_bytes(rng)
    if kind == 2:
        return rng.choice(["p.html", "q.htm"]), html_bytes(rng)
    return rng.choice(["weird\nname.txt", "ü-ñ.txt", " .txt", "-rf.txt", "a" * 200 + ".txt"]), text_bytes(rng)


# -- images ------------------------------------------------------------------


def png_bytes(rng: random.Random, size: int | None = None, mode: str = "RGB") -> bytes:
    """A small valid image (the material other generators break)."""
    from PIL import Image

    side = size or rng.randint(1, 40)
    img = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3)).convert(mode)
    buf = io.BytesIO()
    formats = {"RGB": ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"], "CMYK": ["JPEG", "TIFF"],
               "I": ["TIFF"]}.get(mode, ["PNG"])
    img.save(buf, format=rng.choice(formats))
    return buf.getvalue()


def image_bytes(rng: random.Random) -> bytes:
    """One bad or odd image file."""
    choice = rng.randrange(11)
    if choice == 0:
        return rng.randbytes(rng.randint(0, 2000))
    if choice == 1:
        return cut(rng, png_bytes(rng))
    if choice == 2:
        return flip(rng, png_bytes(rng), rng.randint(1, 40))
    if choice == 3:  # a PNG header declaring a huge canvas (decompression bomb)
        side = rng.choice([2 ** 15, 2 ** 16 - 1, 2 ** 31 - 1])
        ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
        import zlib
        chunk = b"IHDR" + ihdr
        return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
                + struct.pack(">I", zlib.crc32(chunk)) + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    if choice == 4:
        return png_bytes(rng, 1)
    if choice == 5:
        return png_bytes(rng, mode=rng.choice(["1", "L", "LA", "P", "RGBA", "I", "I;16", "CMYK"]))
    if choice == 6:
        return b"<svg xmlns='http://www.w3.org/2000/svg'><rect/></svg>"
    if choice == 7:
        return b"GIF89a" + rng.randbytes(rng.randint(0, 100))
    if choice == 8:
        return b"\xff\xd8\xff" + rng.randbytes(rng.randint(0, 500))
    if choice == 9:
        return words(rng).encode()
    return png_bytes(rng, rng.randint(100, 400))


def idx_bytes(rng: random.Random) -> bytes:
    """A bad IDX images file (maybe gzipped)."""
    choice = rng.randrange(7)
    n, side = rng.randint(0, 5), rng.randint(0, 6)
    header = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">III", n, side, side)
    data = header + rng.randbytes(n * side * side)
    if choice == 0:
        data = cut(rng, data)
    elif choice == 1:
        data = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">III", 2 ** 31, 2 ** 16, 2 ** 16)
    elif choice == 2:
        data = struct.pack(">HBB", 0, rng.randrange(256), rng.randrange(256)) + rng.randbytes(40)
    elif choice == 3:
        data = data + rng.randbytes(rng.randint(1, 50))
    elif choice == 4:
        data = struct.pack(">HBB", 0, 0x0D, 3) + struct.pack(">III", 2, 3, 3) + struct.pack(">18f", *[float("nan")] * 18)
    elif choice == 5:
        data = struct.pack(">HBB", 0, 0x08, 1) + struct.pack(">I", 4) + b"abcd"
    if rng.random() < 0.5:
        data = gzip.compress(data)
        if rng.random() < 0.3:
            data = cut(rng, data)
    return data


# -- archives and folders ----------------------------------------------------


def archive_bytes(rng: random.Random, members: list[tuple[str, bytes]], kind: str) -> bytes:
    """A zip or tar.gz of ``members``; sometimes corrupt, truncated or hostile."""
    choice = rng.randrange(8)
    if choice == 0:
        return rng.randbytes(rng.randint(0, 500))
    names = [(rng.choice(["../escape.txt", "/abs/x.txt", "a/../../b.txt", "dir/", "ok/" + n]) if choice == 1 else n, d)
             for n, d in members]
    buf = io.BytesIO()
    if kind == "zip":
        with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])) as zf:
            warnings.simplefilter("ignore")  # duplicate member names are part of the test
            for name, data in names:
                zf.writestr(name, data)
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for name, data in names:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            if choice == 2:  # hostile members: a symlink out, a device, a hard link
                for member_type, target in ((tarfile.SYMTYPE, "/etc/passwd"), (tarfile.CHRTYPE, ""),
                                            (tarfile.LNKTYPE, "../../x")):
                    info = tarfile.TarInfo(f"evil{member_type!r}.txt")
                    info.type, info.linkname = member_type, target
                    tf.addfile(info)
    data = buf.getvalue()
    if choice == 3:
        return cut(rng, data)
    if choice == 4:
        return flip(rng, data, rng.randint(1, 20))
    if choice == 5 and kind != "zip":
        return gzip.compress(rng.randbytes(300))  # gzip of something that is not a tar
    return data


@dataclass
class Case:
    """One generated input: a source path to read, and what kind it is."""

    name: str
    modality: str  # "docs" or "images"
    source: Path
    strip: str | None = None


def make_case(rng: random.Random, root: Path, number: int) -> Case:
    """Write one generated bad source under ``root`` and describe it."""
    root.mkdir(parents=True, exist_ok=True)
    kind = rng.choice(["folder", "folder", "jsonl", "zip", "tar.gz", "mail", "images", "images", "idx",
                       "image-archive", "links"])
    name = f"{kind}#{number}"
    if kind in ("folder", "mail"):
        folder = root / "src"
        for i in range(rng.randint(1, 4)):
            file, data = (f"m{i}.txt", mail_bytes(rng)) if kind == "mail" else doc_member(rng)
            sub = folder / rng.choice(["", "x", "y/z"])
            sub.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # a name the file system refuses is not the test
                (sub / f"{i}{file}").write_bytes(data)
        folder.mkdir(exist_ok=True)
        return Case(name, "docs", folder, strip="email" if kind == "mail" or rng.random() < 0.3 else None)
    if kind == "jsonl":
        path = root / "corpus.jsonl"
        path.write_bytes(jsonl_bytes(rng))
        return Case(name, "docs", path, strip=rng.choice([None, "email"]))
    if kind in ("zip", "tar.gz"):
        path = root / f"corpus.{kind}"
        members = [(f"top/{i}{doc_member(rng)[0]}", doc_member(rng)[1]) for i in range(rng.randint(0, 4))]
        path.write_bytes(archive_bytes(rng, members, kind))
        return Case(name, "docs", path)
    if kind == "images":
        folder = root / "imgs"
        for i in range(rng.randint(1, 5)):
            sub = folder / rng.choice(["", "cats", "dogs"])
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"{i}.{rng.choice(['png', 'jpg', 'gif', 'webp', 'bmp', 'tif', 'dat'])}").write_bytes(image_bytes(rng))
        if rng.random() < 0.2:
            (folder / "manifest.jsonl").write_bytes(jsonl_bytes(rng))
        return Case(name, "images", folder)
    if kind == "idx":
        path = root / rng.choice(["train-images-idx3-ubyte", "t-images-idx3-ubyte.gz", "data.idx"])
        path.write_bytes(idx_bytes(rng))
        if rng.random() < 0.5:
            (root / path.name.replace("images-idx3", "labels-idx1")).write_bytes(cut(rng, idx_bytes(rng)))
        return Case(name, "images", path)
    if kind == "image-archive":
        path = root / rng.choice(["imgs.zip", "imgs.tar.gz"])
        members = [(f"{i}.png", image_bytes(rng)) for i in range(rng.randint(0, 3))]
        path.write_bytes(archive_bytes(rng, members, "zip" if path.suffix == ".zip" else "tar.gz"))
        return Case(name, "images", path)
    # Symlinks: out of the corpus, dangling, into a loop, to a device.
    folder = root / "linked"
    (folder / "in").mkdir(parents=True)
    outside = root / "outside.txt"
    outside.write_text("secret words outside the corpus " + words(rng))
    (folder / "in" / "ok.txt").write_text(words(rng))
    for i, target in enumerate(rng.sample([outside, root / "missing.txt", folder, Path("/dev/zero"),
                                           folder / "in" / "ok.txt", Path("/etc")], rng.randint(1, 4))):
        os.symlink(target, folder / f"link{i}.txt")
    return Case(name, rng.choice(["docs", "images"]), folder)


# -- running one case --------------------------------------------------------


class CaseTimeout(Exception):
    """A case ran longer than its time limit (a hang is a failure too)."""


@contextlib.contextmanager
def time_limit(seconds: int):
    """Raise :class:`CaseTimeout` in the main thread after ``seconds`` (POSIX alarm)."""
    def _fire(signum, frame):
        raise CaseTimeout(f"took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, _fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


#: Warnings a reader may let through besides ours: interpreter housekeeping, not about the input.
HARMLESS_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ResourceWarning)


def read_case(case: Case) -> str:
    """Read a case with the library's reader; return the outcome or raise ``AssertionError``.

    The outcome is ``"read N"`` or ``"error: ..."``. Anything else (another
    exception, a warning that is not a :class:`RetrievalWarning`, a hang) is a
    failure.
    """
    from retrieval.errors import RetrievalError, RetrievalWarning
    from retrieval.sources.documents import read_documents
    from retrieval.sources.images import read_images

    with warnings.catch_warnings(record=True) as caught, time_limit(30):
        warnings.simplefilter("always")
        try:
            if case.modality == "docs":
                corpus = read_documents(case.source, strip=case.strip,
                                        labels_from_folders=case.source.is_dir() and "x" in os.listdir(case.source))
            else:
                corpus = read_images(case.source, size=16)
            outcome = f"read {len(corpus.items)}"
        except RetrievalError as exc:
            outcome = f"error: {exc}"
        except Exception as exc:  # noqa: BLE001 - the point of the test
            raise AssertionError(f"{case.name}: {type(exc).__name__}: {exc}") from exc
    strange = [w for w in caught if not issubclass(w.category, (RetrievalWarning, *HARMLESS_WARNINGS))]
    assert not strange, f"{case.name}: {strange[0].category.__name__}: {strange[0].message}"
    return outcome


@dataclass
class CliResult:
    """Exit code and output of one in-process CLI run."""

    code: int
    stdout: str
    stderr: str


def run_cli(args: list[str], home: Path, stdin: str = "") -> CliResult:
    """Run ``retrieval ARGS`` in this process as the console script would, with ``RETRIEVAL_HOME=home``.

    In-process because a subprocess per case costs a second of start-up; any
    exception that escapes ``cli.main`` (a traceback for a user) fails the caller.
    """
    from retrieval import cli

    out, err = io.StringIO(), io.StringIO()
    old_env, old_argv, old_stdin = os.environ.get("RETRIEVAL_HOME"), sys.argv, sys.stdin
    os.environ["RETRIEVAL_HOME"] = str(home)
    sys.argv, sys.stdin = ["retrieval", *args], io.StringIO(stdin)
    code = 0
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                time_limit(60):
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception as exc:  # noqa: BLE001 - what a user would see as a traceback
                raise AssertionError(f"retrieval {' '.join(args)[:200]!r}: traceback: "
                                     f"{type(exc).__name__}: {exc}") from exc
    finally:
        sys.argv, sys.stdin = old_argv, old_stdin
        if old_env is None:
            os.environ.pop("RETRIEVAL_HOME", None)
        else:
            os.environ["RETRIEVAL_HOME"] = old_env
    return CliResult(code, out.getvalue(), err.getvalue())


def check_cli(result: CliResult, what: str) -> None:
    """Exit 0, or exit 1 with exactly one ``error:`` line; never a traceback."""
    text = result.stdout + result.stderr
    assert "Traceback" not in text, f"{what}: traceback\n{text[-2000:]}"
    assert result.code in (0, 1), f"{what}: exit {result.code}\n{text[-2000:]}"
    if result.code == 1:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, f"{what}: exit 1 with {len(errors)} error lines\n{result.stderr[-2000:]}"


# -- CLI cases -----------------------------------------------------------------


def odd_text(rng: random.Random) -> str:
    """A hostile query text."""
    return rng.choice([
        "", " ", "the of and", "rocket", "\x00rocket", "🚀" * rng.randint(1, 50), "a" * rng.randint(1, 20_000),
        "\u202e\u200b\ufeff", "-k", "--help", "' OR 1=1; --", "../../etc/passwd", words(rng), "\n\n\n",
        "%s%s%n", "http://127.0.0.1:9/x.png",
    ])


def odd_int(rng: random.Random) -> str:
    """A number option value at or past the edges."""
    return str(rng.choice([-(2 ** 63), -5, -1, 0, 1, 3, 10 ** 9, 2 ** 63 - 1]))


def odd_float(rng: random.Random) -> str:
    """A float option value at or past the edges."""
    return rng.choice(["-1", "0", "0.5", "1", "5", "1e308", "nan", "inf", "-inf"])


def cli_case(rng: random.Random, root: Path, number: int, docs: str, images: str) -> tuple[list[str], str, str]:
    """One generated CLI command against the test indexes.

    Returns:
        ``(argv, index the command touches, kind)``; kind ``"write"`` commands
        may add items (their ``--json`` report is checked), ``"read"`` ones
        must leave the index as it was.
    """
    root.mkdir(parents=True, exist_ok=True)
    choice = rng.randrange(12)
    name = rng.choice([docs, images])
    if choice == 0:
        # "--" as a user must write it before a query that starts with "-" (else a usage error, exit 2)
        return ["query", docs, "-k", odd_int(rng), "--", odd_text(rng)], docs, "read"
    if choice == 1:
        path = root / f"q{number}.txt"
        path.write_bytes(rng.choice([text_bytes, mail_bytes, html_bytes])(rng))
        target = rng.choice([str(path), str(root), "/dev/zero", "/dev/null", str(root / "missing")])
        return ["query", docs, "--file", target, *rng.choice([[], ["--strip", "email"]])], docs, "read"
    if choice == 2:
        path = root / f"q{number}.png"
        path.write_bytes(image_bytes(rng))
        return ["query", images, "--", rng.choice([str(path), str(root), "/dev/zero", odd_text(rng)])], images, "read"
    if choice == 3:
        return ["query", name, "--like", rng.choice(["no-such-id", "", "../x", "0" * 300, "%", "'"]),
                "--method", rng.choice(["ae", "lsa", "pixels", "pca", "nope", ""])], name, "read"
    if choice == 4:
        opts = rng.choice([["--radius", odd_int(rng)], ["--shortlist", odd_int(rng)], ["--rerank", "tfidf"]])
        return ["query", docs, words(rng, 2), *opts], docs, "read"
    if choice == 5:
        lines = "\n".join(rng.choice([json.dumps({"text": odd_text(rng), "k": int(odd_int(rng))}),
                                      json.dumps({"like": "nope"}), "{bad", json.dumps({"image": "/dev/zero"}),
                                      json.dumps([1]), json.dumps({"text": words(rng), "method": "x"})])
                          for _ in range(rng.randint(1, 5)))
        path = root / f"batch{number}.jsonl"
        path.write_text(lines)
        return ["query", docs, "--batch", str(path)], docs, "read"
    if choice in (6, 7, 8):
        case = make_case(rng, root / f"src{number}", number)
        target = docs if case.modality == "docs" else images
        return [rng.choice(["add", "add", "sync"]), target, str(case.source), "--json"], target, "write"
    if choice == 9:
        case = make_case(rng, root / f"ev{number}", number)
        target = docs if case.modality == "docs" else images
        return ["evaluate", target, "--queries", str(case.source), "--labels-from-folders",
                "-k", rng.choice(["1", "10", "0", "-3"])], target, "read"
    if choice == 10:
        return ["remove-items", name, "--id", rng.choice(["no-such", "../../x", ""]), "--json"], name, "read"
    return [rng.choice(["info", "remove-items", "outliers", "upgrade"]),
            rng.choice(["", "..", "../x", "a/b", "x" * 300, "nope", "\x00"])], name, "read"


# -- runs (shared by tests/test_fuzz.py and benchmarks/fuzz.py) ----------------


def item_count(home: Path, name: str) -> int:
    """Items of an index, opened (and so checksum-verified) from scratch."""
    from retrieval import Index, Store

    return len(Index.open(name, Store(home)))


def run_readers(seed: int, cases: int, tmp: Path) -> tuple[dict[str, int], list[str]]:
    """Read ``cases`` generated sources; return outcome counts by kind and the failures."""
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    failures = []
    for number in range(cases):
        case = make_case(rng, tmp / str(number), number)
        try:
            outcome = read_case(case)
        except AssertionError as exc:
            failures.append(f"seed {seed} case {number}: {exc}")
            continue
        key = ("read" if outcome.startswith("read") else "error") + " " + case.name.split("#")[0]
        outcomes[key] = outcomes.get(key, 0) + 1
    return outcomes, failures


def run_commands(seed: int, cases: int, tmp: Path, home: Path, docs: str, images: str
                 ) -> tuple[dict[str, int], list[str]]:
    """Run ``cases`` generated commands against the indexes ``docs`` and ``images`` in ``home``.

    After each command both indexes must still open with the item count they
    had, plus what a successful ``add``/``sync`` reports as added (nothing
    removed, nothing replaced: a generated source is never the index's own).

    Returns:
        Counts by command and exit code, and the failures.
    """
    rng = random.Random(seed)
    counts = {name: item_count(home, name) for name in (docs, images)}
    outcomes: dict[str, int] = {}
    failures = []
    for number in range(cases):
        argv, name, kind = cli_case(rng, tmp / str(number), number, docs, images)
        what = f"seed {seed} case {number}: retrieval {' '.join(argv)[:200]!r}"
        try:
            result = run_cli(argv, home)
            check_cli(result, what)
            after = item_count(home, name)
            if kind == "write" and result.code == 0:
                report = json.loads(result.stdout)
                assert report["removed"] == 0 and report["replaced"] == 0, f"{what}: lost items: {report}"
                assert after == counts[name] + report["added"] == report["items"], f"{what}: {after} items, {report}"
            else:
                assert after == counts[name], f"{what}: {counts[name]} items before, {after} after (exit {result.code})"
            counts[name] = after
        except AssertionError as exc:
            failures.append(str(exc))
            continue
        key = f"{argv[0]} exit {result.code}"
        outcomes[key] = outcomes.get(key, 0) + 1
    return outcomes, failures
