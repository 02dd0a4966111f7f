"""The backbone benchmarks run end to end at tiny sizes on the CPU.

Why: bench/gpu_check.sh is run on a rented GPU once in a while, often a single time; a typo in a code
path that only the GPU run takes would waste that run. ``bench/deep.py --cpu-smoke`` takes every
GPU-mode path (each family, FLOP counting, GPU-side augmentation, the DataLoader path, the library
paths) with tiny models, and ``bench/backbones.py --tiny`` the CPU table's.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.stagerun import REPO

# bench/ is a folder of scripts (importing them here would set HF_HUB_OFFLINE for the whole session):
# what the tests need from them is read in a subprocess
_PROBE = """
import json, sys
sys.path.insert(0, "bench")
import backbones, deep
names = ["NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA H100 PCIe", "NVIDIA A100-SXM4-80GB", "NVIDIA L4",
         "NVIDIA L40S", "Tesla T4"]
print(json.dumps({"families": [f.key for f in backbones.FAMILIES],
                  "peaks": {n: deep.peak_bf16_flops(n) for n in names}}))
"""


def _run(args: list[str], timeout: int = 240) -> str:
    done = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _probe() -> dict:
    return json.loads(_run(["-c", _PROBE]).strip().splitlines()[-1])


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


def test_gpu_mode_code_paths_run_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    _run(["bench/deep.py", "--cpu-smoke", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu-smoke" and report["peak_bf16_flops"] is None
    assert set(report["families"]) == set(_probe()["families"])
    for key, fam in report["families"].items():
        assert "error" not in fam, f"{key}: {fam.get('error')}"
        assert _positive(fam["params_m"]) and _positive(fam["train_samples_per_s"]), key
        assert _positive(fam["infer_samples_per_s"]) and _positive(fam["epoch_s_estimate"]), key
        assert fam["mfu"] is None, key  # no device peak on a CPU
        phases = [p for group in ("train", "infer") for p in fam[group].values()]
        assert all(_positive(p["samples_per_s"]) and p["mfu"] is None for p in phases), key
        assert all(_positive(p["flops_per_s"]) for p in phases), key  # the flop counter ran on each
        if fam["kind"] == "text":
            assert set(fam["train"]) == set(fam["infer"]) == {"dynamic", "fixed_256"}, key
            assert fam["token_length"]["mean"] > 0 and fam["attention"] in ("sdpa", "eager"), key
            assert fam["train"]["dynamic"]["padding_efficiency"] > fam["train"]["fixed_256"]["padding_efficiency"]
        else:
            assert "gpu_fed" in fam["train"] and "gpu_fed" in fam["infer"], key
    assert "dataloader" in report["families"]["resnet50"]["train"]
    assert _positive(report["families"]["resnet50"]["train"]["dataloader"]["loader_only_images_per_s"])
    assert set(report["targets"]) == {"base_text_train_ge_1500_per_s", "resnet50_224_train_ge_3000_per_s"}
    assert {r["model"] for r in report["results"]} == {"camembert", "resnet50"}  # the library paths
    assert all("error" not in r for r in report["results"])


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
    assert report["families"]["camembert-demo-scratch-2x128"]["epoch_rows"] == 8000


def test_peak_table_matches_device_names():
    assert _probe()["peaks"] == {
        "NVIDIA H100 80GB HBM3": 989.4e12,
        "NVIDIA H200": 989.4e12,
        "NVIDIA H100 PCIe": 756e12,
        "NVIDIA A100-SXM4-80GB": 312e12,
        "NVIDIA L4": 121e12,
        "NVIDIA L40S": None,
        "Tesla T4": None,
    }
