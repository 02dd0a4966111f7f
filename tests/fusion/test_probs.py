"""The fused tables' row operations."""

from __future__ import annotations

import numpy as np
import pandas as pd


def test_weighted_sum_is_the_soft_vote_and_row_invariant():
    """Element-wise in model order: the same bits for a row alone, in chunks or reversed, unlike a BLAS
    tensordot whose sum order depends on the row's position."""
    from rakuten.fusion.probs import weighted_sum
    from tests.helpers.row_invariance import assert_row_invariant

    rng = np.random.default_rng(0)
    mats = [rng.dirichlet(np.ones(27), size=500) for _ in range(5)]
    w = np.array([0.15, 0.15, 0.15, 0.25, 0.3])
    np.testing.assert_allclose(weighted_sum(w, mats), np.tensordot(w, np.stack(mats), axes=1), rtol=0, atol=1e-15)
    index = pd.DataFrame({"i": np.arange(500)})
    assert_row_invariant(lambda f: weighted_sum(w, [m[f["i"].to_numpy()] for m in mats]), index)
