"""Before/after contact sheets, one PNG per defect type, so a person can see what cleaning did.

* ``blur``, ``red_cast``, ``border``: one line per flagged image: the source as published, then
  the cleaned output, captioned with the score that triggered the action;
* ``exact_duplicates``, ``near_duplicates``: one line per cluster: its members as published,
  captioned with the row, its label and what the duplicate policy did (kept / dropped / weight).

Examples are the first flagged rows in row order (deterministic).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from rakuten.core.io import atomic_path
from rakuten.image.correct import placeholder, resize_square, to_square
from rakuten.image.decode import decode_image

CELL = 160
CAPTION = 18
MAX_MEMBERS = 5


def _thumb(path: str, caption: str) -> np.ndarray:
    # the guarded reader at thumbnail size: a huge or lying source never costs more than a cell
    image = decode_image(path, CELL, 1, digest=False).image if path else None
    image = placeholder(CELL) if image is None else resize_square(to_square(image), CELL)
    canvas = np.full((CELL + CAPTION, CELL, 3), 255, np.uint8)
    canvas[:CELL] = image
    cv2.putText(canvas, caption[:26], (3, CELL + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def _sheet(lines: list[list[np.ndarray]], title: str) -> np.ndarray:
    width = max(len(line) for line in lines) * (CELL + 4) if lines else 4 * CELL
    rows = [np.full((26, width, 3), 255, np.uint8)]
    cv2.putText(rows[0], title, (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    for line in lines:
        strip = np.full((CELL + CAPTION + 4, width, 3), 255, np.uint8)
        for k, cell in enumerate(line):
            strip[2 : 2 + cell.shape[0], k * (CELL + 4) : k * (CELL + 4) + CELL] = cell
        rows.append(strip)
    if not lines:
        empty = np.full((40, width, 3), 255, np.uint8)
        cv2.putText(empty, "no image flagged", (4, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
        rows.append(empty)
    return np.vstack(rows)


def _policy(row: pd.Series) -> str:
    if not row["keep_for_train"]:
        return "dropped"
    return f"w={row['sample_weight']:.2f}" if row["sample_weight"] < 1 else "kept"


def contact_sheets(
    table: pd.DataFrame, sources: list[str], labels: list | None = None, examples: int = 8
) -> dict[str, np.ndarray]:
    """BGR sheet per defect type; ``sources`` (original image paths) and ``labels`` align with rows."""
    table = table.reset_index(drop=True)
    labels = labels if labels is not None else [None] * len(table)
    sheets: dict[str, np.ndarray] = {}
    for name, column, score in (
        ("blur", "is_blurry", "blur_score"),
        ("red_cast", "is_red_cast", "red_ratio"),
        ("border", "has_border", "border_fraction"),
    ):
        lines = []
        for i in np.flatnonzero(table[column].to_numpy(bool))[:examples]:
            row = table.loc[i]
            lines.append(
                [
                    _thumb(sources[i], f"before {score}={row[score]:.3g}"),
                    _thumb(row["clean_path"], f"after {row['actions']}"),
                ]
            )
        sheets[name] = _sheet(lines, f"{name}: source | cleaned ({int(table[column].sum())} flagged)")
    exact = table["exact_dup_group"].to_numpy()
    for name in ("exact_duplicates", "near_duplicates"):
        group_col = "exact_dup_group" if name == "exact_duplicates" else "near_dup_group"
        groups = table[group_col].to_numpy()
        # members of every group at once (by group id, then row): scanning ``groups == g`` for each
        # group costs rows x groups when most clusters are skipped (only exact copies)
        grouped = np.flatnonzero(groups >= 0)
        grouped = grouped[np.argsort(groups[grouped], kind="stable")]
        lines = []
        for members in np.split(grouped, np.flatnonzero(np.diff(groups[grouped])) + 1) if len(grouped) else []:
            if (
                name == "near_duplicates"
                and len({int(exact[m]) if exact[m] >= 0 else -1 - int(m) for m in members}) < 2
            ):
                continue  # only exact copies: shown on the other sheet
            line = []
            for m in members[:MAX_MEMBERS]:
                row = table.loc[m]
                label = "" if labels[m] is None or pd.isna(labels[m]) else f" c{labels[m]}"
                line.append(_thumb(sources[m], f"r{row['row_id']}{label} {_policy(row)}"))
            lines.append(line)
            if len(lines) >= examples:
                break
        sheets[name] = _sheet(lines, f"{name}: cluster members as published, policy for training")
    return sheets


def write_contact_sheets(sheets: dict[str, np.ndarray], out_dir: str | os.PathLike) -> None:
    """Write ``<out_dir>/<defect>.png`` atomically (the directory is replaced as a whole)."""
    with atomic_path(Path(out_dir), is_dir=True) as tmp:
        for name, image in sheets.items():
            ok, buf = cv2.imencode(".png", image)
            (tmp / f"{name}.png").write_bytes(buf.tobytes())
