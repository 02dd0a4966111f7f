"""The output-path rule of a run (rakuten.core.io.check_run_paths and its helpers) on hand-made folders
(docs/mutation.md): an output never replaces or writes into an input, never overlaps another output,
sits in a folder the program can write, and replaces only this program's own output; the first problem
is one line naming both options, and nothing is touched.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rakuten.core import io as IO
from rakuten.core.errors import PipelineError
from rakuten.core.io import OUTPUT_MARKER, check_run_paths
from tests.helpers.guards import no_hang  # noqa: F401 (fixtures)

INTO = "an output never replaces or writes into an input: choose another"


@pytest.fixture
def ws(tmp_path) -> Path:
    """x.csv (input file), images/ (input folder with a picture), models/ (input folder)."""
    (tmp_path / "x.csv").write_text("a\n")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.jpg").write_bytes(b"jpg")
    (tmp_path / "models").mkdir()
    return tmp_path


def inputs(ws: Path) -> dict[str, Path]:
    return {"--input": ws / "x.csv", "--images": ws / "images", "--models": ws / "models"}


def refused(ins, outs) -> str:
    before = snapshot(ins, outs)
    with pytest.raises(PipelineError) as info:
        check_run_paths(ins, outs)
    assert type(info.value) is PipelineError and "\n" not in str(info.value)
    assert info.value.__cause__ is None  # no chained traceback either way:
    assert info.value.__context__ is None or info.value.__suppress_context__  # from None when re-raised
    assert snapshot(ins, outs) == before  # nothing touched
    return str(info.value)


def snapshot(ins, outs) -> dict:
    # a folder itself, not its parent: the parent of a test's workspace holds every test's files
    roots = {p if p.is_dir() else p.parent for p in [*ins.values(), *(q for q, _ in outs.values())]}
    out = {}
    for root in roots - {Path("/proc")}:
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                out[p] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return out


# --------------------------------------------------------------------------- _same_or_inside


def test_same_or_inside(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "f").write_text("1")
    S = IO._same_or_inside
    assert S(tmp_path / "d", tmp_path / "d") and S(tmp_path / "d" / "e" / "new", tmp_path / "d")
    assert S(tmp_path / "d" / ".." / "f", tmp_path / "f")
    assert not S(tmp_path / "d", tmp_path / "d" / "e")  # a folder is not inside its child
    assert not S(tmp_path / "f", tmp_path / "d") and not S(tmp_path / "dd", tmp_path / "d")
    assert not S(tmp_path / "new", tmp_path / "other")  # neither exists
    assert not S(tmp_path / "f", tmp_path / "other")  # only one exists
    assert not S(tmp_path / "other", tmp_path / "f")


def test_a_hard_link_or_a_symlink_is_the_same_file(tmp_path):
    (tmp_path / "f").write_text("1")
    os.link(tmp_path / "f", tmp_path / "hard")
    os.symlink(tmp_path / "f", tmp_path / "soft")
    (tmp_path / "g").write_text("1")
    assert IO._same_or_inside(tmp_path / "hard", tmp_path / "f")
    assert IO._same_or_inside(tmp_path / "f", tmp_path / "hard")
    assert IO._same_or_inside(tmp_path / "soft", tmp_path / "f")
    assert not IO._same_or_inside(tmp_path / "g", tmp_path / "f")  # equal bytes, another file


def test_a_path_that_cannot_be_inspected_is_not_the_same(tmp_path):
    long = tmp_path / ("x" * 300)  # lstat: ENAMETOOLONG (an OSError)
    with pytest.raises(OSError):
        long.exists()
    (tmp_path / "f").write_text("1")
    assert IO._same_or_inside(long, tmp_path / "f") is False
    assert IO._same_or_inside(tmp_path / "f", long) is False


# --------------------------------------------------------------------------- _writable_parent


def test_a_writable_folder_is_probed_and_left_clean(tmp_path, monkeypatch):
    made = []
    real = IO.tempfile.mkstemp

    def recording(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(IO.tempfile, "mkstemp", recording)
    (tmp_path / "d").mkdir()
    assert IO._writable_parent(tmp_path / "d" / "out.csv") is None
    assert IO._writable_parent(tmp_path / "new" / "deeper" / "out.csv") is None  # nearest existing: tmp_path
    assert IO._writable_parent(tmp_path / "d") is None
    assert made == [
        {"prefix": ".rakuten-probe-", "suffix": ".tmp", "dir": tmp_path / "d"},
        {"prefix": ".rakuten-probe-", "suffix": ".tmp", "dir": tmp_path},
        {"prefix": ".rakuten-probe-", "suffix": ".tmp", "dir": tmp_path},
    ]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["d"]  # no probe left, nothing created


def test_an_unwritable_folder_or_a_file_on_the_way_is_named(tmp_path):
    assert IO._writable_parent(Path("/proc/out.csv")) == Path("/proc")
    assert IO._writable_parent(Path("/proc/no/such/out.csv")) == Path("/proc")
    (tmp_path / "f").write_text("1")
    assert IO._writable_parent(tmp_path / "f" / "out.csv") == tmp_path / "f"
    assert IO._writable_parent(tmp_path / "f" / "a" / "out.csv") == tmp_path / "f"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_a_relative_path_is_probed_where_it_resolves(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    monkeypatch.chdir(tmp_path / "d")
    assert IO._writable_parent(Path("out.csv")) is None
    monkeypatch.chdir("/proc")
    assert IO._writable_parent(Path("out.csv")) == Path("/proc")


# --------------------------------------------------------------------------- check_run_paths


def test_fresh_outputs_pass(ws):
    outs = {
        "--output": (ws / "out" / "p.csv", False),
        "--explain": (ws / "why.txt", False),
        "--work-dir": (ws / "work" / "images", True),
    }
    assert check_run_paths(inputs(ws), outs) is None
    assert check_run_paths({}, {}) is None
    assert sorted(p.name for p in ws.iterdir()) == ["images", "models", "x.csv"]


def test_an_output_may_replace_its_own_earlier_output(ws):
    (ws / "out.csv").write_text("old")
    (ws / "work").mkdir()
    (ws / "work" / OUTPUT_MARKER).write_text("")
    check_run_paths(inputs(ws), {"--output": (ws / "out.csv", False), "--work-dir": (ws / "work", True)})
    assert (ws / "out.csv").read_text() == "old"


@pytest.mark.parametrize(
    "output, is_dir, how, source",
    [
        ("x.csv", False, "is", "--input"),
        ("images", False, "is", "--images"),  # a file output at an input folder
        ("images/p.csv", False, "is inside", "--images"),
        ("images/new/p.csv", False, "is inside", "--images"),
        ("models", True, "is", "--models"),
        ("models/work", True, "is inside", "--models"),
        ("x.csv/sub", True, "is", "--input"),  # inside an input file's path: named as that file
        (".", True, "holds", "--input"),  # a folder output would replace the inputs in it
        ("images/..", True, "holds", "--input"),
    ],
)
def test_an_output_that_is_in_or_holds_an_input_names_both(ws, output, is_dir, how, source):
    ins = inputs(ws)
    message = refused(ins, {"--output": (ws / output, is_dir)})
    assert message == f"--output {ws / output}: {how} {source} {ins[source]}; {INTO} --output"


def test_an_input_missing_so_far_is_still_protected(ws):
    ins = {"--lock": ws / "locks" / "dvc.lock"}
    assert (
        refused(ins, {"--w": (ws / "locks", True)})
        == f"--w {ws / 'locks'}: holds --lock {ws / 'locks' / 'dvc.lock'}; {INTO} --w"
    )
    assert (
        refused(ins, {"--o": (ws / "locks" / "dvc.lock" / "x", False)})
        == f"--o {ws / 'locks' / 'dvc.lock' / 'x'}: is --lock {ws / 'locks' / 'dvc.lock'}; {INTO} --o"
    )


def test_links_to_an_input_are_the_input(ws):
    os.link(ws / "x.csv", ws / "hard.csv")
    os.symlink(ws / "x.csv", ws / "soft.csv")
    os.symlink(ws / "images", ws / "pics")
    for name, how, source in (("hard.csv", "is", "--input"), ("soft.csv", "is", "--input"), ("pics", "is", "--images")):
        assert (
            refused(inputs(ws), {"--output": (ws / name, False)})
            == f"--output {ws / name}: {how} {source} {inputs(ws)[source]}; {INTO} --output"
        )
    ins = {"--images": ws / "pics"}
    assert refused(ins, {"--w": (ws / "images" / "sub", True)}).startswith(f"--w {ws / 'images' / 'sub'}: is inside ")
    assert refused(ins, {"--w": (ws / "images", True)}).startswith(f"--w {ws / 'images'}: is --images ")


def test_a_file_output_above_an_input_is_left_to_the_output_rule(ws):
    """A file output cannot hold an input: the folder it names is refused as a folder."""
    message = refused({"--input": ws / "images" / "1.jpg"}, {"--output": (ws / "images", False)})
    assert message == (
        f"--output {ws / 'images'}: is a directory, expected a file path for the output; nothing was written"
    )


def test_the_first_input_problem_is_named(ws):
    ins = {"--a": ws / "images" / "1.jpg", "--b": ws / "images"}
    assert refused(ins, {"--o": (ws / "images", True)}).startswith(f"--o {ws / 'images'}: holds --a ")
    assert refused(dict(reversed(ins.items())), {"--o": (ws / "images", True)}).startswith(
        f"--o {ws / 'images'}: is --b "
    )


@pytest.mark.parametrize(
    "outs, message",
    [
        (
            {"--output": ("p.csv", False), "--explain": ("p.csv", False)},
            "--output {ws}/p.csv: is also --explain {ws}/p.csv; give each output its own path",
        ),
        (
            {"--explain": ("p.csv", False), "--output": ("p.csv", False)},
            "--explain {ws}/p.csv: is also --output {ws}/p.csv; give each output its own path",
        ),
        (
            {"--explain": ("w/images/e.txt", False), "--work-dir": ("w/images", True)},
            "--explain {ws}/w/images/e.txt: is also --work-dir {ws}/w/images; give each output its own path",
        ),
        (
            {"--work-dir": ("w/images", True), "--explain": ("w/images/e.txt", False)},
            "--explain {ws}/w/images/e.txt: is also --work-dir {ws}/w/images; give each output its own path",
        ),
        ({"--a": ("w", True), "--b": ("w", True)}, "--a {ws}/w: is also --b {ws}/w; give each output its own path"),
        ({"--a": ("w/x", True), "--b": ("w", True)}, "--a {ws}/w/x: is also --b {ws}/w; give each output its own path"),
        (
            {"--a": ("w", True), "--b": ("w/../w/", False)},
            "--a {ws}/w: is also --b {ws}/w/../w; give each output its own path",
        ),
        (
            {"--explain": ("out", False), "--output": ("out/p.csv", False)},  # a file path under another file output
            "--output {ws}/out/p.csv: is also --explain {ws}/out; give each output its own path",
        ),
    ],
)
def test_outputs_of_one_run_do_not_overlap(ws, outs, message):
    given = {k: (ws / p, d) for k, (p, d) in outs.items()}
    assert refused(inputs(ws), given) == message.format(ws=ws)


def test_a_file_output_beside_a_folder_output_passes(ws):
    check_run_paths(
        inputs(ws),
        {
            "--work-dir": (ws / "w" / "images", True),
            "--output": (ws / "w" / "images.csv", False),
            "--explain": (ws / "w" / "x", False),
        },
    )


def test_an_output_in_a_folder_that_cannot_be_written_is_named(ws):
    assert (
        refused(inputs(ws), {"--output": (Path("/proc/p.csv"), False)})
        == "--output /proc/p.csv: cannot write in /proc (not a writable folder); nothing was computed"
    )
    assert refused(inputs(ws), {"--output": (ws / "x.csv" / "p.csv", False)}).startswith(
        f"--output {ws / 'x.csv' / 'p.csv'}: is --input "
    )
    (ws / "f").write_text("1")
    assert (
        refused({}, {"--work-dir": (ws / "f" / "images", True)})
        == f"--work-dir {ws / 'f' / 'images'}: cannot write in {ws / 'f'} (not a writable folder); nothing was computed"
    )


def test_a_stranger_at_the_output_path_is_refused_with_its_option(ws):
    (ws / "mine").mkdir()
    (ws / "mine" / "keep.txt").write_text("precious")
    assert refused(inputs(ws), {"--work-dir": (ws / "mine", True)}) == (
        f"--work-dir {ws / 'mine'}: is an existing directory this pipeline did not write (no {OUTPUT_MARKER} "
        "in it); nothing was written (move it away or choose another path)"
    )
    assert refused(inputs(ws), {"--output": (ws / "mine", False)}) == (
        f"--output {ws / 'mine'}: is a directory, expected a file path for the output; nothing was written"
    )
    os.mkfifo(ws / "fifo")
    assert refused(inputs(ws), {"--explain": (ws / "fifo", False)}) == (
        f"--explain {ws / 'fifo'}: is a FIFO, expected a regular file path for the output; nothing was written"
    )


def test_the_first_output_with_a_problem_is_named(ws):
    (ws / "mine").mkdir()
    outs = {"--ok": (ws / "fine.csv", False), "--work-dir": (ws / "mine", True), "--output": (ws / "x.csv", False)}
    assert refused(inputs(ws), outs).startswith(f"--work-dir {ws / 'mine'}: is an existing directory")
    # each check runs for one output before the next output: the input rule of --output comes later
    outs = {"--output": (ws / "x.csv", False), "--work-dir": (ws / "mine", True)}
    assert refused(inputs(ws), outs).startswith(f"--output {ws / 'x.csv'}: is --input ")
    # per output: inputs, then other outputs, then the folder, then what sits there
    outs = {"--output": (ws / "images", False), "--explain": (ws / "images", False)}
    assert refused(inputs(ws), outs).startswith(f"--output {ws / 'images'}: is --images ")
    outs = {"--output": (Path("/proc/p"), False), "--explain": (Path("/proc/p"), False)}
    assert refused({}, outs).startswith("--output /proc/p: is also --explain /proc/p; ")
    (ws / "f").write_text("1")
    assert refused({}, {"--o": (ws / "f" / "x", False)}).startswith(f"--o {ws / 'f' / 'x'}: cannot write in ")
