"""Text cleaning: encodings, mail/newsgroup decoding and stripping, HTML to visible text."""
from __future__ import annotations

import codecs
import email.parser
import email.policy
import re
from html.parser import HTMLParser

_HEADER_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*:")
_HEADER_LINE_BYTES = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*:")
_QUOTE_INTRO = re.compile(r"(writes in|writes:|wrote:|says:|said:|^In article|^Quoting )")
_SUBJECT = re.compile(r"^Subject:[ \t]*(.*)$", re.MULTILINE)
#: Reply and forward prefixes of a subject, repeated ("Re: Fwd: RE[2]: ...").
_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|fw|aw)\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE)
#: The end of a sentence: . ! or ? followed by white space.
_SENTENCE_END = re.compile(r"[.!?](?=\s)")
#: Transfer encodings whose payload must be decoded to bytes; the others
#: (7bit, 8bit, binary, none) carry the bytes as they are.
_ENCODED = ("base64", "quoted-printable", "uuencode", "x-uuencode", "uue", "x-uue")
#: text/* subtypes that are data, not prose; any other text/* subtype reads as
#: text/plain, as RFC 2046 asks (20 Newsgroups FAQs are text/x-usenet-FAQ).
_DATA_TEXT = ("text/calendar", "text/vcard", "text/x-vcard", "text/directory", "text/csv")
#: MIME main types that are never text.
_NOT_TEXT = ("image", "audio", "video", "application", "font", "model", "message", "multipart")
_BYTES_PARSER = email.parser.BytesParser(policy=email.policy.default)
_TEXT_PARSER = email.parser.Parser(policy=email.policy.default)
#: The blank line that ends a header block, in text (False) and in bytes (True).
_BLANK_LINE = {False: re.compile(r"\r?\n\r?\n"), True: re.compile(rb"\r?\n\r?\n")}


#: Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def bom(data: bytes) -> tuple[str, int] | None:
    """The encoding named by the byte-order mark ``data`` starts with, and the mark's length."""
    for mark, encoding in _BOMS:
        if data.startswith(mark):
            return encoding, len(mark)
    return None


#: Two non-ASCII bytes in a row: absent from text whose only non-ASCII bytes
#: are accents and punctuation between ASCII letters (Western code pages).
_HIGH_PAIR = re.compile(rb"[\x80-\xff]{2}")
_ASCII = bytes(range(128))
#: A folded header's line break and the white space around it (unfolded to one space).
_FOLD = re.compile(r"[ \t]*\r?\n[ \t]*")
_SURROGATE = re.compile("[\ud800-\udfff]")
#: charset-normalizer's names of the multi-byte (East Asian) encodings: in
#: these a lead byte may stand between ASCII bytes (Shift-JIS katakana).
_MULTIBYTE = ("cp932", "shift_jis", "euc_", "gb", "big5", "cp949", "cp950", "johab", "iso2022", "hz")


def _western(data: bytes, matches: list) -> bool:
    """Whether to read non-UTF-8 bytes as cp1252 rather than the detector's best guess.

    On short, mostly-ASCII text charset-normalizer often ranks another code
    page first (it reads "café crème" as cp1250 "crčme", a "na\\xefve" as
    cp775, a lone pair of smart quotes as cp1125). cp1252 wins when it reads
    the bytes as well as the best guess does (browsers assume it too: WHATWG
    reads every latin-1 label as windows-1252), or when its guess is a
    single-byte code page, every non-ASCII byte stands alone between ASCII
    ones, and the detector found no language or the bytes are a few strays.
    """
    if not matches:
        return True
    best = matches[0]
    if any("cp1252" in m.could_be_from_charset and m.chaos <= best.chaos + 0.01
           and m.coherence >= best.coherence - 0.1 for m in matches):
        return True
    if best.encoding.startswith(_MULTIBYTE) or _HIGH_PAIR.search(data):
        return False
    # A few stray bytes in ASCII text (0.5 %: fewer than accents in any Latin
    # language) say nothing about the code page: the likeliest one wins.
    return best.coherence == 0 or len(data.translate(None, _ASCII)) < 0.005 * len(data)


def _strict(data: bytes, encoding: str, partial: bool) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        if partial and exc.end >= len(data) > exc.start >= len(data) - 4:
            return data[:exc.start].decode(encoding)  # a character cut in two by the size cap
        raise


