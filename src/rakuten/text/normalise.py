"""spaCy French normalisation of the cleaned text for TF-IDF (the ``text_norm`` column).

Each switch mirrors a step of the study: lowercase, lemmas, stop words, numbers, accents and units
removed. Speed is the design constraint (85k rows in well under 2 minutes on 2 cores):

* ``lemmatizer: lookup`` (default) runs the tokenizer only and maps each lowercased word through
  the lemma table that ships inside ``fr_core_news_sm`` (216k forms): no neural component at all.
* ``lemmatizer: rule`` is spaCy's own French pipeline (tok2vec + morphologizer + attribute_ruler +
  rule lemmatizer), POS-aware but ~10x slower (measured in docs/text.md).
* ``lemmatizer: none`` keeps the lowercased word forms.

Parser and NER are never run. Stop words come from spaCy's lists for ``stopword_languages``
(French plus English and German by default, because translation is off by default and ~18% of
rows are in those languages).
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
import string
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Sequence

from tqdm import tqdm

from rakuten.core.config import knob
from rakuten.core.errors import PipelineError

log = logging.getLogger(__name__)

#: a number, optionally a product of numbers (``2x5``), optionally glued to a unit (``48cm``, ``300W``)
_QUANTITY = re.compile(r"\d+(?:[.,]\d+)?(?:[x×*]\d+(?:[.,]\d+)?)*(?P<unit>[^\W\d_]*)")
_EDGE_PUNCT = string.punctuation + "«»…‘’“”•·–—"
SPACY_MODEL = "fr_core_news_sm"
LEMMATIZERS = ("lookup", "rule", "none")
#: measurement units and their usual abbreviations in the catalog (lowercase, accents removed)
UNITS = frozenset(
    """
mm cm dm m km mètre metre mètres metres centimètre centimetre centimètres centimetres millimètre millimetre
millimètres millimetres g kg mg gr gramme grammes kilo kilos kilogramme kilogrammes
ml cl dl l litre litres liter liters oz lb lbs inch inches pouce pouces ft feet
w kw watt watts v volt volts mah ah a hz khz mhz ghz db
go mo ko to gb mb kb tb gbps mbps
pcs pc pce pces pièce pièces piece pieces lot x
""".split()
)


@dataclass(frozen=True)
class NormaliseConfig:
    """``text_clean.normalise``: the switches of the ``text_norm`` column (punctuation is always removed)."""

    lowercase: bool = knob(True, "lowercase every token")
    lemmatizer: str = knob(
        "lookup", "lookup (fast table) | rule (spaCy morphologizer, ~10x slower) | none", choices=LEMMATIZERS
    )
    remove_stopwords: bool = knob(True, "drop spaCy's stop words of stopword_languages")
    stopword_languages: tuple[str, ...] = knob(("fr", "en", "de"), "languages whose stop words are dropped")
    remove_digits: bool = knob(True, "tokens without letters (numbers, sizes)")
    remove_accents: bool = knob(True, "strip accents after lemmatisation")
    remove_units: bool = knob(True, "measurement units and quantities glued to them (48cm, 300W)")
    min_token_length: int = knob(2, "shorter tokens are dropped", lo=1, hi=20)
    batch_size: int = knob(512, "texts per spaCy batch", lo=1, runtime=True)
    n_jobs: int = knob(1, "spaCy worker processes (the same rows whatever the count)", lo=1, hi=64, runtime=True)


def strip_accents(text: str) -> str:
    """``"évènement"`` -> ``"evenement"`` (NFKD, combining marks dropped)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def stop_words(languages: Iterable[str]) -> frozenset[str]:
    """spaCy's stop-word lists for ``languages`` (no model needed), lowercase, with and without accents."""
    words: set[str] = set()
    for lang in languages:
        try:
            module = importlib.import_module(f"spacy.lang.{lang}.stop_words")
        except ImportError:
            raise PipelineError(
                f"params.yaml: text_clean.normalise.stopword_languages contains {lang!r}, "
                "expected a language spaCy has stop words for (e.g. fr, en, de)"
            ) from None
        words |= {w.lower() for w in module.STOP_WORDS}
    return frozenset(words | {strip_accents(w) for w in words})


