"""params.yaml and the typed declarations (rakuten.core.config) agree key by key; bad params are one line.

Every section of params.yaml has exactly one declaration, next to the code that uses it. The
declared defaults must equal the committed values (a knob missing on either side, or a different
value, fails naming the dotted key), every knob carries help text, and parsing rejects bad values,
unknown keys and missing keys with one line naming the dotted key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import pytest

from rakuten.core.config import (
    ConfigError,
    ProfileView,
    check_value,
    defaults,
    from_params,
    iter_knobs,
    knob,
    parse_section,
    to_dict,
)
from rakuten.core.errors import PipelineError
from rakuten.core.params import load_params
from rakuten.serving.sections import SECTIONS, declaration
from tests.helpers.stagerun import REPO, with_overrides, without

#: section -> its declaration: the library's one map (rakuten.serving.sections)
DECLARATIONS = {section: declaration(section) for section in SECTIONS}
PARAMS = load_params(REPO / "params.yaml")


def _leaves(tree: Any, prefix: str) -> dict[str, Any]:
    """Dotted key -> value of every leaf (lists and empty mappings are leaves)."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_leaves(value, f"{prefix}.{key}"))
        return out
    return {prefix: tree}


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same kind (``True`` is not ``1``; ``40`` and ``40.0`` are the same number)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b and isinstance(a, bool) == isinstance(b, bool) and isinstance(a, str) == isinstance(b, str)


_without = without


def _error(params: dict, section: str) -> str:
    with pytest.raises(PipelineError) as err:
        from_params(DECLARATIONS[section], params, section)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_every_section_has_one_declaration():
    assert sorted(PARAMS) == sorted(DECLARATIONS)


@pytest.mark.parametrize("section", DECLARATIONS)
def test_declared_defaults_equal_params_yaml_key_by_key(section):
    declared = _leaves(defaults(DECLARATIONS[section]), section)
    committed = _leaves(PARAMS[section], section)
    assert not sorted(set(committed) - set(declared)), "in params.yaml but not declared"
    assert not sorted(set(declared) - set(committed)), "declared but not in params.yaml"
    differ = [
        f"{key}: declared {declared[key]!r}, params.yaml {committed[key]!r}"
        for key in declared
        if not _same(declared[key], committed[key])
    ]
    assert not differ, "; ".join(differ)


@pytest.mark.parametrize("section", DECLARATIONS)
def test_committed_params_parse_to_the_declared_defaults(section):
    cls = DECLARATIONS[section]
    assert from_params(cls, PARAMS, section) == cls()


@pytest.mark.parametrize("section", DECLARATIONS)
def test_every_knob_has_help(section):
    for name, _, declared in iter_knobs(DECLARATIONS[section], section + "."):
        assert declared.help.strip(), f"{name} has no help text"


