"""Every knob a user relies on has a test that shows its effect, or an explicit exemption with a reason.

A test declares the knobs whose effect it shows with ``@pytest.mark.param_effect("section.key", ...)``:
it runs the real code with the knob at two values (or checks that the knob's value reaches the
output) and asserts the outcome differs in the documented way. The meta-tests below scan every
``tests/*.py`` for those markers (an AST scan: fast, and independent of which tests a run selects)
and fail on any leaf knob of :data:`tests.core.test_params_schema.DECLARATIONS` that is neither covered
nor in :data:`EXEMPT`, and on any marker naming something that is not a knob.

The effect tests of this file run the library functions on tiny constructed inputs (no DVC, no
stage subprocess), so the whole file takes seconds.
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from rakuten.core.config import _union_args, iter_knobs
from tests.core.test_params_schema import DECLARATIONS

TESTS = Path(__file__).resolve().parents[1]
MARKER = "param_effect"

#: leaf knobs without an effect test, each with the reason why none is needed
EXEMPT: dict[str, str] = {
    # the service's limits (section serve, read by `rakuten serve`, by no stage): each is exercised against the
    # running app in tests/serving (test_serve.py, test_serve_load.py, test_http_guards_mutants.py) and their
    # declarations by tests/serving/test_serve_limits.py
    **{
        f"serve.{name}": "service limit: tests/serving"
        for name in (
            "max_image_mb",
            "max_image_pixels",
            "max_text_chars",
            "max_batch_rows",
            "max_batch_mb",
            "chunk_rows",
            "max_pending",
            "max_connections",
            "header_timeout_s",
            "body_timeout_s",
            "keep_alive_s",
            "log_every_s",
            "max_batch_size",
            "max_batch_delay_ms",
        )
    },
    # speed knobs: same results by design, shown by the tests named
    "sample.n_jobs": "worker processes: same bytes with 1 or 2 (test_data_sample::test_other_seed_and_worker_count)",
    "text_clean.n_jobs": "runtime knob (processes): same rows whatever the count (light_clean keeps input order)",
    "text_clean.normalise.batch_size": "runtime knob: spaCy batch size, speed only",
    "text_clean.normalise.n_jobs": "runtime knob: spaCy processes, speed only",
    "tfidf_svm.n_jobs": "parallel jobs of calibration folds / RF / SGD: speed only (seeded estimators)",
    "fusion.n_jobs": "XGBoost threads: speed only at 1 (the documented value); more changes bits, not quality",
    "image_hash.n_jobs": "worker processes: identical table with 1 or 2 "
    "(test_image_hashing::test_hash_catalog_on_the_tiny_sample)",
    "image_clean.n_jobs": "runtime knob: identical outputs with 1 or 2 "
    "(test_image_pipeline::test_same_result_in_process_and_in_parallel)",
    "label_audit.n_jobs": "runtime knob (processes): same out-of-fold bits in-process and in 2 workers "
    "(test_label_audit::test_folds_fitted_in_worker_processes_give_the_in_process_bits, "
    "test_image_features_tell_products_apart_and_mark_missing_images)",
    "fusion.workers": "runtime knob (processes): same fits bit for bit in-process and in 2 workers "
    "(test_fusion_mutants::test_fit_fusion_in_worker_processes_gives_the_in_process_bits)",
    "embed.workers": "runtime knob (processes): the stage's bytes from 2 workers sharing chunks "
    "(test_joint::test_embedding_in_worker_processes_gives_the_stages_table)",
    "fasttext.threads": "speed only, and reproducible only at 1 (test_models_fasttext::"
    "test_single_thread_training_is_deterministic); Hogwild results are not comparable",
    "camembert.num_threads": "torch CPU threads: speed only; numerics pinned by rakuten.core.numerics "
    "(test_determinism)",
    "resnet50.num_threads": "torch CPU threads: speed only; numerics pinned by rakuten.core.numerics "
    "(test_determinism)",
    "joint.num_threads": "torch CPU threads: speed only; numerics pinned by rakuten.core.numerics (set_threads, as "
    "camembert / resnet50)",
}


# ----------------------------------------------------------------------------------- the meta-tests


def leaf_knobs() -> dict[str, type]:
    """Dotted name -> declaration class of every leaf knob (nested sections are not leaves)."""
    out = {}
    for section, cls in DECLARATIONS.items():
        for name, tp, _ in iter_knobs(cls, section + "."):
            if not any(dataclasses.is_dataclass(a) for a in (_union_args(tp) or (tp,))):
                out[name] = cls
    return out


def _is_marker_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Attribute) and func.attr == MARKER) or (
        isinstance(func, ast.Name) and func.id == MARKER
    )


def declared_effects(folder: Path = TESTS) -> tuple[dict[str, list[str]], list[str]]:
    """``(knob -> tests declaring it, problems)`` from every ``param_effect(...)`` call in ``folder/*.py``.

    The marker's arguments must be string literals, so that this scan sees exactly what pytest sees.
    """
    covered: dict[str, list[str]] = {}
    problems: list[str] = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] + [tree]:
            nodes = (
                func.decorator_list
                if func is not tree
                else [
                    n.value
                    for n in tree.body
                    if isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)
                ]
            )
            where = f"{path.name}::{getattr(func, 'name', '<module>')}"
            for deco in nodes:
                for call in (c for c in ast.walk(deco) if _is_marker_call(c)):
                    if not call.args or call.keywords:
                        problems.append(f"{where}: param_effect needs one or more knob names and no keywords")
                    for arg in call.args:
                        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                            covered.setdefault(arg.value, []).append(where)
                        else:
                            problems.append(
                                f"{where}: param_effect argument {ast.unparse(arg)} is not a string literal"
                            )
        # markers elsewhere (pytest.param(..., marks=...)) are not collected by the scan above
        in_decorators = {
            id(c)
            for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for d in f.decorator_list
            for c in ast.walk(d)
        }
        in_pytestmark = {
            id(c)
            for n in tree.body
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)
            for c in ast.walk(n.value)
        }
        for call in (c for c in ast.walk(tree) if _is_marker_call(c)):
            if id(call) not in in_decorators | in_pytestmark:
                problems.append(f"{path.name} line {call.lineno}: param_effect used outside a decorator or pytestmark")
    return covered, problems


def test_every_knob_has_an_effect_test_or_an_exemption():
    covered, problems = declared_effects()
    assert not problems, "\n".join(problems)
    missing = sorted(set(leaf_knobs()) - set(covered) - set(EXEMPT))
    assert not missing, (
        f"{len(missing)} knob(s) without a @pytest.mark.param_effect test or an EXEMPT reason "
        "in tests/integration/test_param_effects.py:\n" + "\n".join(missing)
    )


def test_param_effect_markers_and_exemptions_name_real_knobs():
    covered, _ = declared_effects()
    knobs = leaf_knobs()
    typos = {k: v for k, v in covered.items() if k not in knobs}
    assert not typos, "param_effect names that are not leaf knobs: " + "; ".join(
        f"{k} (in {', '.join(v)})" for k, v in sorted(typos.items())
    )
    assert not sorted(set(EXEMPT) - set(knobs)), "EXEMPT keys that are not leaf knobs"
    both = sorted(set(EXEMPT) & set(covered))
    assert not both, f"exempt but covered (drop the exemption): {both}"
    assert all(reason.strip() for reason in EXEMPT.values())


def test_the_scan_sees_decorators_pytestmark_and_rejects_non_literals(tmp_path):
    (tmp_path / "test_a.py").write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.param_effect('split.seed')\n"
        "@pytest.mark.param_effect('split.val', 'split.test')\n"
        "def test_x():\n    pass\n"
        "KEY = 'x'\n"
        "@pytest.mark.param_effect(KEY)\n"
        "def test_y():\n    pass\n"
    )
    covered, problems = declared_effects(tmp_path)
    assert covered == {
        "split.seed": ["test_a.py::<module>"],
        "split.val": ["test_a.py::test_x"],
        "split.test": ["test_a.py::test_x"],
    }
    assert problems == ["test_a.py::test_y: param_effect argument KEY is not a string literal"]


def test_the_marker_is_registered():
    pyproject = (TESTS.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"{MARKER}(' in pyproject


# ========================================================================================= data, split


@pytest.mark.param_effect("data.source", "data.raw_dir")
def test_data_source_and_raw_dir_choose_the_catalog_directory():
    from rakuten.data.source import SAMPLE_DIR, DataConfig

    assert DataConfig(source="sample", raw_dir="/data/rakuten").root == SAMPLE_DIR  # raw_dir unused for sample
    assert DataConfig(source="raw", raw_dir="/data/rakuten").root == "/data/rakuten"
    assert DataConfig(source="raw", raw_dir="elsewhere").root == "elsewhere"


@pytest.mark.param_effect("sample.n_train", "sample.n_test")
def test_sample_sizes_set_the_row_counts():
    from rakuten.data.sample.config import SampleConfig
    from rakuten.data.sample.tables import generate_tables

    small, big = SampleConfig(n_train=60, n_test=5, n_jobs=1), SampleConfig(n_train=90, n_test=12, n_jobs=1)
    for cfg in (small, big):
        x, labels, *_ = generate_tables(cfg)
        assert len(x) == len(labels) == cfg.n_train + cfg.n_test


@pytest.mark.param_effect("sample.image_size")
def test_sample_image_size_sets_the_side_of_the_pictures(tmp_path):
    from rakuten.data.sample.config import SampleConfig
    from rakuten.data.sample.generate import write_sample

    for size in (32, 48):
        out = tmp_path / str(size)
        write_sample(SampleConfig(n_train=54, n_test=0, image_size=size, seed=1, n_jobs=1), out)
        sides = {cv2.imread(str(p)).shape[:2] for p in list((out / "images" / "image_train").glob("*.jpg"))[:10]}
        assert all(max(s) == size for s in sides), (size, sides)


def _labelled_rows(n_per_class: int = 20, n_classes: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A catalog of distinct texts (no duplicate groups) and its image_hash table (no image groups)."""
    from rakuten.contracts.classes import CLASS_CODES

    codes = np.repeat(CLASS_CODES[:n_classes], n_per_class)
    n = len(codes)
    catalog = pd.DataFrame(
        {
            "row_id": np.arange(n),
            "designation": [f"produit {i}" for i in range(n)],
            "description": [None] * n,
            "image_path": [""] * n,
            "image_ok": True,
            "prdtypecode": codes,
            "is_official_test": False,
        }
    )
    groups = pd.DataFrame({"row_id": np.arange(n), "exact_dup_group": -1, "near_dup_group": -1})
    return catalog, groups


@pytest.mark.param_effect("split.train", "split.val", "split.test")
def test_split_fractions_set_the_shares():
    from rakuten.data.split import SplitConfig, split_catalog

    catalog, groups = _labelled_rows()
    shares = {}
    for cfg in (SplitConfig(train=0.8, val=0.1, test=0.1), SplitConfig(train=0.5, val=0.3, test=0.2)):
        table, _ = split_catalog(catalog, cfg.fractions, cfg.seed, image_groups=groups)
        shares[cfg] = table["split"].value_counts(normalize=True)
        for name in ("train", "val", "test"):
            assert shares[cfg][name] == pytest.approx(getattr(cfg, name), abs=0.03), (cfg, name)


# ========================================================================================= text_clean


def _text_config(**changes):
    from rakuten.text.text_clean import LanguageConfig, TextCleanConfig

    language = LanguageConfig(**{k[len("language.") :]: v for k, v in changes.items() if k.startswith("language.")})
    rest = {k: v for k, v in changes.items() if not k.startswith("language.")}
    return TextCleanConfig(n_jobs=1, language=language, **rest)


def _light(texts: list[str], **changes):
    from rakuten.text.text_clean import light_clean

    return light_clean(texts, [None] * len(texts), _text_config(**changes))


@pytest.mark.param_effect("text_clean.max_chars")
def test_max_chars_cuts_long_texts():
    text = " ".join(["mot"] * 200)  # 799 characters
    long_texts, _, _, counts = _light([text], max_chars=10000)
    short_texts, _, _, cut = _light([text], max_chars=100)
    assert long_texts == [text] and counts["truncated"] == 0
    assert len(short_texts[0]) <= 100 and text.startswith(short_texts[0]) and cut["truncated"] == 1


@pytest.mark.param_effect("text_clean.language.candidates")
def test_language_candidates_restrict_the_detected_languages():
    english = "The wooden doll for the kids"
    assert _light([english], **{"language.candidates": ("fr", "en")})[1].tolist() == ["en"]
    assert _light([english], **{"language.candidates": ("fr", "de")})[1].tolist() == ["de"]
    # [] = all 97 languages: a short French title wanders off to Portuguese
    assert _light(["Lego bande dessinée"], **{"language.candidates": (), "language.min_confidence": 0.0})[
        1
    ].tolist() == ["pt"]


@pytest.mark.param_effect("text_clean.language.min_confidence", "text_clean.language.fallback")
def test_low_confidence_texts_get_the_fallback_language():
    english = ["The wooden doll for the kids"]
    assert _light(english, **{"language.min_confidence": 0.0})[1].tolist() == ["en"]
    assert _light(english, **{"language.min_confidence": 1.0, "language.fallback": "fr"})[1].tolist() == ["fr"]
    assert _light(english, **{"language.min_confidence": 1.0, "language.fallback": "de"})[1].tolist() == ["de"]
    assert _light(english, **{"language.min_confidence": 1.0})[3]["language_fallback"] == 1


class _FakeMarian:
    """Stands in for the MarianMT batch function: tags its input, records every call."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, batch, lang):
        self.calls.append(list(batch))
        return [f"<{lang}>{c}" for c in batch]


@pytest.fixture
def fake_marian(tmp_path, monkeypatch):
    """make_translator's real marian path (weights resolution, chunking, cache), with a fake model."""
    from rakuten.text import translation

    fake = _FakeMarian()
    monkeypatch.setattr(translation, "marian_batch_fn", lambda dirs: fake)
    model_dir = tmp_path / "opus-mt-fake"
    model_dir.mkdir()
    for name in ("config.json", "source.spm", "target.spm"):
        (model_dir / name).write_text("{}")
    return fake, str(model_dir)


def _translate(texts, langs, backend, models, cache_dir, chunk_chars=1000, batch_size=16):
    from rakuten.text.translation import make_translator, translate_rows

    return translate_rows(texts, langs, make_translator(backend, models, cache_dir, chunk_chars, batch_size))


@pytest.mark.param_effect("text_clean.translation.backend", "text_clean.translation.models")
def test_translation_backend_and_models_choose_what_is_translated(fake_marian, tmp_path):
    fake, model_dir = fake_marian
    texts, langs = ["hello doll", "hallo Puppe", "bonjour"], ["en", "de", "fr"]
    out, flags, _ = _translate(texts, langs, "none", {"en": model_dir}, tmp_path / "c0")
    assert out == texts and not flags.any() and fake.calls == []
    out, flags, _ = _translate(texts, langs, "marian", {"en": model_dir}, tmp_path / "c1")
    assert out == ["<en>hello doll", "hallo Puppe", "bonjour"] and flags.tolist() == [True, False, False]
    out, flags, _ = _translate(texts, langs, "marian", {"de": model_dir}, tmp_path / "c2")
    assert out == ["hello doll", "<de>hallo Puppe", "bonjour"] and flags.tolist() == [False, True, False]


@pytest.mark.param_effect(
    "text_clean.translation.chunk_chars", "text_clean.translation.batch_size", "text_clean.translation.cache_dir"
)
def test_translation_chunks_batches_and_cache_folder(fake_marian, tmp_path):
    fake, model_dir = fake_marian
    varied = " ".join(f"Phrase numero {i} assez longue." for i in range(8))  # 239 characters
    _translate([varied], ["en"], "marian", {"en": model_dir}, tmp_path / "a", chunk_chars=1000, batch_size=16)
    assert fake.calls == [[varied]]  # one chunk, one batch
    fake.calls.clear()
    _translate([varied], ["en"], "marian", {"en": model_dir}, tmp_path / "c", chunk_chars=60, batch_size=16)
    chunks = fake.calls[0]
    assert len(chunks) > 1 and all(len(c) <= 60 for c in chunks)
    fake.calls.clear()
    _translate([varied], ["en"], "marian", {"en": model_dir}, tmp_path / "d", chunk_chars=60, batch_size=2)
    assert [len(call) for call in fake.calls] == [2] * (len(chunks) // 2) + [1] * (len(chunks) % 2)
    # the cache lives in cache_dir: another folder translates again, the same folder does not
    assert (tmp_path / "d" / "translations.sqlite").is_file() and not (tmp_path / "e").exists()
    fake.calls.clear()
    _translate([varied], ["en"], "marian", {"en": model_dir}, tmp_path / "d", chunk_chars=60, batch_size=2)
    assert fake.calls == []
    _translate([varied], ["en"], "marian", {"en": model_dir}, tmp_path / "e", chunk_chars=60, batch_size=2)
    assert fake.calls and (tmp_path / "e" / "translations.sqlite").is_file()


SENTENCE = "Les Chaises élégantes The doll 25 cm 48cm Lego PS4 a ab abc"


def _normalise(**changes) -> list[str]:
    from rakuten.text.normalise import NormaliseConfig, Normaliser

    return Normaliser(replace(NormaliseConfig(), **changes)).normalise([SENTENCE])[0].split()


@pytest.fixture(scope="module")
def default_tokens() -> list[str]:
    return _normalise()


@pytest.mark.param_effect("text_clean.normalise.lowercase")
def test_lowercase_false_keeps_capitals(default_tokens):
    assert "Lego" not in default_tokens and "lego" in default_tokens and "ps4" in default_tokens
    kept = _normalise(lowercase=False)
    assert "Lego" in kept and "PS4" in kept


def test_lowercase_false_keeps_capitals_of_lemmatised_words():
    """The lemma tables are lowercase: the lemma takes the case of the word it replaces."""
    kept = _normalise(lowercase=False)
    assert "Chaise" in kept and "chaise" not in kept


@pytest.mark.param_effect("text_clean.normalise.lemmatizer")
def test_lemmatizer_none_keeps_word_forms(default_tokens):
    assert "chaise" in default_tokens and "elegant" in default_tokens
    forms = _normalise(lemmatizer="none")
    assert "chaises" in forms and "elegantes" in forms and "chaise" not in forms


@pytest.mark.param_effect("text_clean.normalise.remove_stopwords", "text_clean.normalise.stopword_languages")
def test_stop_words_of_the_listed_languages_are_dropped(default_tokens):
    assert "le" not in default_tokens and "the" not in default_tokens
    kept = _normalise(remove_stopwords=False)
    assert "le" in kept and "the" in kept
    french_only = _normalise(stopword_languages=("fr",))
    assert "the" in french_only and "le" not in french_only


@pytest.mark.param_effect("text_clean.normalise.remove_digits")
def test_remove_digits_false_keeps_numbers(default_tokens):
    assert "25" not in default_tokens
    assert "25" in _normalise(remove_digits=False)


@pytest.mark.param_effect("text_clean.normalise.remove_accents")
def test_remove_accents_false_keeps_accents(default_tokens):
    assert "elegant" in default_tokens
    kept = _normalise(remove_accents=False)
    assert "élégant" in kept and "elegant" not in kept


@pytest.mark.param_effect("text_clean.normalise.remove_units")
def test_remove_units_false_keeps_units(default_tokens):
    assert "cm" not in default_tokens
    assert _normalise(remove_units=False).count("cm") == 2


@pytest.mark.param_effect("text_clean.normalise.min_token_length")
def test_min_token_length_drops_short_tokens(default_tokens):
    assert "abc" in default_tokens
    longer = _normalise(min_token_length=4)
    assert "abc" not in longer and "doll" in longer and all(len(t) >= 4 for t in longer)


# ========================================================================================= tfidf_svm

_WORDS = {
    0: "piscine gonflable bleue jardin pompe bache",
    1: "poupee peluche jouet enfant ours doudou",
    2: "livre roman bande dessinee tome auteur",
}


def _text_frame(counts=(12, 12, 12), seed: int = 0, own: int = 3) -> pd.DataFrame:
    """Short product texts of 3 classes (``own`` words of the class + shared noise words); text_light is
    capitalised and starts with a word of every row."""
    from rakuten.contracts.classes import CLASS_CODES

    rng = np.random.default_rng(seed)
    rows = []
    for k, n in enumerate(counts):
        words = _WORDS[k].split()
        for _ in range(n):
            noise = ["lot", "neuf", "qualite", "prix", "promo", "offre", "stock", "vente", "marque"]
            picked = list(rng.choice(words, own, replace=False)) + list(rng.choice(noise, 4 - own, replace=False))
            rows.append(
                {
                    "prdtypecode": CLASS_CODES[k],
                    "text_norm": " ".join(picked),
                    "text_light": "Produit " + " ".join(w.upper() for w in picked),
                }
            )
    return pd.DataFrame(rows)


def _tfidf(frame=None, **changes):
    from rakuten.models import tfidf_svm

    cfg = replace(tfidf_svm.TfidfSvmConfig(n_jobs=1), **changes)
    return tfidf_svm.train(_text_frame() if frame is None else frame, None, cfg)


def _vocabulary(model) -> set[str]:
    return set(model.pipeline.named_steps["tfidf"].get_feature_names_out())


@pytest.mark.param_effect("tfidf_svm.ngram_min", "tfidf_svm.ngram_max")
def test_tfidf_ngram_range_sets_the_vocabulary():
    unigrams = _vocabulary(_tfidf(ngram_min=1, ngram_max=1))
    both = _vocabulary(_tfidf(ngram_min=1, ngram_max=2))
    bigrams = _vocabulary(_tfidf(ngram_min=2, ngram_max=2))
    assert all(" " not in t for t in unigrams)
    assert unigrams < both and any(" " in t for t in both)
    assert bigrams and all(len(t.split()) == 2 for t in bigrams)


@pytest.mark.param_effect("tfidf_svm.text_column")
def test_tfidf_text_column_chooses_the_input():
    assert "produit" not in _vocabulary(_tfidf(text_column="text_norm", max_df=1.0))
    assert "produit" in _vocabulary(_tfidf(text_column="text_light", max_df=1.0))


@pytest.mark.param_effect("tfidf_svm.max_features", "tfidf_svm.min_df", "tfidf_svm.max_df")
def test_tfidf_vocabulary_limits():
    full = _vocabulary(_tfidf(ngram_max=1, max_df=1.0))
    assert len(_vocabulary(_tfidf(ngram_max=1, max_df=1.0, max_features=5))) == 5 < len(full)
    frame = _text_frame()
    frame.loc[0, "text_norm"] += " rarissime"
    assert "rarissime" in _vocabulary(_tfidf(frame, ngram_max=1, min_df=1))
    assert "rarissime" not in _vocabulary(_tfidf(frame, ngram_max=1, min_df=2))
    frame["text_norm"] += " partout"  # in every document
    assert "partout" in _vocabulary(_tfidf(frame, ngram_max=1, max_df=1.0))
    assert "partout" not in _vocabulary(_tfidf(frame, ngram_max=1, max_df=0.85))


@pytest.mark.param_effect("tfidf_svm.sublinear_tf")
def test_tfidf_sublinear_tf_damps_repeated_terms():
    frame = _text_frame()
    frame.loc[0, "text_norm"] = "piscine piscine piscine piscine bleue"
    weights = {}
    for sublinear in (False, True):
        tfidf = _tfidf(frame, ngram_max=1, sublinear_tf=sublinear).pipeline.named_steps["tfidf"]
        row = tfidf.transform([frame.loc[0, "text_norm"]]).toarray()[0]
        vocab = list(tfidf.get_feature_names_out())
        weights[sublinear] = row[vocab.index("piscine")] / row[vocab.index("bleue")]
    assert weights[True] < weights[False]  # 1 + log(4) instead of 4 (idf ratio aside)


@pytest.mark.param_effect("tfidf_svm.classifier", "tfidf_svm.rf.n_estimators", "tfidf_svm.rf.max_depth")
def test_tfidf_classifier_and_forest_shape():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    kinds = {
        "svm": CalibratedClassifierCV,
        "rf": RandomForestClassifier,
        "sgd": SGDClassifier,
        "logreg": LogisticRegression,
    }
    for name, kind in kinds.items():
        assert isinstance(_tfidf(classifier=name).pipeline.named_steps["clf"], kind)
    from rakuten.models.tfidf_svm import RandomForestConfig

    forest = _tfidf(classifier="rf", rf=RandomForestConfig(n_estimators=7, max_depth=0)).pipeline.named_steps["clf"]
    stumps = _tfidf(classifier="rf", rf=RandomForestConfig(n_estimators=3, max_depth=1)).pipeline.named_steps["clf"]
    assert len(forest.estimators_) == 7 and len(stumps.estimators_) == 3
    assert max(t.get_depth() for t in forest.estimators_) > 1 == max(t.get_depth() for t in stumps.estimators_)


@pytest.mark.param_effect("tfidf_svm.sgd.alpha")
def test_tfidf_sgd_alpha_shrinks_the_weights():
    from rakuten.models.tfidf_svm import SgdConfig

    norms = [
        np.linalg.norm(_tfidf(classifier="sgd", sgd=SgdConfig(alpha=a)).pipeline.named_steps["clf"].coef_)
        for a in (0.0001, 0.1)
    ]
    assert norms[1] < norms[0] / 2


def _proba(model, frame=None):
    from rakuten.models import tfidf_svm

    return tfidf_svm.predict_proba(model, _text_frame(seed=1) if frame is None else frame)


@pytest.mark.param_effect("tfidf_svm.class_weight")
def test_tfidf_balanced_class_weight_favours_the_rare_class():
    frame = _text_frame(counts=(30, 30, 4))
    rare = frame["prdtypecode"].iloc[-1]
    from rakuten.contracts.classes import CLASS_CODES

    col = CLASS_CODES.index(int(rare))
    p = {
        w: _proba(_tfidf(frame, classifier="logreg", C=0.5, class_weight=w))[:, col].mean()
        for w in ("none", "balanced")
    }
    assert p["balanced"] > p["none"]


@pytest.mark.param_effect("tfidf_svm.max_iter")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_tfidf_max_iter_caps_the_solver():
    capped = _tfidf(classifier="logreg", max_iter=1).pipeline.named_steps["clf"]
    free = _tfidf(classifier="logreg", max_iter=500).pipeline.named_steps["clf"]
    assert capped.n_iter_.max() == 1 < free.n_iter_.max()


@pytest.mark.param_effect("tfidf_svm.calibration", "tfidf_svm.calibration_cv")
def test_tfidf_svm_calibration_method_and_folds():
    sigmoid = _tfidf(calibration="sigmoid", calibration_cv=3)
    isotonic = _tfidf(calibration="isotonic", calibration_cv=3)
    assert not np.allclose(_proba(sigmoid), _proba(isotonic))
    assert len(sigmoid.pipeline.named_steps["clf"].calibrated_classifiers_) == 3
    assert len(_tfidf(calibration_cv=2).pipeline.named_steps["clf"].calibrated_classifiers_) == 2


def _resampled_counts(model, frame) -> dict[int, int]:
    """Class counts after the pipeline's resampling steps (what the classifier is fitted on)."""
    x = model.pipeline.named_steps["tfidf"].transform(frame["text_norm"].tolist())
    y = frame["prdtypecode"].to_numpy()
    for _name, step in model.pipeline.steps[1:-1]:
        x, y = step.fit_resample(x, y)
    return dict(zip(*np.unique(y, return_counts=True)))


@pytest.mark.param_effect("tfidf_svm.resample", "tfidf_svm.smote_k")
def test_tfidf_resampling_rebalances_the_training_rows():
    frame = _text_frame(counts=(30, 12, 6))
    counts = {
        r: sorted(_resampled_counts(_tfidf(frame, classifier="logreg", resample=r), frame).values())
        for r in ("none", "smote", "smote_under")
    }
    assert counts["none"] == [6, 12, 30]
    assert counts["smote"] == [30, 30, 30]  # every class raised to the majority
    assert counts["smote_under"] == [12, 12, 12]  # down to the median above it, SMOTE up to it below
    ks = [
        _tfidf(frame, classifier="logreg", resample="smote", smote_k=k).pipeline.named_steps["smote"].k_neighbors
        for k in (1, 3)
    ]
    assert ks == [1, 3]
    synthetic = [_tfidf(frame, classifier="logreg", resample="smote", smote_k=k) for k in (1, 3)]
    assert not np.allclose(_proba(synthetic[0]), _proba(synthetic[1]))


@pytest.mark.param_effect("tfidf_svm.grid_cv")
def test_tfidf_grid_cv_sets_the_folds_of_the_grid_search():
    frame = _text_frame(counts=(12, 12, 12), own=1)  # one class word in four: folds score differently
    scores = [_tfidf(frame, classifier="logreg", grid={"C": (0.1, 10.0)}, grid_cv=k).grid_results for k in (2, 4)]
    assert [r["C"] for r in scores[0]] == [r["C"] for r in scores[1]] == [0.1, 10.0]
    assert [r["cv_weighted_f1"] for r in scores[0]] != [r["cv_weighted_f1"] for r in scores[1]]


@pytest.mark.param_effect("tfidf_svm.top_terms")
def test_tfidf_top_terms_sets_the_terms_per_class():
    from rakuten.models import tfidf_svm

    for k in (2, 4):
        table = tfidf_svm.top_terms(_tfidf(top_terms=k))
        assert table.groupby("prdtypecode").size().tolist() == [k] * 3


@pytest.mark.param_effect("tfidf_svm.seed")
def test_tfidf_seed_changes_the_calibration_folds():
    same = [_proba(_tfidf(seed=s)) for s in (1, 1, 2)]
    assert np.array_equal(same[0], same[1]) and not np.allclose(same[0], same[2])


# ========================================================================================= fasttext


def _fasttext(frame=None, **changes):
    from rakuten.models import fasttext

    cfg = replace(fasttext.FastTextConfig(), **{"epoch": 5, "dim": 10, "bucket": 1000, **changes})
    return fasttext.train(_text_frame() if frame is None else frame, None, cfg)


def _ft_proba(model):
    from rakuten.models import fasttext

    return fasttext.predict_proba(model, _text_frame(seed=1))


@pytest.mark.param_effect("fasttext.text_column", "fasttext.lowercase")
def test_fasttext_input_column_and_case():
    words = set(_fasttext(text_column="text_norm").model.words)
    assert "piscine" in words and "produit" not in words
    assert "produit" in set(_fasttext(text_column="text_light").model.words)
    assert "PISCINE" in set(_fasttext(text_column="text_light", lowercase=False).model.words)
    assert "PISCINE" not in set(_fasttext(text_column="text_light", lowercase=True).model.words)


@pytest.mark.param_effect(
    "fasttext.dim", "fasttext.min_count", "fasttext.minn", "fasttext.maxn", "fasttext.bucket", "fasttext.word_ngrams"
)
def test_fasttext_model_shape_knobs():
    assert _fasttext(dim=10).model.get_dimension() == 10 and _fasttext(dim=24).model.get_dimension() == 24
    frame = _text_frame()
    frame.loc[0, "text_norm"] += " rarissime"
    assert "rarissime" in _fasttext(frame, min_count=1).model.words
    assert "rarissime" not in _fasttext(frame, min_count=2).model.words
    assert len(_fasttext(minn=0, maxn=0).model.get_subwords("piscine")[0]) == 1  # the word alone
    assert len(_fasttext(minn=3, maxn=4).model.get_subwords("piscine")[0]) > 1  # + character n-grams
    rows = {b: _fasttext(bucket=b, word_ngrams=2).model.get_input_matrix().shape[0] for b in (1000, 3000)}
    assert rows[3000] - rows[1000] == 2000  # one input row per hashed bucket
    unigram = _fasttext(bucket=3000, word_ngrams=1)
    assert unigram.model.get_input_matrix().shape[0] == len(unigram.model.words)  # no n-gram buckets
    assert not np.allclose(_ft_proba(unigram), _ft_proba(_fasttext(bucket=3000, word_ngrams=2)))


@pytest.mark.param_effect("fasttext.lr", "fasttext.epoch")
def test_fasttext_more_learning_is_more_confident():
    confidence = {
        (lr, ep): _ft_proba(_fasttext(lr=lr, epoch=ep)).max(axis=1).mean()
        for lr, ep in ((0.05, 5), (0.5, 5), (0.05, 40))
    }
    assert confidence[(0.5, 5)] > confidence[(0.05, 5)] and confidence[(0.05, 40)] > confidence[(0.05, 5)]


@pytest.mark.param_effect("fasttext.loss")
def test_fasttext_one_vs_all_scores_are_independent():
    text = _text_frame(seed=1)["text_norm"].iloc[0] + "\n"
    sums = {}
    for loss in ("softmax", "ova", "hs"):
        model = _fasttext(loss=loss, epoch=20)
        sums[loss] = sum(p for p, _ in model.model.f.predict(text, -1, 0.0, "strict"))
    assert sums["softmax"] == pytest.approx(1.0, abs=1e-4) and sums["ova"] != pytest.approx(1.0, abs=1e-3)
    assert _fasttext(loss="hs").model.f.getArgs().loss != _fasttext(loss="softmax").model.f.getArgs().loss


@pytest.mark.param_effect("fasttext.seed")
def test_fasttext_seed_changes_the_model():
    runs = [_ft_proba(_fasttext(seed=s)) for s in (1, 1, 2)]
    assert np.array_equal(runs[0], runs[1]) and not np.allclose(runs[0], runs[2])


# ========================================================================================= fusion


def _fusion_config(**changes):
    from tests.helpers.fusion_fakes import small_config

    return small_config(["tfidf_svm", "resnet50"], **changes)


@pytest.fixture(scope="module")
def val_probs():
    """Validation probabilities of two models that each know half of the classes, and the true classes."""
    from tests.helpers.fusion_fakes import FIRST_HALF, SECOND_HALF, model_proba

    y = np.repeat(np.arange(27), 6)
    return [model_proba(y, FIRST_HALF, seed=1), model_proba(y, SECOND_HALF, strength=2.0, seed=2)], y


def _fitted(cfg, name, probs, y):
    from rakuten.fusion.selection import strategy_factories

    return strategy_factories(cfg)[name]().fit(probs, y)


@pytest.mark.param_effect("fusion.models", "fusion.weights")
def test_soft_vote_weights_follow_the_models_and_their_weights(val_probs):
    from rakuten.fusion.config import FusionConfig

    probs, y = val_probs
    five = FusionConfig()
    two = replace(five, models=("tfidf_svm", "resnet50"))
    assert _fitted(five, "soft_vote", [*probs * 2, probs[0]], y).weights_.tolist() == pytest.approx(
        [0.15, 0.15, 0.15, 0.25, 0.3]
    )
    assert _fitted(two, "soft_vote", probs, y).weights_.tolist() == pytest.approx([0.375, 0.625])  # renormalised
    first = replace(two, weights={**two.weights, "tfidf_svm": 1.0, "resnet50": 0.0})
    second = replace(two, weights={**two.weights, "tfidf_svm": 0.0, "resnet50": 1.0})
    assert np.array_equal(_fitted(first, "soft_vote", probs, y).predict_proba(probs), probs[0])
    assert np.array_equal(_fitted(second, "soft_vote", probs, y).predict_proba(probs), probs[1])


@pytest.mark.param_effect("fusion.strategy")
def test_fusion_strategy_auto_chooses_and_a_forced_one_is_kept():
    from rakuten.fusion import fusion
    from rakuten.fusion.meta import XgboostMeta
    from rakuten.fusion.strategies import MaxRule
    from tests.helpers.fusion_fakes import FIRST_HALF, SECOND_HALF, make_tables

    tables, _ = make_tables({"tfidf_svm": FIRST_HALF, "resnet50": SECOND_HALF}, per_class=5)
    cheap = dict(xgboost=XgboostMeta(n_estimators=2, max_depth=2, learning_rate=0.3, subsample=1.0))
    auto = fusion.fuse_tables(tables, ["text", "image"], _fusion_config(strategy="auto", **cheap))
    forced = fusion.fuse_tables(tables, ["text", "image"], _fusion_config(strategy="max_rule", **cheap))
    scores = auto.comparison.set_index("strategy")["val_cv_weighted_f1"]
    assert auto.model.strategy == scores.idxmax() != "max_rule"
    assert forced.model.strategy == "max_rule" and isinstance(forced.model.combiner, MaxRule)
    assert forced.comparison.set_index("strategy")["chosen"]["max_rule"]


@pytest.mark.param_effect("fusion.weight_step")
def test_fitted_soft_vote_searches_weights_on_the_step_grid(val_probs):
    from tests.helpers.fusion_fakes import ALL, model_proba

    _, y = val_probs
    probs = [model_proba(y, ALL, strength=2.0, seed=1), model_proba(y, ALL, strength=1.0, seed=2)]
    coarse = _fitted(_fusion_config(weight_step=0.5), "soft_vote_fit", probs, y).weights_
    fine = _fitted(_fusion_config(weight_step=0.05), "soft_vote_fit", probs, y).weights_
    assert coarse.tolist() == [1.0, 0.0]  # the better model alone: 0.5 steps cannot express more
    assert fine.tolist() == pytest.approx([0.85, 0.15])  # some of the weaker model helps


@pytest.mark.param_effect("fusion.voting_stacking_meta")
def test_voting_stacking_meta_learner(val_probs):
    probs, y = val_probs
    for kind in ("logreg", "linear_svm", "xgboost"):
        fitted = _fitted(_fusion_config(voting_stacking_meta=kind), "voting_stacking", probs, y)
        assert fitted.meta.kind == kind and fitted.meta.estimator_ is not None


@pytest.mark.param_effect("fusion.cv_folds", "fusion.seed")
def test_fusion_cv_folds_and_seed_set_the_validation_folds(val_probs):
    from rakuten.fusion.selection import cv_splits

    _, y = val_probs
    folds = {
        (k, s): cv_splits(y, None, _fusion_config(cv_folds=k, seed=s).cv_folds, _fusion_config(cv_folds=k, seed=s).seed)
        for k, s in ((3, 0), (5, 0), (3, 1))
    }
    assert len(folds[(3, 0)]) == 3 and len(folds[(5, 0)]) == 5
    assert not np.array_equal(folds[(3, 0)][0][1], folds[(3, 1)][0][1])


@pytest.mark.param_effect("fusion.logreg.C", "fusion.logreg.max_iter", "fusion.linear_svm.C")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_linear_meta_learners_regularisation(val_probs):
    from rakuten.fusion.meta import LinearSvmMeta, LogregMeta

    probs, y = val_probs

    def out(name, **changes):
        return _fitted(_fusion_config(**changes), name, probs, y).predict_proba(probs)

    strong, weak = (out("stacking_logreg", logreg=LogregMeta(C=c, max_iter=500)) for c in (0.01, 100.0))
    assert strong.max(axis=1).mean() < weak.max(axis=1).mean()  # stronger regularisation: less confident
    short = _fitted(_fusion_config(logreg=LogregMeta(C=1.0, max_iter=2)), "stacking_logreg", probs, y)
    assert short.meta.estimator_.n_iter_.max() == 2
    svm_strong, svm_weak = (out("stacking_linear_svm", linear_svm=LinearSvmMeta(C=c)) for c in (0.001, 10.0))
    assert not np.allclose(svm_strong, svm_weak)


@pytest.mark.param_effect(
    "fusion.xgboost.n_estimators",
    "fusion.xgboost.max_depth",
    "fusion.xgboost.learning_rate",
    "fusion.xgboost.subsample",
)
def test_xgboost_meta_learner_params(val_probs):
    from rakuten.fusion.meta import XgboostMeta

    probs, y = val_probs
    base = XgboostMeta(n_estimators=3, max_depth=2, learning_rate=0.3, subsample=1.0)

    def fit(**changes):
        return _fitted(_fusion_config(xgboost=replace(base, **changes)), "stacking_xgboost", probs, y)

    booster = fit().meta.estimator_.get_booster()
    assert (
        booster.num_boosted_rounds() == 3
        and fit(n_estimators=5).meta.estimator_.get_booster().num_boosted_rounds() == 5
    )
    depth = {
        d: max(
            line.count("\t")
            for tree in fit(max_depth=d).meta.estimator_.get_booster().get_dump()
            for line in tree.splitlines()
        )
        for d in (1, 3)
    }
    assert depth[1] == 1 and depth[3] > 1  # leaves one level below a depth-1 split
    reference = fit().predict_proba(probs)
    assert not np.allclose(fit(learning_rate=0.05).predict_proba(probs), reference)
    assert not np.allclose(fit(subsample=0.5).predict_proba(probs), reference)


# ========================================================================================= image_hash


def _image_file(folder: Path, name: str, image: np.ndarray) -> str:
    path = folder / f"{name}.jpg"
    path.write_bytes(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes())
    return str(path)


@pytest.mark.param_effect("image_hash.min_side", "image_hash.hash_size")
def test_hash_min_side_and_hash_size(tmp_path):
    from rakuten.image.image_hash import HashConfig, hash_image
    from tests.image.test_detectors import scene

    small = _image_file(tmp_path, "small", cv2.resize(scene(64), (24, 24)))
    status, sha1, variants, _ = hash_image(small, HashConfig(min_side=16, query_crops=(0.0,)))
    assert status == "ok" and sha1 and variants.shape == (1, 32)  # 16 x 16 bits
    status, sha1, variants, _ = hash_image(small, HashConfig(min_side=32, query_crops=(0.0,)))
    assert status == "tiny" and variants is None
    assert hash_image(small, HashConfig(hash_size=8, query_crops=(0.0, 0.05)))[2].shape == (2, 8)


@pytest.mark.param_effect("image_hash.radius", "image_hash.query_crops")
def test_hash_radius_and_crops_decide_which_copies_cluster(tmp_path):
    from rakuten.image.image_hash import HashConfig, hash_catalog
    from tests.image.test_detectors import scene

    photo = scene(256, seed=1)
    paths = [
        _image_file(tmp_path, "photo", photo),
        _image_file(tmp_path, "cropped", cv2.resize(photo[8:248, 8:248], (256, 256))),  # 3% cut per side
        _image_file(tmp_path, "other", scene(256, seed=2)),
    ]
    rows = pd.DataFrame({"row_id": [0, 1, 2], "image_path": paths})

    def groups(**changes):
        return hash_catalog(rows, HashConfig(n_jobs=1, **changes))["near_dup_group"].tolist()

    assert groups() == [0, 0, -1]  # defaults: the cropped copy is found
    assert groups(query_crops=(0.0,)) == [-1, -1, -1]  # without crop variants it is too far
    assert groups(radius=4) == [-1, -1, -1]  # a tighter radius misses it too


@pytest.mark.param_effect("image_hash.verify_side", "image_hash.max_colour_difference", "image_hash.linkage")
def test_hash_colour_check_and_linkage_decide_look_alikes(tmp_path):
    from rakuten.image.image_hash import HashConfig, hash_catalog, hash_image
    from tests.image.test_image_hash import _look_alikes

    rows = _look_alikes(tmp_path, n=12)  # per product: the photo, the same design recoloured, a re-encoded copy

    def groups(**changes):
        return hash_catalog(rows, HashConfig(n_jobs=1, **changes))["near_dup_group"].to_numpy()

    checked = groups()
    assert all(checked[3 * k] == checked[3 * k + 2] >= 0 and checked[3 * k + 1] == -1 for k in range(12))
    unchecked = groups(max_colour_difference=255.0)  # grey pHash only: recoloured designs join
    assert (unchecked[1::3] >= 0).any()
    assert (groups(max_colour_difference=1.0)[::3] == -1).sum() > 6  # too strict: copies are missed
    single = groups(max_colour_difference=255.0, linkage="single")
    assert np.bincount(single[single >= 0]).max() == 3
    assert not np.array_equal(single, unchecked)  # single linkage chains what complete keeps apart
    path = rows["image_path"].iloc[0]
    assert hash_image(path, HashConfig(verify_side=8))[3].shape == (5, 8, 8, 3)
    assert hash_image(path, HashConfig())[3].shape == (5, 16, 16, 3)


# ========================================================================================= image_clean


def _clean(source: str, out_dir: Path, **changes) -> tuple[dict, np.ndarray]:
    """``clean_image`` with ``ImageCleanConfig`` changed by dotted keys (``blur.threshold=...``): record, output."""
    from rakuten.core.config import replace_at
    from rakuten.image.config import ImageCleanConfig
    from rakuten.image.process import clean_image

    cfg = ImageCleanConfig(size=96, n_jobs=1)
    for key, value in changes.items():
        cfg = replace_at(cfg, key.replace("__", "."), value)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = clean_image(0, source, str(out_dir), cfg)
    return record, cv2.imread(str(out_dir / "0.jpg"))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, str]:
    """Source JPEGs with one known defect each."""
    from tests.image.test_detectors import scene

    folder = tmp_path_factory.mktemp("pictures")
    clean = scene(128, seed=3)
    red = clean.astype(np.float32)
    red[..., 2] *= 1.3
    bordered = np.full((192, 192, 3), 255, np.uint8)
    bordered[56:136, 56:136] = cv2.resize(clean, (80, 80))
    greyish = bordered.copy()
    greyish[bordered.min(axis=2) == 255] = 243  # a light grey frame: 12 below white
    return {
        "clean": _image_file(folder, "clean", clean),
        "blurry": _image_file(folder, "blurry", cv2.GaussianBlur(clean, (0, 0), 2.0)),
        "red": _image_file(folder, "red", np.clip(red, 0, 255).astype(np.uint8)),
        "bordered": _image_file(folder, "bordered", bordered),
        "greyish": _image_file(folder, "greyish", greyish),
        "tiny": _image_file(folder, "tiny", cv2.resize(clean, (20, 20))),
    }


@pytest.mark.param_effect("image_clean.size", "image_clean.jpeg_quality")
def test_clean_image_size_and_jpeg_quality(pictures, tmp_path):
    assert _clean(pictures["clean"], tmp_path / "a", size=64)[1].shape == (64, 64, 3)
    assert _clean(pictures["clean"], tmp_path / "b", size=96)[1].shape == (96, 96, 3)
    sizes = {
        q: (
            _clean(pictures["clean"], tmp_path / f"q{q}", jpeg_quality=q),
            (tmp_path / f"q{q}" / "0.jpg").stat().st_size,
        )[1]
        for q in (50, 100)
    }
    assert sizes[100] > 1.5 * sizes[50]


@pytest.mark.param_effect("image_clean.min_side")
def test_clean_min_side_makes_small_sources_unusable(pictures, tmp_path):
    record, image = _clean(pictures["tiny"], tmp_path / "a", min_side=16)
    assert record["readable"] and record["decode_status"] == "ok"
    record, image = _clean(pictures["tiny"], tmp_path / "b", min_side=32)
    assert not record["readable"] and record["actions"] == "placeholder:tiny" and abs(int(image.mean()) - 128) <= 1


@pytest.mark.param_effect(
    "image_clean.blur.threshold", "image_clean.blur.sharpen_amount", "image_clean.blur.sharpen_sigma"
)
def test_blur_threshold_flags_and_sharpening_settings(pictures, tmp_path):
    lenient, _ = _clean(pictures["blurry"], tmp_path / "a", blur__threshold=1.0)
    strict, sharpened = _clean(pictures["blurry"], tmp_path / "b", blur__threshold=1000.0)
    assert not lenient["is_blurry"] and "sharpen" not in lenient["actions"]
    assert strict["is_blurry"] and "sharpen" in strict["actions"] and lenient["blur_score"] == strict["blur_score"]
    off, unsharpened = _clean(pictures["blurry"], tmp_path / "c", blur__threshold=1000.0, blur__sharpen_amount=0.0)
    assert off["is_blurry"] and "sharpen" not in off["actions"]
    _, stronger = _clean(pictures["blurry"], tmp_path / "d", blur__threshold=1000.0, blur__sharpen_amount=3.0)
    from rakuten.image.quality import blur_score

    assert blur_score(unsharpened) < blur_score(sharpened) < blur_score(stronger)
    _, wide = _clean(pictures["blurry"], tmp_path / "e", blur__threshold=1000.0, blur__sharpen_sigma=4.0)
    assert not np.array_equal(wide, sharpened) and blur_score(wide) != blur_score(sharpened)


@pytest.mark.param_effect(
    "image_clean.red_cast.threshold", "image_clean.red_cast.method", "image_clean.red_cast.saturation_reduction"
)
def test_red_cast_threshold_method_and_strength(pictures, tmp_path):
    flagged, _ = _clean(pictures["red"], tmp_path / "a", red_cast__threshold=1.15)
    missed, _ = _clean(pictures["red"], tmp_path / "b", red_cast__threshold=1.6)
    assert flagged["is_red_cast"] and flagged["red_ratio_after"] == pytest.approx(1.0, abs=0.05)
    assert not missed["is_red_cast"] and missed["red_ratio_after"] == pytest.approx(missed["red_ratio"], abs=0.03)
    none, _ = _clean(pictures["red"], tmp_path / "c", red_cast__method="none")
    assert none["is_red_cast"] and "red_cast" not in none["actions"] and none["red_ratio_after"] > 1.15
    after = {
        s: _clean(pictures["red"], tmp_path / f"s{s}", red_cast__method="saturation", red_cast__saturation_reduction=s)[
            0
        ]["red_ratio_after"]
        for s in (0.1, 0.6)
    }
    assert 1.0 < after[0.6] < after[0.1]  # more saturation removed: closer to grey


@pytest.mark.param_effect(
    "image_clean.border.background", "image_clean.border.tolerance", "image_clean.border.min_fraction"
)
def test_border_detection_knobs(pictures, tmp_path):
    white, _ = _clean(pictures["bordered"], tmp_path / "a")
    assert white["has_border"] and white["border_fraction"] > 0.7 and "crop_zoom" in white["actions"]
    assert not _clean(pictures["bordered"], tmp_path / "b", border__min_fraction=0.9)[0]["has_border"]
    assert not _clean(pictures["greyish"], tmp_path / "c", border__tolerance=4)[0]["has_border"]
    assert _clean(pictures["greyish"], tmp_path / "d", border__tolerance=16)[0]["has_border"]
    grey = _image_file(tmp_path, "grey", np.where(cv2.imread(pictures["bordered"]) >= 250, 90, 200).astype(np.uint8))
    assert not _clean(grey, tmp_path / "e", border__background="white")[0]["has_border"]
    assert _clean(grey, tmp_path / "f", border__background="uniform")[0]["has_border"]


def _zoom(record: dict) -> float:
    return float(next(a for a in record["actions"].split(";") if a.startswith("crop_zoom:")).split(":")[1])


@pytest.mark.param_effect("image_clean.border.max_zoom", "image_clean.border.margin")
def test_border_crop_zoom_limit_and_margin(pictures, tmp_path):
    zooms = {
        (z, m): _zoom(_clean(pictures["bordered"], tmp_path / f"{z}-{m}", border__max_zoom=z, border__margin=m)[0])
        for z, m in ((0.5, 0.0), (5.0, 0.0), (5.0, 0.2))
    }
    assert zooms[(0.5, 0.0)] == pytest.approx(1.5, abs=0.02)  # capped at 1 + max_zoom
    assert zooms[(5.0, 0.0)] == pytest.approx(192 / 80, abs=0.1)  # the product fills the frame
    assert zooms[(5.0, 0.2)] < zooms[(5.0, 0.0)]  # a margin is kept around it


@pytest.mark.param_effect("image_clean.near_duplicates.cross_class_weight")
def test_cross_class_weight_of_mixed_duplicate_clusters(pictures, tmp_path):
    from rakuten.image.config import ImageCleanConfig, NearDuplicates
    from rakuten.image.image_clean import clean_frame

    rows = pd.DataFrame({"row_id": [0, 1, 2], "image_path": [pictures["clean"]] * 3})
    labels = pd.DataFrame({"row_id": [0, 1, 2], "prdtypecode": [10, 40, 50], "split": "train"})
    hashes = pd.DataFrame(
        {"row_id": [0, 1, 2], "sha1": "x", "phash": "y", "exact_dup_group": 0, "near_dup_group": [0, 0, -1]}
    )
    for weight in (0.5, 0.2):
        cfg = ImageCleanConfig(size=64, n_jobs=1, near_duplicates=NearDuplicates(cross_class_weight=weight))
        table = clean_frame(rows, tmp_path / str(weight), cfg, labels_split=labels, hashes=hashes)
        assert table["sample_weight"].tolist() == [weight, weight, 1.0]


@pytest.mark.param_effect("image_clean.contact_sheet.examples")
def test_contact_sheet_examples_sets_the_lines_per_sheet(pictures, tmp_path):
    from rakuten.image.contact_sheet import contact_sheets

    n = 4
    table = pd.DataFrame(
        {
            "row_id": range(n),
            "clean_path": [pictures["blurry"]] * n,
            "is_blurry": True,
            "blur_score": 5.0,
            "is_red_cast": False,
            "red_ratio": 1.0,
            "has_border": False,
            "border_fraction": 0.0,
            "actions": "sharpen",
            "exact_dup_group": -1,
            "near_dup_group": -1,
            "keep_for_train": True,
            "sample_weight": 1.0,
        }
    )
    heights = {k: contact_sheets(table, [pictures["blurry"]] * n, None, k)["blur"].shape[0] for k in (1, 3)}
    from rakuten.image.contact_sheet import CAPTION, CELL

    assert heights[3] - heights[1] == 2 * (CELL + CAPTION + 4)  # two more lines


# ========================================================================================= camembert


class _Captured(Exception):
    """Raised by a stand-in to stop training once what the test checks has been built."""


def _deep_text_frame(n_per_class: int = 3, n_classes: int = 6) -> pd.DataFrame:
    from rakuten.contracts.classes import CLASS_CODES

    rng = np.random.default_rng(0)
    vocab = [f"mot{i}" for i in range(60)]
    rows = []
    for k in range(n_classes):
        for _ in range(n_per_class):
            words = " ".join(rng.choice(vocab, 30))
            rows.append(
                {
                    "row_id": len(rows),
                    "prdtypecode": CLASS_CODES[k],
                    "text_light": f"Produit {words}",
                    "text_norm": f"norme {words}",
                }
            )
    return pd.DataFrame(rows)


def _camembert_config(profile: str, **changes):
    """A tiny config; profile knobs in ``changes`` go to the selected profile (full: scratch, no weights)."""
    from rakuten.models.camembert import model as C
    from rakuten.models.camembert.config import SCRATCH, ScratchArchitecture

    shared = {k: v for k, v in changes.items() if k in {f.name for f in dataclasses.fields(C.CamembertConfig)}}
    own = {k: v for k, v in changes.items() if k not in shared}
    tiny = ScratchArchitecture(vocab_size=200, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    cfg = C.CamembertConfig(profile=profile, **{"device": "cpu", "num_threads": 1, **shared})
    cfg = cfg.with_active(model=SCRATCH, scratch=tiny, max_length=16, epochs=1, batch_size=8)
    if "scratch" in own:
        own["scratch"] = replace(tiny, **own["scratch"])
    return cfg.with_active(**own)


class _FakeTrainer:
    """Stands in for ``transformers.Trainer``: records its arguments in ``sink`` and stops the run."""

    sink: dict = {}

    def __init__(self, **kwargs):
        _FakeTrainer.sink.update(kwargs)
        raise _Captured


@pytest.fixture
def camembert_trainer(monkeypatch):
    """Runs ``camembert.train`` up to the Hugging Face Trainer and returns what it would have been given."""
    import transformers
    import transformers.trainer

    from rakuten.models.camembert import model as C
    from rakuten.models.camembert import training as camembert_training
    from rakuten.models.camembert.encoder import build_model

    # transformers' lazy module caches a name in its __dict__ on first import: patch both places
    monkeypatch.setattr(transformers.trainer, "Trainer", _FakeTrainer)
    monkeypatch.setitem(vars(transformers), "Trainer", _FakeTrainer)
    real_build = build_model

    def build(cfg_, texts):
        _FakeTrainer.sink["train_texts"] = list(texts)
        return real_build(cfg_, texts)

    monkeypatch.setattr(camembert_training, "build_model", build)

    def run(cfg, frame=None):
        _FakeTrainer.sink = seen = {}
        frame = _deep_text_frame() if frame is None else frame
        with pytest.raises(_Captured):
            C.train(frame, frame.head(6), cfg)
        return seen

    return run


@pytest.mark.param_effect(
    "camembert.profile",
    "camembert.demo.epochs",
    "camembert.demo.batch_size",
    "camembert.demo.learning_rate",
    "camembert.demo.weight_decay",
    "camembert.demo.warmup_ratio",
    "camembert.full.epochs",
    "camembert.full.batch_size",
    "camembert.full.learning_rate",
    "camembert.full.weight_decay",
    "camembert.full.warmup_ratio",
    "camembert.logging_steps",
    "camembert.eval_batch_size",
    "camembert.strongest.epochs",
    "camembert.strongest.batch_size",
    "camembert.strongest.learning_rate",
    "camembert.strongest.weight_decay",
    "camembert.strongest.warmup_ratio",
)
@pytest.mark.parametrize("profile", ["demo", "full", "strongest"])
def test_profile_selects_which_profile_the_model_reads(camembert_trainer, profile):
    from rakuten.models.camembert.trainer_setup import warmup_steps

    other = "full" if profile == "demo" else "demo"
    for values in (
        {
            "epochs": 2,
            "batch_size": 4,
            "learning_rate": 0.01,
            "weight_decay": 0.0,
            "warmup_ratio": 0.5,
            "logging_steps": 3,
            "eval_batch_size": 5,
        },
        {
            "epochs": 3,
            "batch_size": 6,
            "learning_rate": 0.001,
            "weight_decay": 0.1,
            "warmup_ratio": 0.0,
            "logging_steps": 7,
            "eval_batch_size": 9,
        },
    ):
        cfg = _camembert_config(profile, **values)
        # the other profile's values must not leak in
        cfg = replace(cfg, **{other: replace(getattr(cfg, other), epochs=50, batch_size=50, learning_rate=0.5)})
        args = camembert_trainer(cfg)["args"]
        assert (args.num_train_epochs, args.per_device_train_batch_size) == (values["epochs"], values["batch_size"])
        assert (args.learning_rate, args.weight_decay) == (values["learning_rate"], values["weight_decay"])
        assert args.warmup_steps == warmup_steps(18, values["batch_size"], values["epochs"], values["warmup_ratio"])
        assert (args.logging_steps, args.per_device_eval_batch_size) == (
            values["logging_steps"],
            values["eval_batch_size"],
        )
    assert warmup_steps(18, 4, 2, 0.5) > 0 == warmup_steps(18, 6, 3, 0.0)


@pytest.mark.param_effect(
    "camembert.demo.max_length",
    "camembert.full.max_length",
    "camembert.demo.max_train_rows",
    "camembert.full.max_train_rows",
    "camembert.seed",
    "camembert.text_column",
    "camembert.strongest.max_length",
    "camembert.strongest.max_train_rows",
)
@pytest.mark.parametrize("profile", ["demo", "full", "strongest"])
def test_camembert_inputs_rows_and_length(camembert_trainer, profile):
    seen = {n: camembert_trainer(_camembert_config(profile, max_length=n)) for n in (12, 24)}
    for n, got in seen.items():
        lengths = [len(ids) for ids in got["train_dataset"].encodings["input_ids"]]
        assert max(lengths) == n  # the 30-word texts are truncated at max_length tokens
        assert got["model"].config.max_position_embeddings == n + 2
    subsets = {
        (rows, seed): camembert_trainer(_camembert_config(profile, max_train_rows=rows, seed=seed))
        for rows, seed in ((0, 0), (12, 0), (12, 1))
    }
    assert len(subsets[(0, 0)]["train_dataset"]) == 18 and len(subsets[(12, 0)]["train_dataset"]) == 12
    assert subsets[(12, 0)]["train_texts"] != subsets[(12, 1)]["train_texts"]  # the seed draws the subset
    light = camembert_trainer(_camembert_config(profile, text_column="text_light"))["train_texts"]
    norm = camembert_trainer(_camembert_config(profile, text_column="text_norm"))["train_texts"]
    assert all(t.startswith("Produit ") for t in light) and all(t.startswith("norme ") for t in norm)


@pytest.mark.param_effect(
    "camembert.demo.scratch.vocab_size",
    "camembert.demo.scratch.hidden_size",
    "camembert.demo.scratch.num_layers",
    "camembert.demo.scratch.num_heads",
    "camembert.demo.scratch.intermediate_size",
    "camembert.full.scratch.vocab_size",
    "camembert.full.scratch.hidden_size",
    "camembert.full.scratch.num_layers",
    "camembert.full.scratch.num_heads",
    "camembert.full.scratch.intermediate_size",
    "camembert.strongest.scratch.vocab_size",
    "camembert.strongest.scratch.hidden_size",
    "camembert.strongest.scratch.num_layers",
    "camembert.strongest.scratch.num_heads",
    "camembert.strongest.scratch.intermediate_size",
)
@pytest.mark.parametrize("profile", ["demo", "full", "strongest"])
def test_scratch_architecture(camembert_trainer, profile):
    for arch in (
        {"vocab_size": 60, "hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32},
        {"vocab_size": 90, "hidden_size": 24, "num_layers": 2, "num_heads": 3, "intermediate_size": 48},
    ):
        seen = camembert_trainer(_camembert_config(profile, scratch=arch))
        c = seen["model"].config
        assert len(seen["processing_class"]) == arch["vocab_size"] == c.vocab_size
        assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (
            arch["hidden_size"],
            arch["num_layers"],
            arch["num_heads"],
            arch["intermediate_size"],
        )


@pytest.mark.param_effect("camembert.class_weighting")
def test_camembert_class_weighting_weights_the_loss(camembert_trainer):
    assert camembert_trainer(_camembert_config("demo", class_weighting="none"))["compute_loss_func"] is None
    frame = _deep_text_frame()
    frame = pd.concat([frame, frame[frame["prdtypecode"] == frame["prdtypecode"].iloc[0]]] * 2, ignore_index=True)
    loss = camembert_trainer(_camembert_config("demo", class_weighting="balanced"), frame)["compute_loss_func"]
    import torch

    logits = torch.zeros((2, 27))
    logits[:, 0] = 2.0
    labels = torch.tensor([0, 1])  # the frequent class, then a rarer one
    unweighted = torch.nn.functional.cross_entropy(logits, labels)
    assert float(loss({"logits": logits}, labels)) > float(unweighted)  # the rare class's error counts more


@pytest.mark.param_effect(
    "camembert.demo.model",
    "camembert.demo.local_dir",
    "camembert.full.model",
    "camembert.full.local_dir",
    "camembert.strongest.model",
    "camembert.strongest.local_dir",
)
@pytest.mark.parametrize("profile", ["demo", "full", "strongest"])
def test_camembert_model_and_local_dir_choose_the_weights(profile, tmp_path):
    from rakuten.models.camembert import model as C
    from rakuten.models.camembert.config import SCRATCH

    local = tmp_path / "weights"
    local.mkdir()
    (local / "config.json").write_text("{}")
    base = C.CamembertConfig(profile=profile)
    assert C.resolve_weights(base.with_active(model=SCRATCH, local_dir=str(local))) is None
    assert C.resolve_weights(base.with_active(model="org/some-model", local_dir=str(local))) == str(local)
    assert C.resolve_weights(base.with_active(model=str(local), local_dir="")) == str(local)


def _runtime_error(train, cfg, frame) -> str | None:
    from rakuten.core.errors import PipelineError

    try:
        train(frame, frame, cfg)
    except PipelineError as exc:
        return str(exc)
    except _Captured:
        return None
    return None


@pytest.mark.param_effect("camembert.device", "camembert.precision")
def test_camembert_device_and_precision(camembert_trainer, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the CPU-only refusals below need a machine without CUDA")
    assert camembert_trainer(_camembert_config("demo", device="cpu", precision="fp32"))["args"].use_cpu
    from rakuten.models.camembert import model as C

    frame = _deep_text_frame()
    assert "no CUDA GPU" in _runtime_error(C.train, _camembert_config("demo", device="cuda"), frame)
    assert "needs a CUDA GPU" in _runtime_error(C.train, _camembert_config("demo", precision="bf16"), frame)


@pytest.mark.param_effect(
    "camembert.demo.scratch.model_type", "camembert.full.scratch.model_type", "camembert.strongest.scratch.model_type"
)
@pytest.mark.parametrize("profile", ["demo", "full", "strongest"])
def test_scratch_model_type_picks_the_encoder_family(camembert_trainer, profile):
    built = {
        family: type(camembert_trainer(_camembert_config(profile, scratch={"model_type": family}))["model"])
        for family in ("camembert", "xlm-roberta", "flaubert", "deberta-v2")
    }
    assert [cls.__name__ for cls in built.values()] == [
        "CamembertForSequenceClassification",
        "XLMRobertaForSequenceClassification",
        "FlaubertForSequenceClassification",
        "DebertaV2ForSequenceClassification",
    ]


@pytest.mark.param_effect(
    "camembert.demo.group_by_length",
    "camembert.full.group_by_length",
    "camembert.strongest.group_by_length",
    "camembert.compile",
)
@pytest.mark.parametrize("profile", ["demo", "full", "strongest"])
def test_length_grouping_and_compile_reach_the_trainer(camembert_trainer, profile):
    plain = camembert_trainer(_camembert_config(profile, group_by_length=False))["args"]
    grouped = camembert_trainer(_camembert_config(profile, group_by_length=True, compile=True))["args"]

    def length_grouped(args) -> bool:  # transformers 5: train_sampling_strategy; 4.x: group_by_length
        return (
            getattr(args, "train_sampling_strategy", None) == "group_by_length"
            or getattr(args, "group_by_length", False) is True
        )

    assert not length_grouped(plain) and not plain.torch_compile
    assert length_grouped(grouped) and grouped.torch_compile


@pytest.mark.param_effect(
    "camembert.lora.r", "camembert.lora.alpha", "camembert.lora.dropout", "camembert.lora.target_modules"
)
def test_lora_settings_shape_the_adapters(camembert_trainer):

    def adapters(**lora):
        cfg = _camembert_config("demo")
        model = camembert_trainer(replace(cfg, lora=replace(cfg.lora, **lora)))["model"]
        return model, {n: p for n, p in model.named_parameters() if "lora_" in n}

    full, none = adapters(r=0)
    assert not none and all(p.requires_grad for p in full.parameters())
    model, lora = adapters(r=4, alpha=8.0, dropout=0.2)
    assert lora and all(p.shape[0] == 4 or p.shape[1] == 4 for p in lora.values())
    layer = next(m for n, m in model.named_modules() if n.endswith("query") and hasattr(m, "scaling"))
    assert layer.scaling["default"] == 8.0 / 4 and layer.lora_dropout["default"].p == 0.2
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any("word_embeddings" in n for n in frozen)  # only adapters (and the head) learn
    _, on_value = adapters(r=4, target_modules=("value",))
    assert on_value and all(".value." in n for n in on_value)
    with pytest.raises(Exception) as err:
        adapters(r=4, target_modules=("no_such_module",))
    assert "camembert.lora.target_modules" in str(err.value) and "\n" not in str(err.value)


# ========================================================================================= resnet50


@pytest.fixture(scope="module")
def image_frame(tmp_path_factory) -> pd.DataFrame:
    """3 rows per class for 6 classes: a coloured square per class, as image_clean's columns."""
    from rakuten.contracts.classes import CLASS_CODES

    folder = tmp_path_factory.mktemp("resnet")
    rows = []
    for k in range(6):
        for j in range(3):
            img = np.full((40, 40, 3), 255, np.uint8)
            cv2.rectangle(img, (4 + j, 4), (20 + 2 * k, 30), (40 * k, 255 - 40 * k, 60 + 20 * j), -1)
            rows.append(
                {
                    "row_id": len(rows),
                    "prdtypecode": CLASS_CODES[k],
                    "readable": True,
                    "keep_for_train": True,
                    "sample_weight": 0.5 if j == 0 else 1.0,
                    "clean_path": _image_file(folder, f"r{len(rows)}", img),
                }
            )
    return pd.DataFrame(rows)


def _resnet_config(profile: str = "demo", **changes):
    """A tiny config; profile knobs in ``changes`` go to the selected profile (full, strongest: resnet18, no
    weights)."""
    from rakuten.models.resnet50 import model as R

    shared = {k: v for k, v in changes.items() if k in {f.name for f in dataclasses.fields(R.ResnetConfig)}}
    own = {k: v for k, v in changes.items() if k not in shared}
    cfg = R.ResnetConfig(profile=profile, **{"device": "cpu", "num_threads": 1, "eval_batch_size": 16, **shared})
    cfg = cfg.with_active(arch="resnet18", weights="none", image_size=32, max_train_rows=0, epochs=1, batch_size=8)
    return cfg.with_active(**own)


@pytest.fixture
def resnet_setup(monkeypatch, image_frame):
    """Runs ``resnet.train`` up to its optimiser and returns the loaders, the network and the optimiser's arguments."""
    import torch

    from rakuten.models.resnet50 import backbones
    from rakuten.models.resnet50 import model as R
    from rakuten.models.resnet50 import training as resnet_training
    from rakuten.models.resnet50.backbones import build_net
    from rakuten.models.resnet50.data import make_loader

    seen: dict = {}
    real_loader, real_net = make_loader, build_net

    def loader(dataset, batch_size, cfg, runtime, shuffle=False, sampler=None):
        out = real_loader(dataset, batch_size, cfg, runtime, shuffle=shuffle, sampler=sampler)
        seen.setdefault("loaders", []).append(out)
        return out

    def net(arch, weights_file=None):
        seen["net"] = real_net(arch, weights_file)
        return seen["net"]

    def optimiser(params, **kwargs):
        seen["optimiser"] = kwargs
        raise _Captured

    monkeypatch.setattr(resnet_training, "make_loader", loader)
    monkeypatch.setattr(backbones, "build_net", net)
    monkeypatch.setattr(torch.optim, "AdamW", optimiser)

    def run(cfg, frame=None):
        seen.clear()
        frame = image_frame if frame is None else frame
        with pytest.raises(_Captured):
            R.train(frame, frame.head(6), cfg)
        return dict(seen)

    return run


@pytest.mark.param_effect(
    "resnet50.profile",
    "resnet50.demo.batch_size",
    "resnet50.demo.learning_rate",
    "resnet50.demo.weight_decay",
    "resnet50.full.batch_size",
    "resnet50.full.learning_rate",
    "resnet50.full.weight_decay",
    "resnet50.eval_batch_size",
    "resnet50.num_workers",
    "resnet50.strongest.batch_size",
    "resnet50.strongest.learning_rate",
    "resnet50.strongest.weight_decay",
)
@pytest.mark.parametrize("profile", ["demo", "full", "strongest"])
def test_resnet_profile_selects_the_optimiser_and_loaders(resnet_setup, profile):
    other = "full" if profile == "demo" else "demo"
    for values in (
        {"batch_size": 4, "learning_rate": 0.01, "weight_decay": 0.0, "eval_batch_size": 5, "num_workers": 0},
        {"batch_size": 6, "learning_rate": 0.001, "weight_decay": 0.1, "eval_batch_size": 7, "num_workers": 1},
    ):
        cfg = _resnet_config(profile, **values)
        cfg = replace(cfg, **{other: replace(getattr(cfg, other), batch_size=50, learning_rate=0.5)})
        seen = resnet_setup(cfg)
        train_loader, val_loader = seen["loaders"]
        assert (train_loader.batch_size, val_loader.batch_size) == (values["batch_size"], values["eval_batch_size"])
        assert train_loader.num_workers == val_loader.num_workers == values["num_workers"]
        assert seen["optimiser"] == {"lr": values["learning_rate"], "weight_decay": values["weight_decay"]}


@pytest.mark.param_effect(
    "resnet50.demo.arch",
    "resnet50.full.arch",
    "resnet50.demo.weights",
    "resnet50.full.weights",
    "resnet50.demo.image_size",
    "resnet50.full.image_size",
    "resnet50.strongest.arch",
    "resnet50.strongest.weights",
    "resnet50.strongest.image_size",
)
@pytest.mark.parametrize("profile", ["demo", "full", "strongest"])
def test_resnet_arch_weights_and_input_size(resnet_setup, profile, tmp_path):
    import torch
    import torchvision

    depth = {a: len(resnet_setup(_resnet_config(profile, arch=a))["net"].layer3) for a in ("resnet18", "resnet34")}
    assert depth == {"resnet18": 2, "resnet34": 6}
    saved = torchvision.models.resnet18()
    torch.save(saved.state_dict(), tmp_path / "weights.pth")
    loaded = resnet_setup(_resnet_config(profile, weights=str(tmp_path / "weights.pth")))["net"]
    fresh = resnet_setup(_resnet_config(profile, weights="none"))["net"]
    assert torch.equal(loaded.conv1.weight, saved.conv1.weight) and not torch.equal(
        fresh.conv1.weight, saved.conv1.weight
    )
    for size in (32, 48):
        train_loader, val_loader = resnet_setup(_resnet_config(profile, image_size=size))["loaders"]
        assert train_loader.dataset[0][0].shape == val_loader.dataset[0][0].shape == (3, size, size)


@pytest.mark.param_effect(
    "resnet50.demo.max_train_rows", "resnet50.full.max_train_rows", "resnet50.seed", "resnet50.strongest.max_train_rows"
)
@pytest.mark.parametrize("profile", ["demo", "full", "strongest"])
def test_resnet_row_cap_and_seed(resnet_setup, profile):
    paths = {}
    for rows, seed in ((0, 0), (12, 0), (12, 1)):
        paths[(rows, seed)] = resnet_setup(_resnet_config(profile, max_train_rows=rows, seed=seed))["loaders"][
            0
        ].dataset.paths
    assert len(paths[(0, 0)]) == 18 and len(paths[(12, 0)]) == 12
    assert paths[(12, 0)] != paths[(12, 1)]


@pytest.mark.param_effect("resnet50.rebalance", "resnet50.use_sample_weights")
def test_resnet_rebalancing_and_sample_weights(resnet_setup, image_frame):
    import torch

    frame = pd.concat(
        [image_frame, image_frame[image_frame["prdtypecode"] == image_frame["prdtypecode"].iloc[0]]], ignore_index=True
    )  # class 0 twice as frequent
    first = (frame["prdtypecode"] == frame["prdtypecode"].iloc[0]).to_numpy()

    def train_loader(**changes):
        return resnet_setup(_resnet_config(**changes), frame)["loaders"][0]

    plain = train_loader(rebalance="none", use_sample_weights=False)
    assert plain.sampler.__class__.__name__ == "RandomSampler" and set(plain.dataset.weights) == {1.0}
    image_weights = train_loader(rebalance="none", use_sample_weights=True).dataset.weights
    assert np.array_equal(image_weights, frame["sample_weight"].to_numpy())
    balanced = train_loader(rebalance="class_weights", use_sample_weights=False).dataset.weights
    assert balanced[first].max() < balanced[~first].min()  # the frequent class weighs less
    drawn = train_loader(rebalance="sampler", use_sample_weights=False)
    assert isinstance(drawn.sampler, torch.utils.data.WeightedRandomSampler) and set(drawn.dataset.weights) == {1.0}
    weights = drawn.sampler.weights.numpy()
    assert weights[first].max() < weights[~first].min()


@pytest.mark.param_effect(
    "resnet50.augment.hflip",
    "resnet50.augment.vflip",
    "resnet50.augment.rotation",
    "resnet50.augment.brightness",
    "resnet50.augment.contrast",
    "resnet50.augment.saturation",
    "resnet50.augment.hue",
    "resnet50.augment.zoom_min",
)
def test_resnet_augmentations(resnet_setup, image_frame):
    import torch
    from PIL import Image

    from rakuten.models.resnet50.config import Augment

    off = Augment(
        hflip=0.0, vflip=0.0, rotation=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, zoom_min=1.0
    )
    image = Image.open(image_frame["clean_path"].iloc[5]).convert("RGB")

    def augmented(**changes):
        transform = resnet_setup(_resnet_config(augment=replace(off, **changes)))["loaders"][0].dataset.transform
        torch.manual_seed(0)
        return transform(image)

    plain = augmented()
    assert torch.equal(augmented(hflip=1.0), plain.flip(-1))
    assert torch.equal(augmented(vflip=1.0), plain.flip(-2))
    for knob, value in (
        ("rotation", 45.0),
        ("brightness", 0.5),
        ("contrast", 0.5),
        ("saturation", 0.8),
        ("hue", 0.3),
        ("zoom_min", 0.3),
    ):
        assert not torch.allclose(augmented(**{knob: value}), plain, atol=1e-3), knob


@pytest.mark.param_effect(
    "resnet50.demo.epochs",
    "resnet50.full.epochs",
    "resnet50.demo.patience",
    "resnet50.full.patience",
    "resnet50.strongest.epochs",
    "resnet50.strongest.patience",
)
@pytest.mark.parametrize("profile", ["demo", "full", "strongest"])
def test_resnet_epochs_and_early_stopping(image_frame, monkeypatch, profile):
    from rakuten.models.resnet50 import model as R
    from rakuten.runtime import training

    flat = {"weighted_f1": 0.5, "macro_f1": 0.5, "accuracy": 0.5}  # val F1 never improves after epoch 1
    monkeypatch.setattr(training, "scores", lambda y_true, y_pred: dict(flat))
    run = {
        (e, p): R.train(
            image_frame, image_frame.head(6), _resnet_config(profile, epochs=e, patience=p, batch_size=18)
        ).rows["epochs_run"]
        for e, p in ((1, 5), (3, 1))
    }
    assert run == {(1, 5): 1, (3, 1): 2}  # one epoch when asked; of three, stopped after one without progress


@pytest.mark.param_effect("resnet50.device", "resnet50.precision")
def test_resnet_device_and_precision(resnet_setup, image_frame):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the CPU-only refusals below need a machine without CUDA")
    assert resnet_setup(_resnet_config(device="cpu", precision="fp32"))["loaders"][0].pin_memory is False
    from rakuten.models.resnet50 import model as R

    assert "no CUDA GPU" in _runtime_error(R.train, _resnet_config(device="cuda"), image_frame)
    assert "needs a CUDA GPU" in _runtime_error(R.train, _resnet_config(precision="fp16"), image_frame)


# ================================================================================= deep stages: launcher


@pytest.mark.param_effect("camembert.launcher", "camembert.processes", "resnet50.launcher", "resnet50.processes")
@pytest.mark.parametrize("section", ["camembert", "resnet50"])
def test_launcher_and_processes_choose_how_the_stage_starts(section, monkeypatch):
    """``launcher: torchrun`` re-executes the stage under torchrun with ``processes`` ranks; ``none`` trains here.
    (The 2-process training itself: tests/runtime/test_distributed.py.)"""
    import sys

    from rakuten.core.config import from_params
    from rakuten.models.camembert.config import CamembertConfig
    from rakuten.models.resnet50.config import ResnetConfig
    from rakuten.runtime import distributed
    from tests.helpers.stagerun import default_params, with_overrides

    started: list[list[str]] = []

    class Launcher:
        def __init__(self, argv, env=None):
            started.append(list(argv))

        def wait(self, timeout=None):
            return 0

    for name in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(distributed.subprocess, "Popen", Launcher)
    monkeypatch.setattr(sys, "argv", [f"stages/{section}.py"])
    declaration = CamembertConfig if section == "camembert" else ResnetConfig

    def start(launcher: str, processes: int) -> list[str] | None:
        started.clear()
        params = with_overrides(default_params(), {f"{section}.launcher": launcher, f"{section}.processes": processes})
        cfg = from_params(declaration, params, section)
        try:
            distributed.relaunch(cfg.launcher, cfg.processes, section)
        except SystemExit as done:
            assert done.code == 0
        return started[0] if started else None

    assert start("none", 4) is None and start("torchrun", 1) is None  # trains in this process
    for n in (2, 4):
        argv = start("torchrun", n)
        assert argv[1:] == [
            "-m",
            "rakuten.runtime.distributed",
            "--standalone",
            f"--nproc_per_node={n}",
            f"stages/{section}.py",
        ]
