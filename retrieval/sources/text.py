"""Text cleaning: mail/newsgroup stripping and HTML to visible text."""
from __future__ import annotations

import re
from html.parser import HTMLParser

_HEADER_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*:")
_QUOTE_INTRO = re.compile(r"(writes in|writes:|wrote:|says:|said:|^In article|^Quoting )")
_SUBJECT = re.compile(r"^Subject:\s*(.*)$", re.MULTILINE)
#: Reply and forward prefixes of a subject, repeated ("Re: Fwd: RE[2]: ...").
_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|fw|aw)\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE)
#: The end of a sentence: . ! or ? followed by white space.
_SENTENCE_END = re.compile(r"[.!?](?=\s)")


def split_headers(text: str) -> tuple[str, str]:
    """Split an RFC-822 message into its header block and its body.

    Only text that starts with a ``Name: value`` line counts as a message, so
    a plain document never loses its first paragraph.

    Args:
        text: The whole message.

    Returns:
        ``(headers, body)``; ``headers`` is empty when there is none.
    """
    if not _HEADER_LINE.match(text):
        return "", text
    headers, _, body = text.partition("\n\n")
    return headers, body


def mail_subject(text: str) -> str:
    """Return the ``Subject:`` of a message, or ``""``."""
    headers, _ = split_headers(text)
    match = _SUBJECT.search(headers)
    return match.group(1).strip() if match else ""


def strip_reply_prefix(subject: str) -> str:
    """``subject`` without its leading "Re:" / "Fwd:" / "Fw:" prefixes (repeated, any case)."""
    return _REPLY_PREFIX.sub("", subject).strip()


def strip_email(text: str) -> str:
    """Remove headers, quoted replies and the signature block of a message.

    The same cleaning as scikit-learn's 20 Newsgroups
    ``remove=("headers", "footers", "quotes")``: headers leak the author and
    so the label, quotes repeat other documents, signatures repeat across an
    author's posts.

    Args:
        text: A mail or newsgroup posting.

    Returns:
        The body the author wrote.
    """
    _, body = split_headers(text)
    lines = [
        line
        for line in body.split("\n")
        if not (line.startswith(">") or line.startswith("|") or _QUOTE_INTRO.search(line))
    ]
    lines = "\n".join(lines).strip().split("\n")
    # A line made only of dashes ("--", "-- ") opens the signature block.
    for i in range(len(lines) - 1, 0, -1):
        if lines[i].strip().strip("-") == "" and lines[i].strip():
            lines = lines[:i]
            break
    return "\n".join(lines)


class _VisibleText(HTMLParser):
    _SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
              "section", "article", "header", "footer", "pre", "blockquote", "td", "th"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self._in_title = True
        elif tag in self._SKIP:
            self._skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        elif tag in self._SKIP and self._skip:
            self._skip -= 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """Reduce an HTML page to its visible text.

    Args:
        html: The page source.

    Returns:
        ``(title, text)``: the ``<title>`` (may be empty) and the visible text
        with one line per block element.
    """
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    text = re.sub(r"\n\s*\n+", "\n", text)
    return " ".join(parser.title.split()), text.strip()


def first_line(text: str, limit: int = 100) -> str:
    """Return the first non-empty line of ``text``, cut to ``limit`` characters."""
    for line in text.split("\n"):
        line = line.strip()
        if line:
            return line[:limit]
    return ""


def first_sentence(text: str) -> str:
    """The first non-empty line or the first sentence of ``text``, whichever is shorter.

    A sentence ends at ".", "!" or "?" followed by white space (so "e.g. x"
    ends one early: a short query either way); a docstring's first line is
    usually its summary, a news article's its headline.
    """
    body = text.lstrip()
    line = body.split("\n", 1)[0].strip()
    match = _SENTENCE_END.search(body)
    sentence = " ".join(body[:match.end()].split()) if match else line
    return sentence if len(sentence) < len(line) else line


def snippet(text: str, limit: int = 200) -> str:
    """Return the start of ``text`` on one line, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
