"""Texts in, token ids out: the input column of a frame, its tokenisation, the dataset the Trainer reads.

Nothing is padded here: batches are padded to their own longest row (dynamic padding) by the collator.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch

from rakuten.core.errors import PipelineError


class EncodedTexts(torch.utils.data.Dataset):
    """Pre-tokenised texts (+ label indices) for the Trainer; padding happens per batch."""

    def __init__(self, encodings: Mapping[str, list], labels: np.ndarray | None = None):
        self.encodings = encodings
        self.labels = labels

    def __len__(self) -> int:
        return len(self.encodings["input_ids"])

    def __getitem__(self, i: int) -> dict:
        item = {key: values[i] for key, values in self.encodings.items()}
        if self.labels is not None:
            item["labels"] = int(self.labels[i])
        return item


def frame_texts(frame: pd.DataFrame, column: str) -> list[str]:
    """The model's input texts; a missing column is a one-line error naming the stage that makes it."""
    if column not in frame.columns:
        raise PipelineError(
            f"model frame: missing column {column}; expected the text_clean columns (data/processed/text.parquet)"
        )
    return frame[column].fillna("").astype(str).tolist()


def encode(tokenizer, texts: list[str], max_length: int) -> dict[str, list]:
    """Token ids (and attention masks) of ``texts``, truncated at ``max_length`` tokens, unpadded."""
    return dict(tokenizer(texts, truncation=True, max_length=max_length))