@pytest.mark.parametrize("section", DECLARATIONS)
def test_saved_configs_read_back(section):
    """Models save their config with ``asdict`` as JSON; parsing it back gives the same object."""
    cls = DECLARATIONS[section]
    cfg = from_params(cls, PARAMS, section)
    assert parse_section(cls, json.loads(json.dumps(asdict(cfg))), section, source="x/config.json") == cfg
    assert to_dict(cfg) == json.loads(json.dumps(to_dict(cfg)))  # plain YAML/JSON values


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("tfidf_svm.C", -1, "tfidf_svm.C = -1, expected a number in (0.0, inf]"),
        ("tfidf_svm.classifier", "xgb", "tfidf_svm.classifier = 'xgb', expected one of svm, rf, sgd, logreg"),
        ("tfidf_svm.rf.max_depth", -2, "tfidf_svm.rf.max_depth = -2, expected an integer in [0, inf]"),
        ("split.seed", 1.5, "split.seed = 1.5, expected an integer"),
        ("text_clean.normalise.lowercase", "yes", "text_clean.normalise.lowercase = 'yes', expected true or false"),
        ("text_clean.language.candidates", "fr", "text_clean.language.candidates = 'fr', expected a list of strings"),
        (
            "image_clean.border.background",
            "black",
            "image_clean.border.background = 'black', expected one of white, uniform",
        ),
        ("camembert.full.epochs", 0, "camembert.full.epochs = 0, expected an integer in [1, 100]"),
        ("resnet50.augment.hflip", 2.0, "resnet50.augment.hflip = 2.0, expected a number in [0.0, 1.0]"),
        (
            "fusion.models",
            ["tfidf_svm", "tfidf_svm"],
            "fusion.models = ['tfidf_svm', 'tfidf_svm'], expected a "
            "non-empty list of distinct names from tfidf_svm, fasttext, camembert, resnet50, joint",
        ),
        ("fusion.weights.resnet50", "high", "fusion.weights.resnet50 = 'high', expected a number"),
        ("image_hash.query_crops", [0.0, 0.3], "image_hash.query_crops[1] = 0.3, expected a number in [0.0, 0.25)"),
        ("data.raw_dir", "", "data.raw_dir = '', expected a non-empty string"),
        (
            "tfidf_svm.ngram_min",
            3,
            "tfidf_svm.ngram_min = 3 > tfidf_svm.ngram_max = 2, expected ngram_min <= ngram_max",
        ),
        ("split.val", 0.3, "split.train + split.val + split.test = 1.2, expected them to sum to 1"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(key, value, message):
    section = key.split(".")[0]
    assert _error(with_overrides(PARAMS, {key: value}), section) == f"params.yaml: {message}"


@pytest.mark.parametrize("key", ["tfidf_svm.foo", "camembert.demo.scratch.dropout", "fusion.xgboost.gamma"])
def test_unknown_keys_are_one_line_naming_the_key(key):
    section = key.split(".")[0]
    message = _error(with_overrides(PARAMS, {key: 1}), section)
    assert message.startswith(f"params.yaml: unknown key {key}; expected one of ")


@pytest.mark.parametrize(
    "key",
    [
        "tfidf_svm.C",
        "fusion.xgboost.subsample",
        "text_clean.translation.backend",
        "camembert.demo.scratch",
        "resnet50.full.patience",
        "fusion",
    ],
)
def test_missing_keys_are_one_line_naming_the_key(key):
    section = key.split(".")[0]
    message = _error(_without(PARAMS, key), section)
    assert message.startswith(f"params.yaml: missing key {key}")


def test_a_section_that_is_not_a_mapping_names_its_keys():
    assert _error({**PARAMS, "split": [0.8, 0.1, 0.1]}, "split") == (
        "params.yaml: split = [0.8, 0.1, 0.1], expected a mapping with keys train, val, test, seed"
    )


def test_the_error_names_the_file_it_came_from():
    with pytest.raises(PipelineError, match=r"^models/fasttext/config\.json: missing key fasttext\.dim$"):
        parse_section(
            DECLARATIONS["fasttext"],
            _without(PARAMS, "fasttext.dim")["fasttext"],
            "fasttext",
            source="models/fasttext/config.json",
        )


# ------------------------------------------------------------------------- the declarative layer itself


@dataclass(frozen=True)
class _Small:
    n: int = knob(3, "an integer")
    x: float = knob(1.0, "a number", lo=0.5, lo_open=True)
    s: str = knob("svm", "a choice", choices=("svm", "rf"))
    b: bool = knob(True, "a switch")
    zz: tuple[int | float, ...] = knob((1, 2.5), "numbers kept as written", lo=0)


def test_types_bounds_and_choices_name_the_key():
    assert parse_section(_Small, {"n": 3, "x": 1, "s": "rf", "b": False, "zz": [1, 2.5]}, "a") == _Small(
        3, 1.0, "rf", False, (1, 2.5)
    )
    good = defaults(_Small)
    for override, message in [
        ({"n": 0.5}, "a.n = 0.5, expected an integer"),
        ({"x": 0.5}, "a.x = 0.5, expected a number in (0.5, inf]"),
        ({"x": float("nan")}, "a.x = nan, expected a number in (0.5, inf]"),
        ({"s": "sgd"}, "a.s = 'sgd', expected one of svm, rf"),
        ({"b": 1}, "a.b = 1, expected true or false"),
        ({"n": True}, "a.n = True, expected an integer"),
        ({"zz": [1, -1]}, "a.zz[1] = -1, expected a number in [0, inf]"),
    ]:
        with pytest.raises(PipelineError) as err:
            parse_section(_Small, {**good, **override}, "a")
        assert str(err.value) == f"params.yaml: {message}"
    with pytest.raises(PipelineError, match=r"^params\.yaml: missing key a\.zz$"):
        parse_section(_Small, {k: v for k, v in good.items() if k != "zz"}, "a")


def test_check_value_uses_the_knob_declaration():
    assert check_value(DECLARATIONS["tfidf_svm"], "rf.n_estimators", 7, "grid") == 7
    assert check_value(DECLARATIONS["tfidf_svm"], "C", 1, "grid") == 1.0
    with pytest.raises(ConfigError, match=r"^grid = 0, expected an integer in \[1, inf\]$"):
        check_value(DECLARATIONS["tfidf_svm"], "rf.n_estimators", 0, "grid")


@pytest.mark.param_effect("camembert.profile", "resnet50.profile")
def test_profiles_give_a_flat_view_of_the_selected_profile():
    cfg = DECLARATIONS["camembert"]()
    assert isinstance(cfg, ProfileView) and cfg.active is cfg.demo
    assert (cfg.epochs, cfg.max_length, cfg.scratch) == (cfg.demo.epochs, cfg.demo.max_length, cfg.demo.scratch)
    full = replace(cfg, profile="full")
    assert full.epochs == cfg.full.epochs and full.scratch is None and full.model == "camembert-base"
    shorter = cfg.with_active(epochs=1)
    assert shorter.epochs == 1 and shorter.full == cfg.full
    with pytest.raises(AttributeError):
        cfg.not_a_knob  # noqa: B018
    assert DECLARATIONS["resnet50"](profile="full").image_size == 224


def test_an_optional_section_may_be_absent_but_is_required_when_used():
    full = PARAMS["camembert"]["full"]
    assert "scratch" not in full and "scratch" not in to_dict(DECLARATIONS["camembert"]().full)
    message = _error(with_overrides(PARAMS, {"camembert.full.model": "scratch"}), "camembert")
    assert message == (
        "params.yaml: missing key camembert.full.scratch (the architecture of camembert.full.model = scratch)"
    )
