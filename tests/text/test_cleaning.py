"""Light cleaning: HTML and entities, missing descriptions, mojibake, huge and emoji texts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rakuten.text.cleaning import clean_text, concat_fields, is_missing, strip_html, truncate_words


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("<p>Jouet <b>en bois</b></p>", "Jouet en bois"),
        ("ligne 1<br />ligne 2<br>ligne 3", "ligne 1 ligne 2 ligne 3"),
        ("Caf&eacute; &amp; th&eacute;&nbsp;bio", "Café & thé bio"),
        ("&lt;p&gt;escaped &lt;b&gt;twice&lt;/b&gt;&lt;/p&gt;", "escaped twice"),
        ("<ul><li>un</li><li>deux</li></ul>", "un deux"),
        ("<div class='x' style='color:red'>attr</div><script>var a = 1;</script><style>p {}</style>", "attr"),
        ("unclosed <b>bold <i>italic", "unclosed bold italic"),
        ("5 &lt; 6 et 7 &gt; 3", "5 < 6 et 7 > 3"),
        ("prix&nbsp;: 10&euro;", "prix : 10€"),
        ("l&#39;ours &#x27;brun&#x27;", "l'ours 'brun'"),
        ("a <!-- hidden --> b", "a b"),
        ("<html><head><title>t</title></head><body><p>corps</p></body></html>", "corps"),
        ("</p><b>", ""),
    ],
)
def test_html_and_entities(raw, expected):
    assert clean_text(raw) == expected


def test_block_tags_never_glue_words():
    assert clean_text("<p>alpha</p><p>beta</p>") == "alpha beta"


@pytest.mark.parametrize("description", [None, float("nan"), pd.NA, "", "   ", np.nan])
def test_missing_description_is_normal(description):
    assert is_missing(description)
    assert concat_fields("Stylo bleu", description) == "Stylo bleu"
    assert clean_text(concat_fields("Stylo bleu", description)) == "Stylo bleu"


def test_designation_and_description_are_joined_with_a_separator():
    assert clean_text(concat_fields("Titre", "<p>description</p>")) == "Titre description"


def test_mojibake_is_repaired():
    broken = "Bestway série complète les albums".encode("utf-8").decode("latin-1")
    assert broken != "Bestway série complète les albums"
    assert clean_text(broken) == "Bestway série complète les albums"


def test_mojibake_hidden_behind_entities_is_repaired():
    assert clean_text("<p>cr&Atilde;&uml;me glac&Atilde;&copy;e</p>") == "crème glacée"


def test_correct_accents_are_left_alone():
    text = "Élégant chapeau à la française, ça coûte 5 €"
    assert clean_text(text) == text


def test_unicode_is_nfc_and_controls_removed():
    decomposed = "cafe\u0301\u200b\x00 tasse\t\n\r verte"
    assert clean_text(decomposed) == "café tasse verte"


def test_emoji_are_kept_in_the_light_text():
    assert clean_text("Peluche 🧸 <b>douce</b> 😀!") == "Peluche 🧸 douce 😀!"


def test_one_megabyte_text_is_cleaned_and_truncated_at_a_word():
    words = "<p>description très longue &amp; répétée</p> " * 25000
    assert len(words) > 1_000_000
    cleaned = clean_text(words)
    assert cleaned.startswith("description très longue & répétée description")
    cut, was_cut = truncate_words(cleaned, 10000)
    assert was_cut and len(cut) <= 10000
    assert cleaned.startswith(cut) and cleaned[len(cut)] == " "


def test_truncate_keeps_short_text():
    assert truncate_words("court", 100) == ("court", False)


def test_strip_html_leaves_plain_text_untouched():
    text = "AT&T 3 < 4 sans balise"
    assert strip_html(text) == text


def test_is_missing_on_values():
    assert not is_missing("x")
    assert is_missing(math.nan)
