"""Model frames for the deep-model tests, built from the tiny catalog.

Stand-ins for the upstream stage files: ``text_light`` = designation + description with tags
stripped (text_clean's column), ``clean_path`` = the original image (image_clean's column), every
image readable and kept with weight 1.
"""

from __future__ import annotations

import pandas as pd


def model_frame(tiny_split: pd.DataFrame) -> pd.DataFrame:
    frame = tiny_split.copy()
    text = frame["designation"].fillna("").astype(str) + " " + frame["description"].fillna("").astype(str)
    frame["text_light"] = text.str.replace(r"<[^>]+>", " ", regex=True).str.split().str.join(" ")
    frame["clean_path"] = frame["image_path"].astype(str)
    frame["readable"] = True
    frame["keep_for_train"] = True
    frame["sample_weight"] = 1.0
    return frame


def parts(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, val, test) rows."""
    return tuple(frame[frame["split"] == s].reset_index(drop=True) for s in ("train", "val", "test"))
