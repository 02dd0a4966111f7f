"""Reading ``params.yaml`` and validating values before any work starts.

Validation errors are :class:`PipelineError` whose message names the dotted key, the value and
what was expected, e.g. ``params.yaml: split.val = 1.5, expected a number in [0, 1]``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from rakuten.errors import PipelineError  # noqa: F401  (re-exported for stages)

PARAMS_FILE = "params.yaml"


def load_params(path: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    """Load the whole params file; one clear line if it is missing or not a mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{path}: params file not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a mapping of stage sections at top level")
    return data


def get(params: Mapping[str, Any], key: str) -> Any:
    """Return ``params[a][b]...`` for dotted ``key`` or fail naming the missing key."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise PipelineError(f"{PARAMS_FILE}: missing key {key}")
        node = node[part]
    return node


def _fail(key: str, value: Any, expected: str) -> PipelineError:
    return PipelineError(f"{PARAMS_FILE}: {key} = {value!r}, expected {expected}")


def number(params: Mapping[str, Any], key: str, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, integer: bool = False) -> float:
    """Validated number at ``key`` within [lo, hi] (``lo_open`` makes the lower bound strict)."""
    value = get(params, key)
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise _fail(key, value, "an integer" if integer else "a number")
    low_bad = lo is not None and (value <= lo if lo_open else value < lo)
    if low_bad or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise _fail(key, value, f"{'an integer' if integer else 'a number'} in {'(' if lo_open else '['}{lo_s}, {hi_s}]")
    return value


def integer(params: Mapping[str, Any], key: str, lo: int | None = None, hi: int | None = None) -> int:
    """Validated integer at ``key`` within [lo, hi]."""
    return int(number(params, key, lo, hi, integer=True))


def choice(params: Mapping[str, Any], key: str, allowed: Iterable[str]) -> str:
    """Validated string at ``key`` that must be one of ``allowed``."""
    allowed = list(allowed)
    value = get(params, key)
    if value not in allowed:
        raise _fail(key, value, "one of " + ", ".join(map(str, allowed)))
    return value


def boolean(params: Mapping[str, Any], key: str) -> bool:
    """Validated boolean at ``key``."""
    value = get(params, key)
    if not isinstance(value, bool):
        raise _fail(key, value, "true or false")
    return value


def fractions(params: Mapping[str, Any], keys: Iterable[str], total: float = 1.0, tol: float = 1e-6) -> list[float]:
    """Validated fractions in [0, 1] that sum to ``total``."""
    keys = list(keys)
    values = [number(params, k, 0.0, 1.0) for k in keys]
    if abs(sum(values) - total) > tol:
        raise PipelineError(f"{PARAMS_FILE}: {' + '.join(keys)} = {sum(values):g}, expected them to sum to {total:g}")
    return values
