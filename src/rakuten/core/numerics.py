"""One numeric policy for every stage: the same bits on any x86-64 machine of this kind.

Why: numpy, OpenBLAS, MKL, oneDNN, torch's own kernels and OpenCV's IPP each choose a code path
at run time from the CPU's instruction set (AVX2, AVX-512, AMX, Intel or AMD) and from the thread
settings, and those paths round differently. Measured on this project (one AVX-512 machine, a
second process told to behave like an AVX2-only one): the tiny ResNet's test probabilities moved
by up to 0.72 after one epoch (oneDNN convolutions, torch's AVX-512 kernels), CamemBERT's by 4e-8
(oneDNN GELU); numpy's AVX-512 ``exp``/``log`` and its AVX-512 sort give other last bits and
other orders of ties (``reports/top_terms``); OpenBLAS's AVX-512 and multi-threaded kernels other
sums; IPP's cubic up-scaling other pixels. Pinning each library to a path that every such machine
runs identically makes outputs a pure function of code, params, data and the locked environment.

Two steps:

* :func:`pin_environment`, run when ``rakuten`` is imported, sets environment variables that the
  libraries read when they load (numpy, OpenBLAS, OpenCV) or on first use (MKL, torch's kernel
  dispatch), so it must run before they load: stage scripts import ``rakuten`` first;
  :func:`late_libraries` names what was loaded too early (``run_stage`` warns about it).
* :func:`configure_torch`, called by the deep models before training and when loading: deterministic
  algorithms, oneDNN and NNPACK off (capping oneDNN's ISA is not enough: its convolutions choose
  blockings from the CPU's cache sizes; convolutions and GELU then run on ATen + MKL's reproducible
  branch), a fixed number of threads whatever ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` say.

Cost, one thread on a 2-core AVX-512 box: a demo ResNet-18 (32 px, batch 64) training step takes
3.9x as long (oneDNN off: convolutions through ATen's im2col and MKL), its inference 6.5x, a demo
CamemBERT step 2.1x (MKL's SSE2 branch, torch's AVX2 kernels); OpenCV without IPP is within noise.
What stays machine-dependent: the thread counts in params (``num_threads``; XGBoost's
``fusion.n_jobs`` above 1 is capped by the cores and ``OMP_NUM_THREADS``), the system's zlib and
libm (PNG bytes; numpy's exp/log once off AVX-512), and GPUs: CUDA runs are deterministic for
reruns on the same GPU model and software, never bit-identical to the CPU or across GPU models.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import metadata

log = logging.getLogger(__name__)

# Values forced whatever the user's environment says (a user's AVX-512 or thread setting would
# silently change results). MKL: COMPATIBLE is the only conditional-numerical-reproducibility
# branch that gives identical results on Intel and AMD CPUs (AVX2 silently falls back to AUTO on
# AMD); MKL_DYNAMIC=FALSE keeps its thread count fixed. ATen: the AVX2 kernels, present on every
# x86-64 machine of this kind. OpenBLAS: Haswell (AVX2) kernels on one thread (its AVX-512 and
# multi-threaded dot/gemm kernels sum in other orders). OpenCV: no IPP (IPP has its own AVX-512 /
# AVX2 / SSE4.2 variants with different rounding; OpenCV's own SIMD dispatch is bit-exact).
# oneDNN is switched off in torch (configure_torch); the ISA cap is a second line of defence.
PINNED_ENV: dict[str, str] = {
    "MKL_CBWR": "COMPATIBLE",
    "MKL_DYNAMIC": "FALSE",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENBLAS_NUM_THREADS": "1",
    "OPENCV_IPP": "disabled",
}
# Defaults a user may still override: OpenCV would otherwise print a warning that IPP is off in
# every process; cuBLAS needs a fixed workspace for deterministic GPU matmuls.
DEFAULT_ENV: dict[str, str] = {
    "OPENCV_LOG_LEVEL": "ERROR",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
}
# numpy's dispatch targets above AVX2 (names changed in numpy 2.4); disabling a name that is not
# a dispatch target only draws an ImportWarning, so the list matches the installed version.
_NUMPY_AVX512 = {
    True: "X86_V4 AVX512_ICL AVX512_SPR",
    False: "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR AVX512FP16",
}

_late: list[str] = []


def _numpy_is_2_4_or_later() -> bool:
    try:
        major, minor = (int(p) for p in metadata.version("numpy").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return True
    return (major, minor) >= (2, 4)


def pinned_environment() -> dict[str, str]:
    """Every environment variable of the policy and its value (forced ones and defaults)."""
    return {
        **PINNED_ENV,
        "NPY_DISABLE_CPU_FEATURES": _NUMPY_AVX512[_numpy_is_2_4_or_later()],
        **{k: os.environ.get(k, v) for k, v in DEFAULT_ENV.items()},
    }


def pin_environment() -> None:
    """Set the policy's environment variables (idempotent); note libraries that loaded before.

    Child processes (process pools, DVC stages started from ``rakuten`` code) inherit them.
    """
    for key, value in pinned_environment().items():
        os.environ[key] = value
    _late[:] = [name for name in ("numpy", "cv2") if name in sys.modules]


def late_libraries() -> list[str]:
    """Libraries imported before :func:`pin_environment` ran, so running with their native ISA choice."""
    return list(_late)


def configure_torch(num_threads: int) -> int:
    """Deterministic torch on a fixed number of intra-op threads (0 = all cores); return the number.

    CPU: deterministic algorithms (an op without one is an error), oneDNN and NNPACK off, threads
    fixed (torch also sets MKL's). With a CUDA GPU: cuDNN deterministic and without autotuning,
    deterministic algorithms in warn-only mode (a few CUDA backward ops, e.g. adaptive average
    pooling, have no deterministic kernel).
    """
    import torch

    n = num_threads if num_threads > 0 else (os.cpu_count() or 1)
    torch.set_num_threads(n)
    cuda = torch.cuda.is_available()
    torch.use_deterministic_algorithms(True, warn_only=cuda)
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    if cuda:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.lower() != PINNED_ENV["ATEN_CPU_CAPABILITY"]:
        log.warning(
            "torch runs its %s kernels, not %s: torch ran an operation before rakuten was imported, "
            "or this CPU lacks AVX2; results may differ from other machines",
            capability,
            PINNED_ENV["ATEN_CPU_CAPABILITY"],
        )
    return n
