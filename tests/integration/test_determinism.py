"""Same bits on another machine: the numeric policy of :mod:`rakuten.core.numerics`, shown end to end.

Two interpreters train the tiny demo CamemBERT and ResNet, clean images and draw contact sheets
(``tests/helpers/determinism_run.py``): A with the caller's environment, B as an AVX2-only machine with
other thread settings would run (oneDNN, MKL, torch's kernels, numpy, OpenBLAS and IPP capped at
AVX2; 2 OpenMP/MKL/OpenBLAS threads; another hash seed). With the policy their outputs are
byte-identical. The control pair runs without the policy: on an AVX-512 CPU the same two settings
then give different bits (ResNet probabilities by up to ~0.7 after one epoch), so the first
test would catch a pin that stops working.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rakuten.core import numerics
from tests.helpers.stagerun import REPO

AVX2_MACHINE = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "NPY_DISABLE_CPU_FEATURES": numerics.pinned_environment()["NPY_DISABLE_CPU_FEATURES"],
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENCV_IPP": "avx2",
    "OMP_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
    "OPENBLAS_NUM_THREADS": "2",
    "PYTHONHASHSEED": "1",
}
SETTINGS = set(AVX2_MACHINE) | set(numerics.pinned_environment()) | {"MKL_CBWR", "MKL_DYNAMIC", "OPENCV_LOG_LEVEL"}


def _has_avx512() -> bool:
    try:
        return " avx512f " in f" {Path('/proc/cpuinfo').read_text()} ".replace("\n", " ")
    except OSError:
        return False


def _runs(sample: Path, root: Path, unpinned: bool) -> tuple[Path, Path]:
    """Run A (caller's environment without any of the settings) and B (AVX2 machine) side by side."""
    base = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    base["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    procs, outs = [], []
    for name, extra in (("A", {}), ("B", AVX2_MACHINE)):
        out = root / name
        out.mkdir(parents=True)
        cmd = [sys.executable, "-m", "tests.helpers.determinism_run", str(sample), str(out)] + (
            ["--unpinned"] * unpinned
        )
        procs.append(
            subprocess.Popen(
                cmd, cwd=REPO, env={**base, **extra}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
        outs.append(out)
    for proc in procs:
        log, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, log[-3000:]
    return outs[0], outs[1]


def _differences(a: Path, b: Path) -> dict[str, str]:
    """Every output file whose bytes differ, with the largest absolute difference for arrays."""
    found = {}
    for path in sorted(p for p in a.rglob("*") if p.is_file() and p.name != "run.json"):
        other = b / path.relative_to(a)
        if other.read_bytes() == path.read_bytes():
            continue
        name = path.relative_to(a).as_posix()
        if path.suffix == ".npy":
            found[name] = f"max abs diff {np.abs(np.load(path) - np.load(other)).max():.3g}"
        elif path.suffix == ".npz":
            x, y = np.load(path), np.load(other)
            found[name] = ", ".join(k for k in x.files if x[k].tobytes() != y[k].tobytes())
        else:
            found[name] = "bytes differ"
    return found


@pytest.mark.slow
def test_two_machines_give_byte_identical_outputs(tiny_sample, tmp_path):
    a, b = _runs(tiny_sample, tmp_path, unpinned=False)
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    assert _differences(a, b) == {}
    for run in (a, b):
        facts = json.loads((run / "run.json").read_text())
        assert facts["capability"] == "AVX2" and facts["late"] == []
        assert facts["mkl_branch"] in (None, 3)  # MKL_CBWR=COMPATIBLE took effect (None: not queryable)


@pytest.mark.skipif(not _has_avx512(), reason="the control needs an AVX-512 CPU (else A and B run the same code)")
@pytest.mark.slow
def test_without_the_policy_the_same_settings_change_the_bits(tiny_sample, tmp_path):
    a, b = _runs(tiny_sample, tmp_path, unpinned=True)
    found = _differences(a, b)
    assert "resnet.npy" in found and "numpy_ops.npz" in found, found
    assert any(name.startswith("images/") for name in found), found  # IPP's AVX-512 vs AVX2 up-scaling
