from hypothesis import given, strategies as st

from retrieval.sources.text import html_to_text, snippet, split_headers, strip_email


def test_plain_text_keeps_first_paragraph():
    text = "First paragraph here.\n\nSecond paragraph."
    assert split_headers(text) == ("", text)
    assert strip_email(text) == text


def test_strip_email_removes_quotes_headers_signature():
    msg = ("From: a@b\nSubject: s\n\nJohn Doe wrote:\n> old\n| older\nNew content line.\nMore content.\n"
           "--\nJohn\nCompany Inc.\n")
    assert strip_email(msg) == "New content line.\nMore content."


def test_html_visible_text():
    title, text = html_to_text("<html><head><title> T  x </title><style>p{}</style></head>"
                               "<body><h1>Head</h1><p>para &amp; more</p><noscript>no</noscript></body></html>")
    assert title == "T x"
    assert text.split("\n") == ["Head", "para & more"]


@given(st.text())
def test_snippet_is_bounded_and_single_line(text):
    out = snippet(text, 50)
    assert len(out) <= 50 and "\n" not in out
