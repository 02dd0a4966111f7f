"""The property that lets ``rakuten predict`` stream in chunks, the service batch requests and a cluster split
rows: a model's outputs for a row do not depend on the rows scored with it."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd


def groupings(frame: pd.DataFrame) -> list[list[pd.DataFrame]]:
    """The same rows scored other ways: uneven chunks, each row alone, and all rows in reverse order."""
    n = len(frame)
    cuts = [0, 1, 4, max(5, n // 2), n]
    uneven = [frame.iloc[a:b] for a, b in zip(cuts, cuts[1:]) if a < b]
    alone = [frame.iloc[i : i + 1] for i in range(min(n, 12))]
    return [uneven, alone, [frame.iloc[::-1]]]


def assert_row_invariant(score: Callable[[pd.DataFrame], np.ndarray], frame: pd.DataFrame) -> np.ndarray:
    """``score(frame)`` equals, bit for bit, ``score`` of every grouping of the same rows; returns it."""
    whole = np.asarray(score(frame))
    uneven, alone, reverse = groupings(frame)
    np.testing.assert_array_equal(np.concatenate([score(p) for p in uneven]), whole)
    np.testing.assert_array_equal(np.concatenate([score(p) for p in alone]), whole[: len(alone)])
    np.testing.assert_array_equal(np.asarray(score(reverse[0]))[::-1], whole)
    return whole
