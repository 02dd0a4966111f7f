"""Shared fixtures: one tiny generated catalog per test session, ingested and split.

Tiny on purpose (27 classes x a few rows, 64 px images): the whole suite must stay well under
15 minutes on 2 cores.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rakuten.data.catalog import load_catalog
from rakuten.data.sample import SampleConfig, write_sample
from rakuten.data.split import split_catalog

TINY = SampleConfig(n_train=540, n_test=60, image_size=64, seed=7, n_jobs=1)


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
