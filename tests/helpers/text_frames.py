"""Model frames for the text model tests: the tiny catalog's split rows joined with text_clean output."""

from __future__ import annotations

import pandas as pd

from rakuten.core.config import parse_section
from rakuten.text.text_clean import TextCleanConfig, clean_frame
from tests.helpers.stagerun import default_params, with_overrides

_FRAMES: dict[int, pd.DataFrame] = {}


def text_model_frame(tiny_split: pd.DataFrame) -> pd.DataFrame:
    """``tiny_split`` joined with its text_clean columns (computed once per session-scoped fixture)."""
    key = id(tiny_split)
    if key not in _FRAMES:
        section = with_overrides(default_params(), {"text_clean.n_jobs": 1})["text_clean"]
        cfg = parse_section(TextCleanConfig, section, "text_clean")
        _FRAMES[key] = tiny_split.merge(clean_frame(tiny_split, cfg), on="row_id")
    return _FRAMES[key].copy()


def write_stage_inputs(workdir, tiny_split: pd.DataFrame, frame: pd.DataFrame) -> None:
    """The files a text model stage reads (catalog, split and training split, text.parquet and text_clean's
    record of its params), written under ``workdir``."""
    from rakuten.contracts.preprocessing import write_record
    from rakuten.core.config import from_params
    from rakuten.text.text_clean import TEXT_COLUMNS, TextCleanConfig

    (workdir / "data/interim").mkdir(parents=True, exist_ok=True)
    (workdir / "data/processed").mkdir(parents=True, exist_ok=True)
    catalog_columns = [c for c in tiny_split.columns if c not in ("split", "group_id")]
    tiny_split[catalog_columns].to_parquet(workdir / "data/interim/catalog.parquet", index=False)
    for name in ("split", "training_split"):  # the split stage's, and label_audit's (what model stages read)
        tiny_split[["row_id", "split", "group_id"]].to_parquet(workdir / f"data/interim/{name}.parquet", index=False)
    frame[list(TEXT_COLUMNS)].to_parquet(workdir / "data/processed/text.parquet", index=False)
    write_record(
        "text_clean",
        from_params(TextCleanConfig, default_params(), "text_clean"),
        workdir / "data/processed/text_clean.json",
    )
