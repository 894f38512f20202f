"""--strip email before and after MIME decoding: same text on plain RFC-822 postings?

Runs the pre-MIME cleaning (whole file decoded as UTF-8 else latin-1, header
block cut at the first blank line, Subject by regular expression) and the
current one (:func:`retrieval.sources.text.read_mail`) over 20 Newsgroups
postings and counts the documents whose cleaned text or title differ, with
the reason of each; both share the unchanged quote/signature stripping.

    python benchmarks/mail_decoding_check.py /tmp/ng/20news-bydate-train --per-group 100
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.sources.text import read_mail, split_headers, strip_quotes  # noqa: E402

_SUBJECT = re.compile(r"^Subject:\s*(.*)$", re.MULTILINE)


def old_clean(data: bytes) -> tuple[str, str]:
    """(title source, text) the way ``--strip email`` worked before MIME decoding."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    headers, body = split_headers(text)
    match = _SUBJECT.search(headers)
    return (match.group(1).strip() if match else ""), strip_quotes(body)


def new_clean(data: bytes) -> tuple[str, str]:
    subject, body = read_mail(data)
    return subject, strip_quotes(body)


def reason(data: bytes, old: tuple[str, str], new: tuple[str, str]) -> str:
    head = data.partition(b"\n\n")[0].lower()
    why = []
    if b"content-transfer-encoding: quoted-printable" in head or b"content-transfer-encoding: base64" in head:
        why.append("transfer encoding decoded")
    if b"multipart/" in head:
        why.append("multipart")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        why.append("not UTF-8 (detection)")
    if b"\r" in data:
        why.append("CR line ends")
    if b"=?" in head:
        why.append("RFC 2047 word")
    if old[0] != new[0] and re.search(rb"(?im)^subject:.*\r?\n[ \t]", head):
        why.append("folded Subject unfolded")
    if not why:
        why.append("header block parsed differently")
    return (" + ".join(why)) + (" [title]" if old[0] != new[0] else "") + (" [text]" if old[1] != new[1] else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="20news-bydate-train (a folder per group)")
    parser.add_argument("--per-group", type=int, default=100, help="first N postings of each group (0: all)")
    parser.add_argument("--show", type=int, default=3, help="print this many differing files per reason")
    args = parser.parse_args()
    files = []
    for group in sorted(p for p in args.root.iterdir() if p.is_dir()):
        names = sorted(group.iterdir())
        files += names[: args.per_group] if args.per_group else names
    blobs = [(f, f.read_bytes()) for f in files]
    timings = {}
    results = {}
    for name, fn in (("old", old_clean), ("new", new_clean)):
        fn(blobs[0][1])  # imports and caches warm
        start = time.perf_counter()
        results[name] = [fn(data) for _, data in blobs]
        timings[name] = (time.perf_counter() - start) / len(blobs) * 1e6  # ms per 1,000
    reasons: Counter = Counter()
    shown: Counter = Counter()
    for (path, data), old, new in zip(blobs, results["old"], results["new"]):
        if old != new:
            why = reason(data, old, new)
            reasons[why] += 1
            if shown[why] < args.show:
                shown[why] += 1
                print(f"--- {path} ({why})")
                if old[0] != new[0]:
                    print(f"  title old {old[0]!r}\n  title new {new[0]!r}")
                if old[1] != new[1]:
                    at = next((i for i, (a, b) in enumerate(zip(old[1], new[1])) if a != b), 0)
                    print(f"  text old ...{old[1][max(0, at - 40):at + 60]!r}\n  text new ...{new[1][max(0, at - 40):at + 60]!r}")
    differ = sum(reasons.values())
    print(f"\n{len(blobs)} postings, {differ} differ ({differ / len(blobs):.2%}):")
    for why, count in reasons.most_common():
        print(f"  {count:5d}  {why}")
    print(f"time per 1,000 postings: old {timings['old']:.0f} ms, new {timings['new']:.0f} ms")


if __name__ == "__main__":
    main()
