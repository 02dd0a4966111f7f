"""Where the catalog comes from: the ``data`` and ``ingest`` params sections.

Kept apart from :mod:`rakuten.data.ingest` so that stages which only need to know the source
(``sample``, ``image_clean``, ``evaluate``) do not depend on the loader.
"""

from __future__ import annotations

from dataclasses import dataclass

from rakuten.core.config import knob

SAMPLE_DIR = "data/sample"  # where the `sample` stage writes the generated catalog


@dataclass(frozen=True)
class DataConfig:
    """``data``: which catalog the pipeline runs on."""

    source: str = knob(
        "sample",
        "sample = the generated catalog in data/sample/; raw = the real files in raw_dir",
        choices=("sample", "raw"),
    )
    raw_dir: str = knob(
        "data/raw",
        "the real files in the official layout (docs/data.md; README: Running on the real data)",
        nonempty=True,
    )

    @property
    def root(self) -> str:
        """The directory holding the official layout for this source."""
        return SAMPLE_DIR if self.source == "sample" else self.raw_dir


@dataclass(frozen=True)
class IngestConfig:
    """``ingest``: what to do with rows whose image cannot be used."""

    on_bad_image: str = knob(
        "error",
        "error = stop on a missing/unreadable image; flag = keep the row, image_ok=false",
        choices=("error", "flag"),
    )
