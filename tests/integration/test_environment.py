"""The installed packages are exactly the ones pinned in ``requirements.lock``.

Results are a function of code, params, data *and* the environment: a package that drifted (a newer
torch, scikit-learn or spaCy) changes numbers without any file in the repository changing. This test
fails with the list of packages whose installed version differs from the lock, so CI and a user's
machine can only pass on the locked environment.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

from tests.helpers.stagerun import REPO

LOCK = REPO / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """``{canonical name: version}`` of every ``name==version`` line (comments and ``# via`` lines skipped)."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def test_lock_pins_the_whole_tree():
    pins = read_lock()
    assert len(pins) > 100  # the whole dependency tree, not only the direct dependencies
    for direct in (
        "torch",
        "torchvision",
        "scikit-learn",
        "numpy",
        "pandas",
        "transformers",
        "dvc",
        "spacy",
        "fasttext-wheel",
        "xgboost",
        "pytest",
    ):
        assert direct in pins, f"requirements.lock has no pin for {direct}"


def test_installed_versions_equal_the_lock():
    pins, have = read_lock(), installed()
    wrong = [
        f"{name}: installed {have.get(name, 'nothing')}, locked {version}"
        for name, version in sorted(pins.items())
        if have.get(name) != version
    ]
    assert not wrong, (
        "the environment differs from requirements.lock (reinstall: the README set-up command):\n" + "\n".join(wrong)
    )


def test_lock_reader_sees_a_drift(tmp_path):
    """The comparison itself can fail: a lock pinning another version is reported."""
    lock = tmp_path / "requirements.lock"
    lock.write_text("numpy==0.0.1\n    # via pandas\nPyYAML==6.0.4 ; python_version >= '3'\n")
    assert read_lock(lock) == {"numpy": "0.0.1", "pyyaml": "6.0.4"}
    assert installed()["numpy"] != read_lock(lock)["numpy"]
