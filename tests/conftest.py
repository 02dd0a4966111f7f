"""Shared fixtures: one tiny generated catalog per test session, ingested and split.

Tiny on purpose (27 classes x a few rows, 64 px images): the whole suite must stay well under
15 minutes on 2 cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, settings

from rakuten.data.ingest import load_catalog
from rakuten.data.sample.generate import write_sample
from rakuten.data.split import split_catalog
from tests.helpers.tiny_profile import tiny_sample_config

TINY = tiny_sample_config(seed=7)

# Hypothesis profiles (tests/integration/test_properties.py). `ci`, the default: few examples, derandomized so every
# run tests the same inputs, no example database. `thorough`, by hand: HYPOTHESIS_PROFILE=thorough
# pytest tests/integration/test_properties.py (40x the examples, random ones, failures replayed from .hypothesis/).
# No deadline: the tests bound each call's time themselves; too_slow is off for 2 shared CI cores.
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory) -> Path:
    """Directory holding a tiny catalog in the official layout (+ defects.json)."""
    out = tmp_path_factory.mktemp("tiny") / "sample"
    write_sample(TINY, out)
    return out


@pytest.fixture(scope="session")
def tiny_catalog(tiny_sample) -> pd.DataFrame:
    """The ingested catalog table of the tiny sample (absolute image paths)."""
    catalog, _ = load_catalog(tiny_sample)
    return catalog


@pytest.fixture(scope="session")
def tiny_split(tiny_catalog) -> pd.DataFrame:
    """Catalog rows joined with their split (train/val/test/official_test)."""
    table, _ = split_catalog(tiny_catalog, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    return tiny_catalog.merge(table, on="row_id")


#: fixtures that need the whole tiny DVC project built (minutes): a test using any of them, directly or through
#: another fixture, is marked ``slow`` automatically, so ``-m "not slow"`` stays the fast inner loop
BUILDS_THE_PROJECT = frozenset({"tiny_built_repo"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BUILDS_THE_PROJECT & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_built_repo(tmp_path_factory) -> Path:
    """The project on the tiny profile, built by `dvc repro` and committed, once per session. Tests
    never change it: they work on `tests.helpers.dvc_repo.copy_built_repo` copies."""
    from tests.helpers.dvc_repo import build_tiny_repo

    return build_tiny_repo(tmp_path_factory.mktemp("built") / "repo")


@pytest.fixture
def offline(monkeypatch, tmp_path) -> Path:
    """No hub and empty caches (HF and torch) in ``tmp_path``, which becomes the working directory."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path