def decode(data: bytes, *, partial: bool = False) -> str:
    """Decode text of unknown encoding.

    In order: a byte-order mark (UTF-8, UTF-16 or UTF-32) decides; else
    valid UTF-8 (ASCII included, so the common case costs one strict decode
    and no detection); else charset-normalizer's guess (Shift-JIS, cp1251,
    ...), with cp1252 preferred among equally good Latin guesses; else
    cp1252, and latin-1 (which never fails) for bytes cp1252 leaves undefined.

    Args:
        data: The bytes.
        partial: The bytes were cut from a longer file: an incomplete
            character at the end is dropped instead of spoiling the detection.
    """
    found = bom(data)
    if found:
        # A BOM is explicit; a damaged unit is replaced rather than refused.
        return codecs.getincrementaldecoder(found[0])("replace").decode(data[found[1]:], final=not partial)
    try:
        return _strict(data, "utf-8", partial)
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes  # imported here: valid UTF-8 never needs it

    # Without a BOM, UTF-16/32 guesses are noise (such text is full of NULs and read as binary).
    matches = [m for m in from_bytes(data) if not m.encoding.startswith(("utf_16", "utf_32"))]
    if not _western(data, matches):
        # The detector judged sample chunks; a bad byte elsewhere must not fail the file.
        return data.decode(matches[0].encoding, "replace")
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


#: The charset an HTML page declares: <meta charset="x"> or <meta http-equiv=... content="...; charset=x">.
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def decode_html(data: bytes, *, partial: bool = False) -> str:
    """Decode an HTML page: a BOM, else the charset its ``<meta>`` declares in the first
    1,024 bytes (as browsers do), else :func:`decode`'s detection.

    A declared charset that does not fit the bytes or is unknown falls back to
    detection; "utf-16" declared in ASCII bytes means UTF-8 (HTML standard).
    """
    match = None if bom(data) else _META_CHARSET.search(data[:1024])
    if match is None:
        return decode(data, partial=partial)
    charset = match.group(1).decode("ascii").lower()
    return _decode_declared(data, "utf-8" if charset.startswith(("utf-16", "utf-32")) else charset, partial)


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


