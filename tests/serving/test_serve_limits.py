"""The service's limits (rakuten.serving.serve.limits): declared once with knob(), from which `rakuten serve`
builds its options and a params file's ``serve`` section is checked; the options override the section."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import yaml

from rakuten.core.config import defaults, iter_knobs, knob_of
from rakuten.core.errors import PipelineError
from rakuten.serving import cli
from rakuten.serving.serve import server
from rakuten.serving.serve.limits import SECTION, ServeLimits

DEFAULTS = {
    "max_image_mb": 10.0,
    "max_image_pixels": 40_000_000,
    "max_text_chars": 100_000,
    "max_batch_rows": 10_000,
    "max_batch_mb": 500.0,
    "chunk_rows": 256,
    "max_pending": 32,
    "max_batch_size": 32,
    "max_batch_delay_ms": 10.0,
    "max_connections": 1000,
    "header_timeout_s": 10.0,
    "body_timeout_s": 30.0,
    "keep_alive_s": 5.0,
    "log_every_s": 10.0,
}


def serve_action(name: str):
    """The argparse action of `rakuten serve`'s option for knob ``name``."""
    commands = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return next(a for a in commands.choices["serve"]._actions if a.dest == name)


def test_the_declared_defaults_are_the_services_defaults():
    assert SECTION == "serve"
    assert defaults(ServeLimits) == DEFAULTS
    assert all(knob_of(f).runtime for f in dataclasses.fields(ServeLimits))  # they never change a prediction


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_each_knob_is_an_option_with_its_help_and_default(name):
    declared = {n: k for n, _, k in iter_knobs(ServeLimits)}[name]
    action = serve_action(name)
    assert action.option_strings == ["--" + name.replace("_", "-")]
    assert action.help == f"{declared.help} (default: {DEFAULTS[name]})"
    assert action.default is None  # not given: the params file's value, else the declared default


def test_a_changed_declaration_changes_the_option(monkeypatch):
    """Help and bounds come from the knob: nothing about a limit is written twice."""
    field = next(f for f in dataclasses.fields(ServeLimits) if f.name == "max_pending")
    changed = dataclasses.replace(knob_of(field), help="how many may wait", lo=5)
    monkeypatch.setattr(field, "metadata", {"knob": changed})
    assert serve_action("max_pending").help == "how many may wait (default: 32)"
    args = cli.build_parser().parse_args(["serve", "--max-pending", "4"])
    with pytest.raises(PipelineError, match=r"^--max-pending = 4, expected an integer in \[5, inf\]$"):
        cli.serve_limits(args, None, "params.yaml")


def test_options_are_parsed_by_the_declarations():
    args = cli.build_parser().parse_args(["serve", "--max-pending", "3", "--max-image-mb", "2", "--chunk-rows", "7"])
    limits = cli.serve_limits(args, None, "params.yaml")
    assert limits == ServeLimits(max_pending=3, max_image_mb=2.0, chunk_rows=7)
    assert isinstance(limits.max_image_mb, float) and isinstance(limits.chunk_rows, int)
    assert cli.serve_limits(cli.build_parser().parse_args(["serve"]), None, "params.yaml") == ServeLimits()


BAD = [
    (["--max-pending", "0"], "--max-pending = 0, expected an integer in [1, inf]"),
    (["--max-pending", "2.5"], "--max-pending = '2.5', expected an integer"),
    (["--max-connections", "many"], "--max-connections = 'many', expected an integer"),
    (["--max-image-mb", "-1"], "--max-image-mb = -1.0, expected a number in (0, inf]"),
    (["--body-timeout-s", "0"], "--body-timeout-s = 0.0, expected a number in (0, inf]"),
    (["--keep-alive-s", "inf"], "--keep-alive-s = inf, expected a number in (0, inf]"),
    (["--max-batch-size", "0"], "--max-batch-size = 0, expected an integer in [1, 4096]"),
    (["--max-batch-delay-ms", "-1"], "--max-batch-delay-ms = -1.0, expected a number in [0, 10000]"),
]


@pytest.mark.parametrize("options, message", BAD, ids=[b[0][0] + "=" + b[0][1] for b in BAD])
def test_a_bad_value_is_one_error_line_naming_the_option(options, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no params.yaml
    started = []
    monkeypatch.setattr(server, "serve", lambda *a, **k: started.append(a))
    assert cli.main(["serve", *options]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert started == []  # refused before any model loads


def _params(tmp_path, section: dict | None):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"other": {"x": 1}, **({SECTION: section} if section is not None else {})}))
    return path


def _served_limits(monkeypatch, argv: list[str]) -> ServeLimits:
    """The limits `rakuten serve argv` would serve with (the server itself is not started)."""
    started = []
    monkeypatch.setattr(
        server, "serve", lambda models, params, name, host, port, limits, records: started.append(limits)
    )
    monkeypatch.setattr(cli, "_records", lambda args: None)
    assert cli.main(["serve", *argv]) == 0
    return started[0]


def test_the_params_section_is_read_and_the_options_override_it(tmp_path, monkeypatch):
    section = {**DEFAULTS, "max_pending": 4, "keep_alive_s": 2.5, "max_batch_rows": 100}
    params = _params(tmp_path, section)
    assert _served_limits(monkeypatch, ["--params", str(params)]) == ServeLimits(
        max_pending=4, keep_alive_s=2.5, max_batch_rows=100
    )
    assert _served_limits(monkeypatch, ["--params", str(params), "--max-pending", "9"]) == ServeLimits(
        max_pending=9, keep_alive_s=2.5, max_batch_rows=100
    )
    monkeypatch.chdir(tmp_path)  # params.yaml of the working folder, as for `rakuten predict`
    assert _served_limits(monkeypatch, ["--keep-alive-s", "1"]) == ServeLimits(
        max_pending=4, keep_alive_s=1.0, max_batch_rows=100
    )


def test_without_a_section_the_declared_defaults_apply(tmp_path, monkeypatch):
    assert _served_limits(monkeypatch, ["--params", str(_params(tmp_path, None))]) == ServeLimits()


@pytest.mark.parametrize(
    "section, message",
    [
        ({**DEFAULTS, "max_pending": 0}, "serve.max_pending = 0, expected an integer in [1, inf]"),
        ({**DEFAULTS, "max_pendin": 3}, "unknown key serve.max_pendin; expected one of max_image_mb, "),
        ({k: v for k, v in DEFAULTS.items() if k != "chunk_rows"}, "missing key serve.chunk_rows"),
        ({**DEFAULTS, "max_image_mb": "big"}, "serve.max_image_mb = 'big', expected a number"),
    ],
)
def test_a_bad_section_is_one_error_line_naming_the_file_and_key(tmp_path, monkeypatch, capsys, section, message):
    params = _params(tmp_path, section)
    started = []
    monkeypatch.setattr(server, "serve", lambda *a, **k: started.append(a))
    assert cli.main(["serve", "--params", str(params), "--max-pending", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {params}: {message}") and err.count("\n") == 1 and started == []


def test_limits_built_in_code_are_checked_too():
    with pytest.raises(PipelineError, match=r"^serve.chunk_rows = 0, expected an integer in \[1, inf\]$"):
        ServeLimits(chunk_rows=0)
    with pytest.raises(PipelineError, match=r"^serve.max_image_mb = 'x', expected a number"):
        ServeLimits(max_image_mb="x")
