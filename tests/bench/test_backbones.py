"""The backbone benchmarks run end to end at tiny sizes on the CPU, through the library's own code.

Why: bench/gpu_check.sh is run on a rented GPU once in a while, often a single time; a typo in a code
path that only the GPU run takes would waste that run. ``bench/deep.py --cpu-smoke`` takes GPU mode's
code (the library's training steps and inference of both models, then the library's own train +
predict_proba) at tiny sizes, and ``bench/backbones.py --tiny`` the CPU table's.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers.stagerun import REPO

# bench/ is a folder of scripts (importing them here would set HF_HUB_OFFLINE for the whole session):
# what the tests need from them is read in a subprocess
_PROBE = """
import json, sys
sys.path.insert(0, "bench")
import backbones
from rakuten.models.camembert.config import MODEL_TYPES
from rakuten.models.resnet50.backbones import backbone_library
fams = backbones.FAMILIES + backbones.DEMO_FAMILIES
print(json.dumps({
    "keys": [f.key for f in fams],
    "text_types": [f.scratch.model_type in MODEL_TYPES for f in fams if f.kind == "text" and not f.demo],
    "image_libraries": {f.key: [backbone_library(f.hub_id), backbone_library(f.tiny)]
                        for f in fams if f.kind == "image" and not f.demo},
}))
"""


def _run(args: list[str], timeout: int = 240) -> str:
    done = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


@pytest.mark.slow
def test_gpu_mode_code_paths_run_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    _run(["bench/deep.py", "--cpu-smoke", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu-smoke" and report["precision"] == "fp32"
    assert [(r["model"], r["profile"]) for r in report["results"]] == [("camembert", "demo"), ("resnet50", "demo")]
    for r in report["results"]:
        assert "error" not in r, r.get("error")
        assert _positive(r["train_samples_per_s"]) and _positive(r["infer_samples_per_s"]), r
        assert r["train_steps"] == 2 and _positive(r["params_m"]), r
    check = report["library_train_check"]
    assert set(check) == {"camembert", "resnet50"}
    assert all(c["proba_rows_sum_to_1"] for c in check.values()), check


@pytest.mark.slow
def test_cpu_backbone_table_at_tiny_size(tmp_path):
    out = tmp_path / "backbones.json"
    keys = [
        "camembert-base",
        "flaubert-base",
        "resnet50",
        "vit_base_patch16_siglip_224",
        "camembert-demo-scratch-2x128",
    ]
    _run(
        [
            "bench/backbones.py",
            "--tiny",
            "--only",
            ",".join(keys),
            "--steps",
            "1",
            "--infer-batches",
            "1",
            "--batch",
            "2",
            "--text-rows",
            "200",
            "--thread-check",
            "",
            "--out",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    assert set(report["families"]) == set(keys)  # (the JSON is written with sorted keys)
    for key, fam in report["families"].items():
        assert "error" not in fam, f"{key}: {fam.get('error')}"
        for field in ("params_m", "train_samples_per_s", "infer_samples_per_s", "epoch_s_estimate"):
            assert _positive(fam[field]), (key, field)
    assert report["families"]["camembert-base"]["token_length"]["p95"] >= 1
    assert report["families"]["camembert-demo-scratch-2x128"]["epoch_rows"] == 8000  # the demo's max_train_rows
    assert report["families"]["resnet50"]["arch"] == "resnet18"  # --tiny: the family's small member


@pytest.mark.slow
def test_every_family_is_one_the_library_builds():
    probe = json.loads(_run(["-c", _PROBE]).strip().splitlines()[-1])
    assert len(probe["keys"]) == len(set(probe["keys"])) == 14
    assert probe["text_types"] and all(probe["text_types"])
    for key, (library, tiny) in probe["image_libraries"].items():
        assert library in ("torchvision", "timm") and tiny in ("torchvision", "timm"), key
