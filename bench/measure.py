"""Process-level measurements shared by the benchmark scripts (``python bench/<name>.py`` puts this
folder on ``sys.path``, so they import it as ``measure``)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def cpu_s() -> float:
    """CPU seconds of this process and its finished workers: rates that other users' load on a
    shared machine distorts less than wall-clock rates."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def peak_rss_mib() -> dict[str, float]:
    """Peak RSS of this process (``self``) and of its largest finished worker (``children``), MiB."""
    return {
        who: round(resource.getrusage(flag).ru_maxrss / 1024, 1)
        for who, flag in (("self", resource.RUSAGE_SELF), ("children", resource.RUSAGE_CHILDREN))
    }


def run_in_own_process(argv: list[str], show_progress: bool = True) -> dict:
    """Run ``python <argv>`` (one benchmark size, so its peak RSS is its own) and return the JSON
    object it prints on its last stdout line; a failure stops the benchmark with one line."""
    done = subprocess.run(
        [sys.executable, *argv], stdout=subprocess.PIPE, text=True, stderr=None if show_progress else subprocess.PIPE
    )
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)}: failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """The lines of a Markdown table: ``header``, its separator, one line per row (cells as ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
