"""dvc.yaml's per-model parts follow the registry (tools/registry_sync.py).

Why: DVC cannot expand a list into deps or plots, so every model's probability table (fusion, evaluate,
submission), its confusion plot, its artifact entry and the report's image model are written out in
dvc.yaml. Generated from :mod:`rakuten.contracts.registry`, they cannot drift from it: a model registered
but missing there would be fused from a table DVC does not track (a stale fusion), or never plotted.
"""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from rakuten.contracts import registry
from rakuten.fusion.strategies import STRATEGIES
from tools import registry_sync
from tools.registry_sync import generate

TOY = registry.ModelSpec("toy", "rakuten.models.toy", "text", desc="a toy: bag of words + naive Bayes")
MODELS = list(registry.MODELS.values())
IMAGE = registry.report_image_model()


def dvc_yaml() -> str:
    return (registry_sync.REPO / "dvc.yaml").read_text(encoding="utf-8")


def probs_deps(spec: dict, stage: str) -> list[str]:
    deps = [d if isinstance(d, str) else next(iter(d)) for d in spec["stages"][stage]["deps"]]
    return [d for d in deps if d.startswith("reports/probs/") and d != "reports/probs/fusion.parquet"]


def test_dvc_yaml_follows_the_registry():
    if registry_sync.expected() != dvc_yaml():
        pytest.fail(
            "dvc.yaml's per-model parts differ from src/rakuten/contracts/registry.py; "
            "run `python -m tools.registry_sync --write` (and see `python -m tools.registry_sync` for the diff)",
            pytrace=False,
        )


def test_the_committed_parts_name_every_registered_model():
    spec = yaml.safe_load(dvc_yaml())
    tables = [f"reports/probs/{m.name}.parquet" for m in MODELS]
    for stage in registry_sync.PROBS_STAGES:
        assert probs_deps(spec, stage) == tables, stage
    assert f"models/{IMAGE}" in spec["stages"]["evaluate"]["deps"]
    assert list(spec["artifacts"]) == [*(m.name for m in MODELS), "fusion"]
    plots = [next(iter(p)) for p in spec["stages"]["evaluate"]["plots"]]
    names = [*(m.name for m in MODELS), "fusion", *(f"fusion_{s}" for s in STRATEGIES)]
    assert plots == [*(f"reports/plots/confusion_{n}.csv" for n in names), "reports/plots/risk_coverage.csv"]


def test_a_new_model_reaches_every_per_model_part_and_nothing_else():
    before = dvc_yaml()
    after = generate(before, [*MODELS, TOY], IMAGE)
    spec = yaml.safe_load(after)
    for stage in registry_sync.PROBS_STAGES:
        assert probs_deps(spec, stage)[-1] == "reports/probs/toy.parquet", stage
    assert spec["artifacts"]["toy"] == {
        "path": "models/toy",
        "type": "model",
        "desc": "a toy: bag of words + naive Bayes",  # quoted in the file: the colon would end a plain scalar
        "labels": ["text"],
    }
    plots = {next(iter(p)): next(iter(p.values())) for p in spec["stages"]["evaluate"]["plots"]}
    assert plots["reports/plots/confusion_toy.csv"] == {
        "template": "confusion",
        "x": "actual",
        "y": "predicted",
        "cache": False,
    }
    # every other line stays: removing the model again gives the file back byte for byte
    assert generate(after, MODELS, IMAGE) == before
    assert generate(after, [*MODELS, TOY], IMAGE) == after


def test_artifact_labels_follow_the_modality():
    multimodal = dataclasses.replace(TOY, name="both", modality="multimodal", desc="")
    spec = yaml.safe_load(generate(dvc_yaml(), [*MODELS, multimodal], IMAGE))
    assert spec["artifacts"]["both"] == {
        "path": "models/both",
        "type": "model",
        "labels": ["text", "image", "multimodal"],
    }
    assert registry_sync.labels("image") == ["image"] and registry_sync.labels("text") == ["text"]


def test_the_report_image_model_is_evaluate_s_model_dep():
    spec = yaml.safe_load(generate(dvc_yaml(), MODELS, "other_cnn"))
    deps = spec["stages"]["evaluate"]["deps"]
    assert "models/other_cnn" in deps and f"models/{IMAGE}" not in deps
    assert "models/fusion" in spec["stages"]["submission"]["deps"]  # fusion's own folder is never replaced


def test_check_names_the_command_and_write_fixes_the_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "dvc.yaml").write_text(generate(dvc_yaml(), MODELS[:-1], IMAGE), encoding="utf-8")
    monkeypatch.setattr(registry_sync, "REPO", tmp_path)
    assert registry_sync.main([]) == 1
    out = capsys.readouterr().out
    assert "+      - reports/probs/joint.parquet" in out and "python -m tools.registry_sync --write" in out
    assert registry_sync.main(["--write"]) == 0
    assert (tmp_path / "dvc.yaml").read_text(encoding="utf-8") == dvc_yaml()
    assert registry_sync.main([]) == 0


def test_a_stage_without_a_per_model_dep_is_one_clear_error():
    text = dvc_yaml().replace("      - reports/probs/tfidf_svm.parquet\n", "")
    for name in [m.name for m in MODELS][1:]:
        text = text.replace(f"      - reports/probs/{name}.parquet\n", "")
    with pytest.raises(ValueError, match="stage fusion deps: no line to generate from the registry"):
        generate(text, MODELS, IMAGE)
