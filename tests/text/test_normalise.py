"""spaCy normalisation switches: lowercase, lemmas, stop words, digits, accents, units."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rakuten.core.errors import PipelineError
from rakuten.text.normalise import NormaliseConfig, Normaliser, stop_words, strip_accents

DEFAULT = NormaliseConfig()


@pytest.fixture(scope="module")
def lookup() -> Normaliser:
    return Normaliser(DEFAULT)


def test_default_normalisation(lookup):
    out = lookup.normalise(["Les Jouets en bois pour les enfants, 25 cm et 3 kg !"])[0]
    assert out == "jouet bois enfant"


def test_lemmas_accents_and_stopwords(lookup):
    out = lookup.normalise(["Des chaises élégantes étaient livrées"])[0].split()
    assert "chaise" in out and "elegant" in out
    assert "des" not in out and "etaient" not in out


def test_units_glued_to_numbers_are_removed(lookup):
    assert lookup.normalise(["Piscine 48cm 300W 2x5m bleu"])[0] == "piscine bleu"


def test_english_and_german_stop_words(lookup):
    out = lookup.normalise(["The doll is for the kids und die Familie"])[0].split()
    assert {"the", "is", "for", "und", "die"}.isdisjoint(out)
    assert "doll" in out


def test_alphanumeric_model_names_survive(lookup):
    assert "ps4" in lookup.normalise(["Manette PS4 sans fil"])[0].split()


def test_empty_and_emoji_only_texts(lookup):
    assert lookup.normalise(["", "😀 🧸 !!!", "12 34"]) == ["", "", ""]


def test_switches_off_keep_words():
    keep = Normaliser(
        replace(
            DEFAULT,
            lowercase=False,
            lemmatizer="none",
            remove_stopwords=False,
            remove_digits=False,
            remove_accents=False,
            remove_units=False,
            min_token_length=1,
        )
    )
    out = keep.normalise(["Les Chaises 25 cm élégantes"])[0].split()
    assert out == ["Les", "Chaises", "25", "cm", "élégantes"]


def test_rule_lemmatizer_uses_the_morphologizer():
    rule = Normaliser(replace(DEFAULT, lemmatizer="rule"))
    assert "rule" and rule.nlp.has_pipe("morphologizer") and "morphologizer" in rule.nlp.pipe_names
    assert rule.normalise(["Les enfants jouaient avec des voitures"])[0].split() == ["enfant", "jouer", "voiture"]


def test_lookup_mode_runs_no_neural_component(lookup):
    assert lookup.nlp.pipe_names == ["lemmatizer"] or "tok2vec" not in lookup.nlp.pipe_names
    assert "parser" not in lookup.nlp.pipe_names and "ner" not in lookup.nlp.pipe_names


def test_strip_accents():
    assert strip_accents("évènement à Noël") == "evenement a Noel"


def test_unknown_stopword_language_is_one_line():
    with pytest.raises(PipelineError, match="stopword_languages contains 'xx'"):
        stop_words(["fr", "xx"])
