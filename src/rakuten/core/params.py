"""Reading ``params.yaml``: the whole file as a mapping of sections.

Each section is then parsed by its typed declaration (:mod:`rakuten.core.config`), whose errors name
the dotted key, the value and what was expected, e.g.
``params.yaml: split.val = 1.5, expected a number in [0.0, 1.0]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from rakuten.core.errors import PipelineError

PARAMS_FILE = "params.yaml"


def load_params(path: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    """Load the whole params file; one clear line if it is missing or not a mapping."""
    path = Path(path)
    if path.exists() and not path.is_file():  # stat only: reading a FIFO would block forever
        raise PipelineError(f"{path}: not a regular file; expected the YAML params file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{path}: params file not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a mapping of stage sections at top level")
    return data
