"""`rakuten check`: special files in the input folders are named before DVC hangs on them.

DVC opens every file of a folder dependency to hash it, so a FIFO in data.raw_dir makes `dvc repro` and
`dvc status` block forever without a word. Every call that could open a FIFO runs in a daemon thread
with a deadline here: a regression fails in a second instead of hanging the suite.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from rakuten.core.errors import PipelineError
from rakuten.data.checks import check_inputs, input_paths
from rakuten.data.ingest import X_COLUMNS, read_official_csv
from rakuten.serving import cli

DVC_YAML = {
    "stages": {
        "ingest": {
            "cmd": "python ingest.py",
            "deps": ["ingest.py", "${data.raw_dir}", "extra", "built/part"],
            "outs": ["interim"],
        },
        "build": {
            "cmd": "python build.py",
            "deps": ["interim"],
            "outs": [{"built": {"cache": False}}],
            "metrics": [{"reports/m.json": {"cache": False}}],
        },
    }
}


def _within(seconds: float, fifos: list[Path], call: Callable[[], Any]) -> Any:
    """``call()``'s result, or a test failure if it has not returned after ``seconds`` (a blocked
    ``open`` of one of ``fifos`` is then released by opening its write end)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        thread.join(5)
        pytest.fail(f"still running after {seconds} s: it opened a FIFO")
    assert time.monotonic() - started < seconds
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    """A project folder (params.yaml, dvc.yaml, a raw folder with a few files) as the working directory."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "raw", "raw_dir": "data/raw"}}))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    (tmp_path / "ingest.py").write_text("")
    raw = tmp_path / "data" / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "X_train_update.csv").write_text(",designation,description,productid,imageid\n")
    (raw / "images" / "a.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "notes.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    cli.build_parser()  # imports `serve` once (seconds), outside the timed calls
    return tmp_path


def _check(capsys, *args: str) -> tuple[int, list[str]]:
    """Exit code and stderr lines of ``rakuten check``, log lines (timestamped) left out."""
    code = cli.main(["check", *args])
    return code, [line for line in capsys.readouterr().err.splitlines() if not line[:1].isdigit()]


def test_a_fifo_in_the_raw_folder_is_named_within_a_second(project, capsys):
    fifo = Path("data/raw/images/b.jpg")
    os.mkfifo(fifo)
    code, lines = _within(1.0, [fifo], lambda: _check(capsys))
    assert code == 2
    assert lines == [
        f"error: {fifo}: is a FIFO (named pipe); DVC would block or read forever hashing it "
        "(remove it, or move it out of the data folder)"
    ]


def test_a_clean_project_is_ok_and_counts_its_files(project, capsys):
    assert cli.main(["check"]) == 0
    err = capsys.readouterr().err
    assert (
        "rakuten.serving.cli: ok: 4 files checked (3 paths)" in err and "error" not in err
    )  # ingest.py, 2 raw files, notes


def test_the_inputs_are_the_raw_dir_and_the_deps_no_stage_writes(project):
    params = yaml.safe_load(Path("params.yaml").read_text())
    assert input_paths(Path("."), params, "data/raw") == [Path("data/raw"), Path("extra"), Path("ingest.py")]


def test_every_offender_gets_its_own_line_and_outputs_are_not_walked(project, capsys):
    raw = Path("data/raw")
    os.mkfifo(raw / "pipe")
    (raw / "gone.jpg").symlink_to("nowhere.jpg")
    (raw / "passwd").symlink_to("/etc/passwd")
    (raw / "zero").symlink_to("/dev/null")
    (raw / "ok.jpg").symlink_to("images/a.jpg")  # a link inside the project is fine
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(project / "extra" / "sock"))
    Path("built").mkdir()
    os.mkfifo("built/part")  # a stage output (even if another stage depends on it): DVC does not hash it as input
    try:
        code, lines = _within(2.0, [raw / "pipe", Path("built/part")], lambda: _check(capsys))
    finally:
        server.close()
    assert code == 2
    assert lines == [
        "error: data/raw/gone.jpg: symbolic link to nowhere.jpg, which does not exist; "
        "expected an existing file or folder (remove the link)",
        "error: data/raw/passwd: symbolic link to /etc/passwd, outside the project; expected files inside the "
        "project (copy the file in, or remove the link)",
        "error: data/raw/pipe: is a FIFO (named pipe); DVC would block or read forever hashing it "
        "(remove it, or move it out of the data folder)",
        "error: data/raw/zero: is a symbolic link to /dev/null, which is a character device; DVC would block or "
        "read forever hashing it (remove it, or move it out of the data folder)",
        "error: extra/sock: is a socket; DVC would block or read forever hashing it "
        "(remove it, or move it out of the data folder)",
    ]


def test_a_link_to_a_fifo_elsewhere_in_the_project_is_refused(project):
    (project / "spool").mkdir()
    os.mkfifo(project / "spool" / "pipe")  # outside every input: only reached through the link
    (project / "data" / "raw" / "feed.csv").symlink_to(project / "spool" / "pipe")
    result = _within(1.0, [project / "spool" / "pipe"], lambda: check_inputs([Path("data/raw")], Path(".")))
    assert result.files == 2 and result.problems == [
        f"data/raw/feed.csv: is a symbolic link to {os.path.realpath(project / 'spool' / 'pipe')}, which is a FIFO "
        "(named pipe); DVC would block or read forever hashing it (remove it, or move it out of the data folder)"
    ]


def test_a_symlinked_raw_folder_may_live_elsewhere_and_loops_end(project, tmp_path_factory, capsys):
    elsewhere = tmp_path_factory.mktemp("disk") / "raw"
    elsewhere.mkdir()
    (elsewhere / "x.csv").write_text("")
    (elsewhere / "again").symlink_to(elsewhere)  # a loop back to the folder itself
    Path("data/raw2").symlink_to(elsewhere)
    code, lines = _check(capsys, "data/raw2")
    assert code == 0 and lines == []
    Path("data/raw3").symlink_to(elsewhere.parent / "unmounted")  # the other disk is not there
    assert _check(capsys, "data/raw3") == (
        2,
        [
            f"error: data/raw3: symbolic link to {elsewhere.parent / 'unmounted'}, which does not exist; "
            "expected an existing file or folder (remove the link)"
        ],
    )


def test_given_folders_replace_the_dvc_inputs_and_a_missing_params_file_is_one_line(project, capsys):
    os.mkfifo("data/raw/pipe")
    assert _check(capsys, "extra") == (0, [])
    code, lines = _check(capsys, "--params", "nope.yaml")
    assert code == 2 and lines == ["error: nope.yaml: params file not found (run from the repository root)"]


def test_the_stages_readers_refuse_a_fifo_without_opening_it(tmp_path):
    """The pipeline itself never blocks on a FIFO (images: tests/integration/test_hardening.py); only DVC does."""
    fifo = tmp_path / "X_train_update.csv"
    os.mkfifo(fifo)
    with pytest.raises(PipelineError, match=r"X_train_update.csv: not a regular file; expected a CSV file$"):
        _within(1.0, [fifo], lambda: read_official_csv(fifo, X_COLUMNS))


def test_a_params_file_that_is_a_fifo_is_one_line(project, capsys):
    os.mkfifo("pipe.yaml")
    code, lines = _within(1.0, [Path("pipe.yaml")], lambda: _check(capsys, "--params", "pipe.yaml"))
    assert code == 2 and lines == ["error: pipe.yaml: not a regular file; expected the YAML params file"]
