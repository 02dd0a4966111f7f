"""Light text cleaning, exact outputs on hand-written inputs (docs/mutation.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rakuten.text import cleaning as C


@pytest.mark.parametrize(
    "value, missing",
    [
        (None, True),
        (float("nan"), True),
        (np.nan, True),
        (np.float32("nan"), True),
        (pd.NA, True),
        (pd.NaT, True),
        ("", True),
        (" \t\n", True),
        ("a", False),
        (" a ", False),
        (0, False),
        (1.5, False),
        ([1, 2], False),
    ],
)
def test_is_missing(value, missing):
    assert C.is_missing(value) is missing


def test_concat_fields():
    assert C.concat_fields("Titre", "Desc") == "Titre\nDesc"
    assert C.concat_fields(None, "Desc") == "Desc"
    assert C.concat_fields("  ", None) == ""
    assert C.concat_fields(12, 3.5) == "12\n3.5"


@pytest.mark.parametrize(
    "raw, text",
    [
        ("plain text, no markup", "plain text, no markup"),
        ("a &amp b", "a & b"),  # entity without ";": html.unescape at the end
        ("&lt;b&gt;gras&lt;/b&gt;", "gras"),  # escaped once: a second pass strips it
        ("&amp;lt;i&amp;gt;x", "<i>x"),  # escaped twice: at most two passes
        ("x\x00<b>y</b>", "x  y"),  # control characters become spaces before lxml
        ("<p>a</p><p>b</p>", "a b"),
        ("<style>p{}</style>ok<noscript>no</noscript><template>t</template>", "ok"),
        ("<html><title>A</title><title>B</title></html>", "A B"),  # lxml refuses it: BeautifulSoup reads it
        ("<html><title>A</title><script>x</script></html>", "A"),  # ... and drops the script there too
        ('<?xml version="1.0"?><html><title>Titre</title></html>', "Titre"),  # XML declaration: read as HTML
    ],
)
def test_strip_html(raw, text):
    assert C.strip_html(raw) == text


def test_ordinary_fragments_never_need_beautifulsoup(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("BeautifulSoup is the fallback for fragments lxml refuses")

    monkeypatch.setattr(C, "BeautifulSoup", refuse)
    assert C.strip_html("lead <b>a</b> mid <i>b</i> tail<br>end") == "lead  a  mid  b  tail end"
    assert C.strip_html("<p>un</p><p>deux</p>") == "un deux"


def test_html_text_joins_text_nodes_with_spaces():
    assert C._html_text("<b>a</b><i>b</i>c<script>s</script>") == "a b c"
    assert C._html_text("<html><title>A</title><title>B</title></html>") == "A B"


def test_normalise_whitespace():
    assert C.normalise_whitespace(" a\t\tb\n\u200bc\u2028d\ufeff \x7f e ") == "a b c d e"
    assert C.normalise_whitespace("") == ""


def test_fix_encoding_repairs_mojibake_only():
    assert C.fix_encoding("sÃ©rie") == "série"
    assert C.fix_encoding("caf&eacute; &amp;") == "caf&eacute; &amp;"  # HTML left alone
    assert C.fix_encoding("“cité”") == "“cité”"  # curly quotes kept
    assert C.fix_encoding("a\r\nb") == "a\nb"


def test_clean_text_order_of_steps():
    assert C.clean_text("Ã©t\u00e9 &amp;eacute;") == "été é"
    assert C.clean_text("  Caf\u00c3\u00a9  <b>noir</b>\u200b ") == "Café noir"
    assert C.clean_text("&Atilde;&copy;t&eacute;") == "été"  # mojibake hidden behind entities
    assert C.clean_text("“a” \r\n b") == "“a” b"


@pytest.mark.parametrize(
    "text, max_chars, out",
    [
        ("abcdef", 6, ("abcdef", False)),  # exactly max_chars: kept
        ("abcdefg", 6, ("abcdef", True)),  # no space: hard cut
        ("ab cd ef", 5, ("ab cd", True)),  # last space at or before max_chars
        ("ab cd ef", 6, ("ab cd", True)),
        ("ab  cd", 3, ("ab", True)),  # trailing spaces removed
        (" abcdef", 3, (" ab", True)),  # a space only at position 0: hard cut
        ("ab cdefgh", 4, ("ab", True)),
        ("abcd ef", 3, ("abc", True)),  # the space just after max_chars + 1 is out of reach
        ("a bcdef", 3, ("a", True)),  # a space at position 1 is a valid cut
    ],
)
def test_truncate_words(text, max_chars, out):
    assert C.truncate_words(text, max_chars) == out
