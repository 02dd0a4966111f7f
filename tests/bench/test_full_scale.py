"""bench/full_scale.py's accounting of DVC's time between stages (the run itself takes most of an hour)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location("full_scale", Path(__file__).resolve().parents[2] / "bench/full_scale.py")
full_scale = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(full_scale)


def test_gaps_are_the_seconds_before_the_first_stage_and_after_each_in_run_order():
    stages = {"ingest": {"start": 130.0, "end": 135.5}, "sample": {"start": 102.0, "end": 110.0}}
    assert full_scale.gaps(stages, 100.0, 140.0) == {"before sample": 2.0, "after sample": 20.0, "after ingest": 4.5}
    assert full_scale.gaps({"sample": {"start": 100.5, "end": 139.5}}, 100.0, 140.0) == {}
    assert full_scale.gaps({}, 100.0, 140.0) == {}
