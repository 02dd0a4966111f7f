"""Translation: identity backend, chunking, caching, failure handling, missing weights."""

from __future__ import annotations

import random

import pytest

from rakuten.core.errors import PipelineError
from rakuten.text.translation import (
    ChunkedTranslator,
    IdentityTranslator,
    TranslationCache,
    make_translator,
    split_chunks,
    translate_rows,
)

MODELS = {"en": "Helsinki-NLP/opus-mt-en-fr", "de": "Helsinki-NLP/opus-mt-de-fr"}


def test_backend_none_is_identity():
    texts = ["Doll for kids", "Puppe", "Poupée", ""]
    out, flags, failed = translate_rows(texts, ["en", "de", "fr", "und"], IdentityTranslator())
    assert out == texts and not flags.any() and failed == 0


def _words(text: str) -> list[str]:
    return text.split()


@pytest.mark.parametrize("seed", range(5))
def test_chunks_round_trip_and_never_split_words(seed):
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdéèxyz") for _ in range(rng.randint(1, 15))) for _ in range(3000)]
    seps = [rng.choice([" ", " ", "  ", ". ", "\n", "! "]) for _ in words]
    text = "".join(w + s for w, s in zip(words, seps))
    for limit in (20, 137, 4900):
        chunks = split_chunks(text, limit)
        assert "".join(chunks) == text
        assert sum(map(len, chunks)) == len(text)
        assert all(len(c) <= limit for c in chunks)  # no word here is longer than the limit
        assert [w for c in chunks for w in _words(c)] == _words(text)  # no word cut in two


def test_chunks_prefer_sentence_ends():
    text = "Première phrase assez longue. Deuxième phrase assez longue aussi. Troisième."
    chunks = split_chunks(text, 50)  # a sentence end in the second half of the window wins
    assert chunks[0] == "Première phrase assez longue. "


def test_a_word_longer_than_the_limit_stays_whole():
    text = "court " + "x" * 50 + " fin"
    chunks = split_chunks(text, 10)
    assert "".join(chunks) == text and any("x" * 50 in c for c in chunks)


def test_short_and_empty_texts():
    assert split_chunks("", 10) == [""]
    assert split_chunks("abc", 10) == ["abc"]
    with pytest.raises(ValueError):
        split_chunks("abc", 0)


class FakeModel:
    """Upper-cases its input and counts what it was asked to translate."""

    def __init__(self, fail_on: str | None = None):
        self.seen: list[str] = []
        self.fail_on = fail_on

    def __call__(self, batch: list[str], lang: str) -> list[str]:
        if self.fail_on and any(self.fail_on in c for c in batch):
            raise RuntimeError("model exploded")
        self.seen.extend(batch)
        return [f"[{lang}]{c.upper()}" for c in batch]


def test_chunked_translation_caches_by_text_hash(tmp_path):
    model = FakeModel()
    translator = ChunkedTranslator(model, MODELS, TranslationCache(tmp_path), chunk_chars=12, batch_size=2)
    texts = ["hello world. good day", "guten Tag", "hello world. good day"]
    out, flags, failed = translate_rows(texts, ["en", "de", "en"], translator)
    assert out == ["[en]HELLO WORLD. [en]GOOD DAY", "[de]GUTEN TAG", "[en]HELLO WORLD. [en]GOOD DAY"]
    assert flags.tolist() == [True, True, True] and failed == 0
    assert sorted(model.seen) == ["good day", "guten Tag", "hello world."]  # each distinct chunk once
    # a rerun (new translator, same cache directory) translates nothing
    again = FakeModel()
    rerun = ChunkedTranslator(again, MODELS, TranslationCache(tmp_path), chunk_chars=12, batch_size=2)
    assert translate_rows(texts, ["en", "de", "en"], rerun)[0] == out
    assert again.seen == []


def test_failed_translation_keeps_the_original(tmp_path):
    translator = ChunkedTranslator(FakeModel(fail_on="boom"), MODELS, TranslationCache(tmp_path), batch_size=1)
    out, flags, failed = translate_rows(["boom here", "fine"], ["en", "en"], translator)
    assert out == ["boom here", "[en]FINE"]
    assert flags.tolist() == [False, True] and failed == 1 and translator.failures == 1


def test_only_languages_with_a_model_are_translated(tmp_path):
    translator = ChunkedTranslator(FakeModel(), {"en": "m"}, None)
    out, flags, _ = translate_rows(["bonjour", "hello", "hallo"], ["fr", "en", "de"], translator)
    assert out == ["bonjour", "[en]HELLO", "hallo"] and flags.tolist() == [False, True, False]


def test_marian_without_weights_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError) as info:
        make_translator("marian", MODELS, tmp_path / "cache", 1000, 8)
    message = str(info.value)
    assert "\n" not in message
    assert "Helsinki-NLP/opus-mt-" in message and "download" in message and "models/pretrained" in message


def test_unknown_backend_names_the_key():
    with pytest.raises(PipelineError, match="text_clean.translation.backend"):
        make_translator("google", MODELS, "cache", 1000, 8)


@pytest.fixture(scope="module")
def tiny_marian_dir(tmp_path_factory):
    """A randomly initialised, tiny MarianMT saved like an opus-mt checkpoint (no download needed)."""
    import json

    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    root = tmp_path_factory.mktemp("marian")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(["hello world this is a doll for kids", "guten tag die puppe"] * 50))
    for name in ("source", "target"):
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(root / name), vocab_size=24, model_type="unigram", minloglevel=2
        )
        (root / f"{name}.model").rename(root / f"{name}.spm")
    pieces = [line.split("\t")[0] for line in (root / "source.vocab").read_text(encoding="utf-8").splitlines()]
    vocab = {p: i for i, p in enumerate(dict.fromkeys(["</s>", "<unk>", "<pad>", *pieces]))}
    (root / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = MarianTokenizer(str(root / "source.spm"), str(root / "target.spm"), str(root / "vocab.json"))
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["</s>"],
        decoder_start_token_id=vocab["<pad>"],
    )
    out = root / "opus-mt-tiny"
    torch.manual_seed(0)
    MarianMTModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_marian_backend_runs_the_real_model_path_and_caches(tiny_marian_dir, tmp_path):
    translator = make_translator("marian", {"en": str(tiny_marian_dir)}, tmp_path / "cache", 20, 4)
    texts = ["hello world. this is a doll for kids", "bonjour", "a doll"]
    out, flags, failed = translate_rows(texts, ["en", "fr", "en"], translator)
    assert flags.tolist() == [True, False, True] and failed == 0
    assert out[1] == "bonjour" and all(isinstance(t, str) for t in out)

    # a rerun with the same cache never calls the model again (here: a model that would fail)
    def broken(batch, lang):
        raise AssertionError("the cache should have answered")

    rerun = ChunkedTranslator(broken, {"en": str(tiny_marian_dir)}, TranslationCache(tmp_path / "cache"), 20, 4)
    assert translate_rows(texts, ["en", "fr", "en"], rerun)[0] == out
