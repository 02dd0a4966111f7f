"""Hostile inputs that once destroyed data, hung, exhausted memory or changed ids silently.

Each test here failed on the code before the hardening issue: an output path that removed a
user's directory, owner-only output permissions, a FIFO that blocked ingest, headers that lie
about an image's size, ids parsed through float, an empty or one-class labelled set, and worker
processes that outlived a killed stage.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from rakuten.core.errors import PipelineError
from rakuten.core.image_files import MAX_PIXELS, probe_image, read_image_bytes
from rakuten.core.io import OUTPUT_MARKER, atomic_path, check_output_path, write_csv, write_json
from rakuten.data.ingest import catalog_rows, exact_integers, image_status, load_catalog
from rakuten.image.contact_sheet import CELL, _thumb
from rakuten.image.decode import decode_image

REPO = Path(__file__).resolve().parents[2]


def _jpeg(side: int = 32) -> bytes:
    image = np.full((side, side, 3), 200, np.uint8)
    cv2.circle(image, (side // 2, side // 2), side // 3, (20, 60, 180), -1)
    return cv2.imencode(".jpg", image)[1].tobytes()


def forged_jpeg(width: int, height: int) -> bytes:
    """A small valid JPEG whose start-of-frame header is rewritten to declare ``width`` x ``height``."""
    data = bytearray(_jpeg())
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    data[i + 5 : i + 7] = height.to_bytes(2, "big")
    data[i + 7 : i + 9] = width.to_bytes(2, "big")
    return bytes(data)


def forged_png(width: int, height: int) -> bytes:
    """A PNG header (valid CRC) declaring ``width`` x ``height`` with a few bytes of data."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- outputs never destroy anything


