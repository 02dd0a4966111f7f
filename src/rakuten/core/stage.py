"""Entry-point wrapper for stage scripts: logging set-up and one-line errors."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Callable

from rakuten.core.errors import PipelineError
from rakuten.core.logs import setup_logging
from rakuten.core.numerics import late_libraries


def run_stage(main: Callable[[], None]) -> None:
    """Run ``main``; expected failures print one line ``error: ...`` and exit 2.

    Unexpected exceptions still show a traceback: they are bugs, not bad input.
    """
    setup_logging()
    late = late_libraries()
    if late:  # a stage script that imports numpy/cv2 before rakuten: its outputs may differ between machines
        logging.getLogger("rakuten").warning(
            "%s loaded before rakuten, so the numeric pins of rakuten.core.numerics "
            "do not apply to it; import rakuten first",
            ", ".join(late),
        )
    # SIGTERM (dvc, a scheduler, `kill`) unwinds like Ctrl-C, so atomic writes remove their temporaries
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        main()
    except PipelineError as exc:
        logging.getLogger("rakuten").debug("pipeline error", exc_info=True)
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; no partial output was kept\n")
        sys.exit(130)
