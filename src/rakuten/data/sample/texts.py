"""Product titles and HTML descriptions, drawn from a row's own ``random.Random``.

Titles mix class words (a sibling's for "hard" rows), family words, brands, colours, sizes and units;
descriptions are 2-5 template sentences in one of four HTML styles, some with entities. Python's
generator, not numpy's: ~10x cheaper per call for these scalar draws.
"""

from __future__ import annotations

import random

from rakuten.data.sample import vocabulary as V
from rakuten.data.sample.labels import family_of, sibling


def _pick(rng: random.Random, words: list[str], k: int) -> list[str]:
    return rng.sample(words, min(k, len(words)))


def text_rng(seed: int, row: int) -> random.Random:
    """The row's text generator: seeded by ``(seed, row)`` only (rows < 2**32)."""
    return random.Random((seed << 32) | row)


def make_title(code: int, lang: str, hard: bool, rng: random.Random) -> str:
    """A product title: class words (or a sibling's when ``hard``), family words, brand, colour, size."""
    if lang in V.OTHER_LANGUAGE_TITLES:
        idx = V.OTHER_LANGUAGE_CLASSES[lang].index(code)
        return V.OTHER_LANGUAGE_TITLES[lang][idx]
    source = sibling(code, rng) if hard else code
    words = _pick(rng, V.CLASS_WORDS[source][lang], rng.randrange(1, 3))
    if hard and rng.random() < 0.5:
        words += _pick(rng, V.CLASS_WORDS[code][lang], 1)
    for family in family_of(code):
        if rng.random() < 0.6:
            words += _pick(rng, family[lang], 1)
    glue = V.TITLE_GLUE[lang]
    parts: list[str] = []
    rng.shuffle(words)
    for i, w in enumerate(words):
        if i and rng.random() < 0.7:
            parts.append(rng.choice(glue))
        parts.append(w)
    if rng.random() < 0.4:
        parts.insert(0, rng.choice(V.BRANDS))
    if rng.random() < 0.3:
        parts.append(rng.choice(V.COLOURS[lang]))
    if rng.random() < 0.4:
        parts.append(f"{rng.randrange(1, 250)} {rng.choice(V.UNITS)}")
    if lang != "fr" and rng.random() < 0.8:  # titles long enough to carry their language
        parts += [rng.choice(glue), rng.choice(glue)]
    title = " ".join(parts)
    return title[0].upper() + title[1:]


def make_description(code: int, lang: str, hard: bool, rng: random.Random) -> str:
    """An HTML description of 2-5 template sentences; entities for some accents and apostrophes."""
    if lang in V.OTHER_LANGUAGE_TITLES:
        lang_sentences = V.OTHER_LANGUAGE_TITLES[lang]
        body = [str(s) + "." for s in _pick(rng, lang_sentences, 2)]
    else:
        source = sibling(code, rng) if hard and rng.random() < 0.7 else code
        words = V.CLASS_WORDS[source][lang] + V.CLASS_WORDS[code][lang][:2]
        body = []
        for template in _pick(rng, V.DESCRIPTION_SENTENCES[lang], rng.randrange(2, 6)):
            w1, w2 = _pick(rng, words, 2)
            body.append(
                template.format(
                    w1=w1, w2=w2, n=rng.randrange(2, 300), u=rng.choice(V.UNITS), c=rng.choice(V.COLOURS[lang])
                )
            )
    style = rng.randrange(0, 4)
    if style == 0:
        html = "<p>" + " ".join(body) + "</p>"
    elif style == 1:
        html = "<br />".join(body)
    elif style == 2:
        html = "<b>" + body[0] + "</b><ul>" + "".join(f"<li>{s}</li>" for s in body[1:]) + "</ul>"
    else:
        html = " ".join(body)
    if rng.random() < 0.5:
        for char, entity in V.HTML_ENTITIES.items():
            if char != "&":
                html = html.replace(char, entity)
    if rng.random() < 0.1:
        html += " &nbsp;&amp; plus"
    return html


def mojibake(text: str) -> str:
    """UTF-8 bytes mis-read as Latin-1 ("é" -> "Ã©"), the real catalog's encoding damage."""
    return text.encode("utf-8").decode("latin-1")
