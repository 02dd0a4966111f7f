"""Fixtures shared by the fast mutation tests (tests/test_mutation_*.py): a deadline and a C locale."""

from __future__ import annotations

import locale
import signal
import threading

import pytest


@pytest.fixture(autouse=True)
def no_hang():
    """A hang (a FIFO opened for reading, a mutant's loop that never ends) fails the test in 5 s instead of
    blocking the run or reaching mutmut's timeout: SIGALRM interrupts the blocked call or the loop.
    Imported into a test module, it applies to every test there."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TimeoutError("hung for 5 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def ascii_locale():
    """LC_CTYPE=C for the test: the locale's encoding is ASCII, so only an explicit UTF-8 reads non-ASCII text."""
    old = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, old)