@functools.lru_cache(maxsize=3)
def load_spacy(lemmatizer: str):
    """``fr_core_news_sm`` with only the components ``lemmatizer`` needs enabled (loaded once per
    process and mode: the pipeline is only read, and loading takes seconds)."""
    import spacy

    try:
        if lemmatizer == "rule":
            return spacy.load(SPACY_MODEL, disable=["parser", "ner"])
        nlp = spacy.load(SPACY_MODEL, disable=["tok2vec", "morphologizer", "parser", "attribute_ruler", "ner"])
    except OSError:
        raise PipelineError(
            f"spaCy model {SPACY_MODEL} is not installed; run `pip install {SPACY_MODEL}` "
            "(it is a pyproject dependency)"
        ) from None
    return nlp


def _case_like(lemma: str, original: str, lowercase: bool) -> str:
    """``lemma`` with the case of ``original`` when ``lowercase`` is off (the lemma tables are all
    lowercase, so ``Chaises`` must give ``Chaise``, ``LEGO`` ``LEGO``), else unchanged."""
    if lowercase or not lemma:
        return lemma
    if len(original) > 1 and original.isupper():
        return lemma.upper()
    if original[:1].isupper():
        return lemma[:1].upper() + lemma[1:]
    return lemma


class Normaliser:
    """Turns cleaned texts into space-joined normalised tokens (built once, reused for every batch)."""

    def __init__(self, config: NormaliseConfig):
        self.config = config
        self.nlp = load_spacy(config.lemmatizer)
        # the lookup table ships inside the (disabled) rule lemmatizer of fr_core_news_sm
        self._table = (
            self.nlp.get_pipe("lemmatizer").lookups.get_table("lemma_lookup") if config.lemmatizer == "lookup" else None
        )
        self._stop = stop_words(config.stopword_languages) if config.remove_stopwords else frozenset()

    def _lemma(self, token) -> str:
        cfg = self.config
        if cfg.lemmatizer == "rule":
            return _case_like(token.lemma_ or token.text, token.text, cfg.lowercase)
        word = token.text.lower() if cfg.lowercase else token.text
        if self._table is not None:
            lemma = self._table.get(word.lower())
            if lemma:
                return _case_like(lemma[0] if isinstance(lemma, list) else lemma, token.text, cfg.lowercase)
        return word

    def _keep(self, token) -> bool:
        cfg = self.config
        if token.is_space:
            return False
        if token.is_punct or not any(ch.isalnum() for ch in token.text):
            return False
        if cfg.remove_digits and not any(ch.isalpha() for ch in token.text):
            return False
        if cfg.remove_digits or cfg.remove_units:
            quantity = _QUANTITY.fullmatch(token.text)
            if quantity and (quantity["unit"].lower() in UNITS if quantity["unit"] else cfg.remove_digits):
                return False  # "48cm", "300W", "2x5": sizes and quantities, not product words
        return True

    def _finish(self, word: str) -> str | None:
        cfg = self.config
        word = word.strip(_EDGE_PUNCT)
        if cfg.lowercase:
            word = word.lower()
        if cfg.remove_accents:
            word = strip_accents(word)
        if cfg.remove_units and word.lower() in UNITS:
            return None
        if cfg.remove_stopwords and word.lower() in self._stop:
            return None
        if len(word) < cfg.min_token_length:
            return None
        return word

    def normalise_doc(self, doc) -> str:
        words = []
        for token in doc:
            if not self._keep(token):
                continue
            word = self._finish(self._lemma(token))
            if word:
                words.append(word)
        return " ".join(words)

    def normalise(self, texts: Sequence[str]) -> list[str]:
        """Normalised text for each input text, in order."""
        cfg = self.config
        docs = self.nlp.pipe(texts, batch_size=cfg.batch_size, n_process=cfg.n_jobs)
        return [
            self.normalise_doc(doc)
            for doc in tqdm(docs, total=len(texts), desc="spaCy", unit="row", mininterval=5, disable=len(texts) < 2000)
        ]
