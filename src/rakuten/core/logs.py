"""One logging format for every stage and tool."""

from __future__ import annotations

import logging
import os

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str | None = None) -> None:
    """Configure the root logger once (level from ``RAKUTEN_LOG_LEVEL``, default INFO)."""
    level = (level or os.environ.get("RAKUTEN_LOG_LEVEL", "INFO")).upper()
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%H:%M:%S", force=True)
    for noisy in ("PIL", "matplotlib", "urllib3", "filelock", "h5py", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