def test_a_file_output_onto_a_directory_is_an_error_and_keeps_the_directory(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    with pytest.raises(PipelineError, match="results: is a directory"):
        write_csv(pd.DataFrame({"a": [1]}), folder)
    assert (folder / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no temporary left either


def test_a_directory_output_replaces_only_its_own_earlier_output(tmp_path):
    users = tmp_path / "users_folder"
    users.mkdir()
    (users / "keep.txt").write_text("mine")
    with pytest.raises(PipelineError, match="did not write"):
        with atomic_path(users, is_dir=True) as tmp:
            (tmp / "x").write_text("1")
    assert (users / "keep.txt").read_text() == "mine" and not (users / "x").exists()
    ours = tmp_path / "ours"
    for content in ("1", "2"):  # written twice: the second run replaces the first, marker and all
        with atomic_path(ours, is_dir=True) as tmp:
            (tmp / "x").write_text(content)
    assert (ours / "x").read_text() == "2" and (ours / OUTPUT_MARKER).is_file()
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    with pytest.raises(PipelineError, match="is a file, expected a directory"):
        with atomic_path(a_file, is_dir=True):
            pass
    assert a_file.read_text() == "mine"


def test_special_files_and_symlinks_at_the_output_path(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(PipelineError, match="pipe.csv: is a FIFO"):
        write_json({"a": 1}, fifo)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    target = tmp_path / "target.json"
    target.write_text("the link's target")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_json({"a": 1}, link)  # the link is replaced by the output; its target is untouched
    assert target.read_text() == "the link's target" and not link.is_symlink()


def test_predict_cli_refuses_an_existing_directory_or_its_input_as_output(tmp_path, capsys):
    from rakuten.serving import cli

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    (tmp_path / "images").mkdir()
    x = tmp_path / "X_new.csv"
    x.write_text(",designation,description,productid,imageid\n0,a,,1,1\n")
    assert (
        cli.main(
            [
                "predict",
                "--input",
                str(x),
                "--images",
                str(tmp_path / "images"),
                "--output",
                str(folder),
                "--models",
                str(tmp_path / "models"),
            ]
        )
        == 2
    )
    assert "out: is a directory" in capsys.readouterr().err
    assert (folder / "notes.txt").read_text() == "keep"
    assert (
        cli.main(
            [
                "predict",
                "--input",
                str(x),
                "--images",
                str(tmp_path / "images"),
                "--output",
                str(x),
                "--models",
                str(tmp_path / "models"),
            ]
        )
        == 2
    )
    assert f"--output {x}: is --input {x}" in capsys.readouterr().err
    assert x.read_text().startswith(",designation")


@pytest.mark.parametrize(
    "case",
    [
        "explain_is_input",
        "explain_is_output",
        "output_in_images",
        "output_is_params",
        "work_dir_is_images",
        "output_in_a_file",
        "unwritable",
        "input_missing",
    ],
)
def test_predict_refuses_every_output_that_is_an_input_or_another_output_before_any_work(tmp_path, capsys, case):
    """One rule for --output, --explain and --work-dir, checked before the models load (here there are
    none: a check that came after loading would fail on the missing models instead)."""
    from rakuten.serving import cli

    (tmp_path / "images").mkdir()
    x = tmp_path / "X_new.csv"
    x.write_text(",designation,description,productid,imageid\n0,a,,1,1\n")
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    (tmp_path / "file").write_text("a file\n")
    out, extra = tmp_path / "out.csv", []
    expected = {
        "explain_is_input": (f"--explain {x}: is --input {x}", lambda: x),
        "explain_is_output": (f"--output {out}: is also --explain {out}", lambda: out),
        "output_in_images": (f"--output {tmp_path / 'images' / 'p.csv'}: is inside --images", None),
        "output_is_params": (f"--output {params}: is --params {params}", None),
        "work_dir_is_images": (f"--work-dir {tmp_path / 'images'}: is --images", None),
        "output_in_a_file": (f"--output {tmp_path / 'file' / 'p.csv'}: cannot write in {tmp_path / 'file'}", None),
        "unwritable": ("--output /proc/p.csv: cannot write in /proc (not a writable folder)", None),
        "input_missing": (f"--input {tmp_path / 'nope.csv'}: file not found", None),
    }[case]
    message, explain_path = expected
    if explain_path is not None:
        extra = ["--explain", str(explain_path())]
    if case == "output_in_images":
        out = tmp_path / "images" / "p.csv"
    if case == "output_is_params":
        out = params
    if case == "work_dir_is_images":
        extra = ["--work-dir", str(tmp_path)]
    if case == "output_in_a_file":
        out = tmp_path / "file" / "p.csv"
    if case == "unwritable":
        out = Path("/proc/p.csv")
    if case == "input_missing":
        x = tmp_path / "nope.csv"
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert (
        cli.main(
            [
                "predict",
                "--input",
                str(x),
                "--images",
                str(tmp_path / "images"),
                "--output",
                str(out),
                "--params",
                str(params),
                "--models",
                str(tmp_path / "models"),
                *extra,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written


def test_outputs_get_the_usual_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        write_json({"a": 1}, tmp_path / "report.json")
        with atomic_path(tmp_path / "model", is_dir=True) as tmp:
            (tmp / "weights.bin").write_bytes(b"0")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "model" / "weights.bin").stat().st_mode) == 0o644


def test_a_concurrent_runs_temporary_is_not_removed(tmp_path):
    alive = tmp_path / f".out.json.rakuten-{os.getpid()}-x.tmp"  # this process is alive: not stale
    alive.write_text("another run is still writing this")
    write_json({"a": 1}, tmp_path / "out.json")
    assert alive.exists()


# ---------------------------------------------------------------- images: regular files, bounded size


def test_a_fifo_where_an_image_is_expected_does_not_hang(tmp_path):
    """Run in a subprocess with a deadline: the old open() blocked forever on a FIFO without writer."""
    fifo = tmp_path / "image_1_product_1.jpg"
    os.mkfifo(fifo)
    code = textwrap.dedent(f"""
        from rakuten.data.ingest import image_status
        from rakuten.image.decode import decode_image
        print(image_status({str(fifo)!r}), decode_image({str(fifo)!r}, 64, 16).status)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["not_a_file", "not_a_file"], result.stderr


def test_ingest_names_a_special_file_and_its_row(tiny_sample, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_sample, raw)
    x = pd.read_csv(raw / "X_train_update.csv", index_col=0)
    image = raw / "images" / "image_train" / f"image_{x.iloc[3]['imageid']}_product_{x.iloc[3]['productid']}.jpg"
    image.unlink()
    os.mkfifo(image)
    with pytest.raises(PipelineError) as info:
        load_catalog(raw)
    assert str(info.value) == (
        f"{image}: image not a regular file for X_train_update.csv row {x.index[3]}; "
        "expected a readable JPEG (set ingest.on_bad_image: flag to keep such rows for "
        "text-only prediction)"
    )
    catalog, report = load_catalog(raw, on_bad_image="flag")
    assert not catalog.loc[3, "image_ok"] and report.images_unreadable == 1


@pytest.mark.parametrize(
    "data",
    [forged_jpeg(36000, 30000), forged_jpeg(20000, 20000), forged_png(40000, 40000)],
    ids=["jpeg-36000x30000", "jpeg-20000x20000", "png-40000x40000"],
)
def test_images_that_declare_too_many_pixels_are_oversized_everywhere(tmp_path, data):
    path = tmp_path / "image_1_product_1.jpg"
    path.write_bytes(data)
    assert probe_image(path) == "oversized" and image_status(path) == "oversized"
    for grey in (False, True):
        decoded = decode_image(path, 224, 16, grey=grey)
        assert decoded.image is None and decoded.status == "oversized"
    thumb = _thumb(str(path), "caption")  # the contact sheet: a placeholder, no crash, no full decode
    assert thumb.shape == (CELL + 18, CELL, 3)


def test_the_pixel_budget_allows_a_large_real_photo(tmp_path):
    path = tmp_path / "big.jpg"
    side = 4000  # 16 MP, within the budget: decoded at reduced size
    assert side * side <= MAX_PIXELS
    path.write_bytes(cv2.imencode(".jpg", np.full((side, side, 3), 180, np.uint8))[1].tobytes())
    decoded = decode_image(path, 224, 16)
    assert decoded.status == "ok" and decoded.image.shape[:2] == (1000, 1000)  # libjpeg 1/4 scale


def test_a_signature_followed_by_garbage_is_unreadable_at_ingest(tiny_sample, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_sample, raw)
    x = pd.read_csv(raw / "X_train_update.csv", index_col=0)
    image = raw / "images" / "image_train" / f"image_{x.iloc[0]['imageid']}_product_{x.iloc[0]['productid']}.jpg"
    for garbage in (b"\xff\xd8\xff\xe0" + b"0" * 200, b"RIFF" + b"\x00" * 200):
        image.write_bytes(garbage)
        assert image_status(image) == "unreadable"
        with pytest.raises(PipelineError, match="image unreadable"):
            load_catalog(raw)


def test_read_image_bytes_statuses(tmp_path):
    assert read_image_bytes(tmp_path / "absent.jpg") == (None, "missing")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert read_image_bytes(tmp_path / "empty.jpg") == (None, "unreadable")
    assert read_image_bytes(tmp_path) == (None, "not_a_file")
    (tmp_path / "ok.jpg").write_bytes(_jpeg())
    assert read_image_bytes(tmp_path / "ok.jpg") == (_jpeg(), "ok")


# ---------------------------------------------------------------- ids: exact integers or one line


def _x(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "designation": ["t"] * len(ids),
            "description": [None] * len(ids),
            "productid": ids,
            "imageid": ["5"] * len(ids),
        },
        index=list(range(100, 100 + len(ids))),
    )


def test_ids_beyond_64_bits_are_an_error_naming_file_row_and_value(tmp_path):
    big = str(2**64 + 5)
    with pytest.raises(PipelineError) as info:
        catalog_rows(_x(["1", big]), tmp_path / "X_new.csv", tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'X_new.csv'}: row 101, column productid: '{big}' is out of range; "
        "expected a whole number in [0, 2**63 - 1]"
    )


def test_ids_above_2_53_and_with_a_zero_fraction_stay_exact(tmp_path):
    exact = 2**53 + 1  # float64 would turn it into 2**53
    (tmp_path / f"image_5_product_{exact}.jpg").write_bytes(_jpeg())
    (tmp_path / "image_5_product_77.jpg").write_bytes(_jpeg())
    rows, status = catalog_rows(_x([str(exact), "77.0"]), tmp_path / "X_new.csv", tmp_path)
    assert rows["productid"].tolist() == [exact, 77] and rows["productid"].dtype == np.int64
    assert status.tolist() == ["ok", "ok"]  # each row points at its own image
    assert rows["image_path"].iloc[0].endswith(f"image_5_product_{exact}.jpg")


@pytest.mark.parametrize("value", ["-3", "1.5", "1e5", "0x1F", "", "12 34"])
def test_values_that_are_not_ids(value, tmp_path):
    with pytest.raises(PipelineError, match="row 101, column productid: .* is not an integer id"):
        exact_integers(_x(["1", value])["productid"], tmp_path / "X.csv", "productid")


def test_a_bad_index_is_named_by_its_data_row(tiny_sample, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_sample, raw)
    lines = (raw / "X_test_update.csv").read_text().splitlines()
    lines[2] = "99999999999999999999999" + lines[2][lines[2].index(",") :]
    (raw / "X_test_update.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(PipelineError, match=r"X_test_update.csv: data row 2, column index: '9+' is out of range"):
        load_catalog(raw)


# ---------------------------------------------------------------- labelled sets nothing can learn from


def test_an_empty_or_one_class_labelled_set_stops_at_ingest(tiny_sample, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_sample, raw)
    x = pd.read_csv(raw / "X_train_update.csv", index_col=0)
    y = pd.read_csv(raw / "Y_train_CVw08PX.csv", index_col=0)
    x.iloc[:0].to_csv(raw / "X_train_update.csv")
    y.iloc[:0].to_csv(raw / "Y_train_CVw08PX.csv")
    with pytest.raises(PipelineError, match="X_train_update.csv: a header but no rows"):
        load_catalog(raw)
    one = y.index[y["prdtypecode"] == 10]
    x.loc[one].to_csv(raw / "X_train_update.csv")
    y.loc[one].to_csv(raw / "Y_train_CVw08PX.csv")
    with pytest.raises(PipelineError, match="every labelled row has class 10; expected at least 2 classes"):
        load_catalog(raw)


# ---------------------------------------------------------------- workers die with their parent


def test_pool_workers_die_when_the_stage_is_killed(tmp_path):
    pids = tmp_path / "pids"
    code = textwrap.dedent(f"""
        import os, time
        from rakuten.core.parallel import process_pool

        def work(_):
            with open({str(pids)!r}, "a") as fh:
                fh.write(f"{{os.getpid()}}\\n")
            time.sleep(120)

        if __name__ == "__main__":
            with process_pool(2) as pool:
                list(pool.map(work, range(2)))
    """)
    script = tmp_path / "stage.py"
    script.write_text(code)
    parent = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 60
    while time.time() < deadline and (not pids.exists() or len(pids.read_text().split()) < 2):
        time.sleep(0.1)
    workers = [int(p) for p in pids.read_text().split()]
    assert len(workers) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), "workers outlived their killed parent"


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return status != "Z"


def test_every_pool_in_the_package_dies_with_its_parent():
    """No module creates a ProcessPoolExecutor of its own: they all come from rakuten.core.parallel."""
    offenders = [
        p.relative_to(REPO).as_posix()
        for p in (REPO / "src" / "rakuten").rglob("*.py")
        if p.name != "parallel.py" and "ProcessPoolExecutor" in p.read_text()
    ]
    assert offenders == []


def test_check_output_path_accepts_a_new_path(tmp_path):
    check_output_path(tmp_path / "new" / "file.csv", is_dir=False)
    check_output_path(tmp_path / "new_dir", is_dir=True)


# ---------------------------------------------------------------- CSV shapes found by trying them


def test_csv_header_with_a_repeated_column_is_named(tmp_path):
    from rakuten.data.ingest import X_COLUMNS, read_official_csv

    path = tmp_path / "X.csv"
    path.write_text(",designation,designation,productid,imageid\n0,a,b,1,1\n")
    with pytest.raises(PipelineError, match="column 'designation' appears more than once"):
        read_official_csv(path, X_COLUMNS)


def test_csv_with_old_mac_line_ends_is_read(tmp_path):
    from rakuten.data.ingest import X_COLUMNS, read_official_csv

    path = tmp_path / "X.csv"
    path.write_bytes(b",designation,description,productid,imageid\r0,a,,1,1\r1,b,d,2,2\r")
    df = read_official_csv(path, X_COLUMNS)
    assert df.index.tolist() == [0, 1] and df["designation"].tolist() == ["a", "b"]


def test_a_csv_path_that_is_a_folder_or_a_fifo_is_named_not_read(tmp_path):
    from rakuten.data.ingest import X_COLUMNS, read_official_csv

    fifo = tmp_path / "X.csv"
    os.mkfifo(fifo)  # reading it would block forever
    for path in (tmp_path, fifo):
        with pytest.raises(PipelineError, match="not a regular file; expected a CSV file"):
            read_official_csv(path, X_COLUMNS)