def fix_surrogates(text: str) -> str:
    """``text`` without lone surrogates, which no UTF-8 store accepts.

    Raw bytes kept as surrogate escapes (a mail parsed from bytes, a file
    name that is not UTF-8) are decoded like file contents (:func:`decode`);
    any other lone surrogate (a JSON ``"\\ud800"`` escape) becomes U+FFFD.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return decode(text.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError:
            return _SURROGATE.sub("\ufffd", text)


def _decode_declared(data: bytes, charset: str | None, partial: bool) -> str:
    """Bytes of a MIME part in its declared charset; detection when it is missing, unknown or wrong."""
    if charset:
        try:
            if codecs.lookup(charset).name == "iso8859-1":
                charset = "cp1252"  # as browsers do: "latin-1" mail is often cp1252 (smart quotes)
            return _strict(data, charset, partial)
        except (LookupError, ValueError):  # unknown charset, or bytes that do not fit it
            if charset == "cp1252":
                return data.decode("latin-1")
    return decode(data, partial=partial)


def _part_text(part, from_text: bool, partial: bool) -> str:
    if from_text and str(part.get("content-transfer-encoding", "")).strip().lower() not in _ENCODED:
        return part.get_payload()  # parsed from text: decoded already
    # The bytes, transfer-decoded (parsed from bytes, get_payload() without decode
    # would read 8-bit bytes as ASCII and replace them).
    data = part.get_payload(decode=True)
    return _decode_declared(data, part.get_content_charset(), partial) if isinstance(data, bytes) else ""


def _texts(part, html: bool, from_text: bool, partial: bool) -> list[str]:
    """The readable texts of a MIME (sub)tree, in order: text/plain (and other prose text/*)
    parts, and text/html ones reduced to visible text when ``html`` (no plain alternative)."""
    if part.is_multipart():
        subparts = list(part.iter_parts())  # empty for message/rfc822: a forwarded mail is not the author's text
        if part.get_content_subtype() == "alternative":
            for allow_html in (False, html):
                for sub in subparts:
                    if found := _texts(sub, allow_html, from_text, partial):
                        return found
            return []
        return [text for sub in subparts for text in _texts(sub, html, from_text, partial)]
    if part.is_attachment():
        return []
    kind = part.get_content_type()
    if kind == "text/html":
        return [html_to_text(_part_text(part, from_text, partial))[1]] if html else []
    if kind.split("/")[0] in _NOT_TEXT or kind in _DATA_TEXT:
        return []  # images, PDFs, calendars, ...: not text the author wrote
    # text/*, and unknown main types ("setext/plain" from old posting software).
    return [_part_text(part, from_text, partial)]


def _subject(msg) -> str:
    for name, value in msg.raw_items():
        if name.lower() == "subject":
            # The raw value: 8-bit bytes decoded by detection; the policy's header parser
            # (slow) only when there are RFC 2047 words (=?utf-8?q?Caf=C3=A9?=) to decode.
            value = _FOLD.sub(" ", fix_surrogates(value)).strip()
            if "=?" in value:
                value = fix_surrogates(str(email.policy.default.header_fetch_parse(name, value))).strip()
            return value
    return ""


def read_mail(message: str | bytes, *, partial: bool = False) -> tuple[str, str]:
    """The subject and the body text of a mail or newsgroup posting.

    Parsed with the standard library's :mod:`email` package: the body is the
    message's text/plain parts (text/html ones reduced to visible text when a
    part has no plain alternative), with transfer encodings (base64,
    quoted-printable) and declared charsets decoded (:func:`decode`'s
    detection when the charset is missing, unknown or wrong); attachments and
    other non-text parts are left out. Text that does not start with a
    ``Name: value`` header line is not a message and comes back whole.

    Args:
        message: The message, best as the file's bytes (each part is then
            decoded in its own charset).
        partial: The bytes were cut from a longer file (see :func:`decode`).

    Returns:
        ``(subject, body)``: the decoded Subject (``""`` when there is none)
        and the body, quotes and signature still in.
    """
    if isinstance(message, bytes):
        if not _HEADER_LINE_BYTES.match(message):
            return "", decode(message, partial=partial)
        parse = _BYTES_PARSER.parsebytes
    else:
        if not _HEADER_LINE.match(message):
            return "", message
        parse = _TEXT_PARSER.parsestr
    try:
        # The header block alone first: a single-part body is then set whole instead of
        # being fed line by line through the parser (a third of the time on 20 Newsgroups).
        # The block ends at the first blank line, as before MIME decoding.
        end = _BLANK_LINE[isinstance(message, bytes)].search(message)
        msg = parse(message[:end.end()] if end else message, headersonly=True)
        if msg.get_content_maintype() == "multipart":
            msg = parse(message)
        else:
            body = message[end.end():] if end else message[:0]
            msg.set_payload(body.decode("ascii", "surrogateescape") if isinstance(body, bytes) else body)
        subject = _subject(msg)
        body = "\n\n".join(fix_surrogates(text) for text in _texts(msg, True, isinstance(message, str), partial))
    except Exception:  # noqa: BLE001 - the header parser of policy.default has raised on
        # malformed headers in several CPython releases; one odd mail must not stop a
        # build, so it is read the pre-MIME way (header block dropped, body kept).
        text = decode(message, partial=partial) if isinstance(message, bytes) else message
        headers, body = split_headers(text)
        match = _SUBJECT.search(headers)
        subject = match.group(1).strip() if match else ""
    return subject, body.replace("\r\n", "\n")


def mail_subject(text: str | bytes) -> str:
    """Return the decoded ``Subject:`` of a message, or ``""``."""
    return read_mail(text)[0]


def strip_reply_prefix(subject: str) -> str:
    """``subject`` without its leading "Re:" / "Fwd:" / "Fw:" prefixes (repeated, any case)."""
    return _REPLY_PREFIX.sub("", subject).strip()


def strip_quotes(body: str) -> str:
    """Remove quoted replies and the signature block of a message body.

    The same cleaning as scikit-learn's 20 Newsgroups
    ``remove=("footers", "quotes")``: quotes repeat other documents,
    signatures repeat across an author's posts.
    """
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


def strip_email(text: str | bytes) -> str:
    """Decode a message (see :func:`read_mail`) and remove its headers, quoted replies and signature.

    The same cleaning as scikit-learn's 20 Newsgroups
    ``remove=("headers", "footers", "quotes")``: headers leak the author and
    so the label, quotes repeat other documents, signatures repeat across an
    author's posts.

    Args:
        text: A mail or newsgroup posting.

    Returns:
        The body the author wrote.
    """
    return strip_quotes(read_mail(text)[1])


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
