"""The preprocessing a model was trained with, saved with the model so prediction can repeat it.

Why: ``rakuten predict`` must clean new products exactly as the training rows were cleaned, even
after ``params.yaml`` has moved on. So:

1. the cleaning stages write the section they ran with next to their data
   (``data/processed/text_clean.json``, ``data/processed/image_clean.json``: DVC outputs);
2. each model stage copies the records of the inputs it consumed into its artifact folder
   (``models/<name>/preprocessing.json``, inside the DVC-versioned model output);
3. ``rakuten predict`` reads them from the model folders (all models must agree) and only compares
   them with today's ``params.yaml`` to warn about knobs changed since training.

A record is a JSON mapping ``{section: values}``, the values shaped as in ``params.yaml`` and
validated by the section's own parser before they are written (and again when read back). The
knobs a declaration marks ``runtime=True`` (processes, batch sizes, the translation cache folder,
the contact sheets) are left out: they change how fast cleaning runs, never its result, so changing
them neither retrains a model nor warns; ``rakuten predict`` takes them from today's params.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

from rakuten.core.config import defaults, parse_section, runtime_keys, to_dict
from rakuten.core.errors import PipelineError
from rakuten.core.io import write_json

log = logging.getLogger(__name__)

FILE_NAME = "preprocessing.json"
#: the record each cleaning stage writes (a DVC output of that stage, a dep of the models that read its data)
RECORDS = {"text_clean": Path("data/processed/text_clean.json"), "image_clean": Path("data/processed/image_clean.json")}
#: which section cleans the input of each modality of :mod:`rakuten.contracts.registry`
SECTION_OF_MODALITY = {"text": "text_clean", "image": "image_clean"}
_ABSENT = "(absent)"
_MISSING = object()


def _known(section: str) -> None:
    if section not in RECORDS:
        raise PipelineError(f"unknown preprocessing section {section!r}; expected one of {', '.join(RECORDS)}")


def _without(values: Mapping[str, Any], dotted: Iterable[str]) -> dict:
    out = copy.deepcopy(dict(values))
    for key in dotted:
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def _input_knobs(values: Mapping[str, Any], declaration: type) -> dict:
    """``values`` (a section as plain JSON) without the knobs ``declaration`` marks runtime."""
    return _without(json.loads(json.dumps(values)), runtime_keys(declaration))


def record(cfg: Any) -> dict:
    """The knobs of a parsed section that shape the model inputs, as plain JSON values."""
    return _input_knobs(to_dict(cfg), type(cfg))


def write_record(section: str, cfg: Any, path: str | Path | None = None) -> None:
    """Written by the cleaning stage ``section`` with the parsed config it ran with."""
    _known(section)
    write_json({section: record(cfg)}, path or RECORDS[section])


def read_record(path: str | Path) -> dict[str, dict]:
    """A record file: ``{section: values}``; one line naming the file when it is absent or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(
            f"{path}: not found; expected the preprocessing record the model was trained with (rerun `dvc repro`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: not a preprocessing record ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data or not all(s in RECORDS and isinstance(v, dict) for s, v in data.items()):
        raise PipelineError(f"{path}: expected a mapping of {' / '.join(RECORDS)} to their values")
    return data


def load_records(sections: Iterable[str]) -> dict[str, dict]:
    """The records of the cleaning stages a model stage reads data from (read before training: fail fast)."""
    merged: dict[str, dict] = {}
    for section in sections:
        _known(section)
        data = read_record(RECORDS[section])
        if section not in data:
            raise PipelineError(f"{RECORDS[section]}: no {section} section; rerun `dvc repro {section}`")
        merged[section] = data[section]
    return merged


def save_with_model(model_dir: str | Path, records: Mapping[str, dict]) -> None:
    """``<model_dir>/preprocessing.json``, written after the model (its folder is replaced when saved)."""
    write_json(dict(records), Path(model_dir) / FILE_NAME)


def differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Every dotted key whose value differs, as ``(key, value in a, value in b)``; absent = ``(absent)``."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{prefix}.{key}" if prefix else str(key)
            out += differences(a.get(key, _ABSENT), b.get(key, _ABSENT), sub)
        return out
    return [] if a == b else [(prefix, a, b)]


def load_trained(models_dir: str | Path, models: Mapping[str, str]) -> tuple[dict[str, dict], dict[str, Path]]:
    """The sections the given models (name -> modality) were trained with, and the file each came from.

    Each model must record the section of its modality, and models recording the same section must
    agree (they were trained on the same cleaned data), else one line names both files and the key.
    """
    models_dir = Path(models_dir)
    trained: dict[str, dict] = {}
    source: dict[str, Path] = {}
    for name, modality in models.items():
        path = models_dir / name / FILE_NAME
        data = read_record(path)
        needed = SECTION_OF_MODALITY.get(modality)
        if needed and needed not in data:
            raise PipelineError(
                f"{path}: no {needed} section; expected the cleaning of the {modality} input "
                f"the model was trained on (rerun `dvc repro {name}`)"
            )
        for section, values in data.items():
            if section in trained and trained[section] != values:
                key, theirs, ours = differences(trained[section], values)[0]
                raise PipelineError(
                    f"{path}: {section}.{key} = {ours!r} but {source[section]} has {theirs!r}; "
                    "expected every model trained on the same preprocessing (rerun `dvc repro`)"
                )
            trained.setdefault(section, values)
            source.setdefault(section, path)
    return trained, source


def changed_since_training(
    trained: Mapping[str, Mapping], params: Mapping[str, Any], declarations: Mapping[str, type]
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, trained value, today's value)`` for every recorded knob ``params`` now sets differently
    (``declarations``: section -> its config class, which says which knobs are runtime-only)."""
    changes = []
    for section, values in trained.items():
        today = params.get(section, {})
        today = _input_knobs(today, declarations[section]) if isinstance(today, Mapping) else {}
        changes += differences(values, today, section)
    return changes


def check_runtime(
    trained: Mapping[str, Mapping], params: Mapping[str, Any], params_name: str, declarations: Mapping[str, type]
) -> None:
    """Refuse a bad runtime knob of today's params file in one line naming that file and the key.

    Why: the runtime knobs are merged into the trained record before it is parsed, so the parser
    would blame the model's ``preprocessing.json`` for a value the user wrote in ``params_name``
    today. A section that parses with its declared runtime defaults but not with today's values is
    today's fault; one that fails either way is the record's, and is left to the caller's parse,
    which names the record."""
    for section, values in trained.items():
        try:
            parse_section(
                declarations[section],
                with_runtime({section: values}, params, declarations)[section],
                section,
                source=params_name,
            )
        except PipelineError as today_error:
            try:
                parse_section(
                    declarations[section], with_runtime({section: values}, {}, declarations)[section], section
                )
            except PipelineError:
                continue
            raise today_error from None


def warn_if_changed(
    trained: Mapping[str, Mapping], params: Mapping[str, Any], params_name: str, declarations: Mapping[str, type]
) -> list[str]:
    """Log one warning naming each knob of ``params_name`` changed since training; return the keys.
    A bad runtime knob in ``params_name`` is an error naming that file (:func:`check_runtime`)."""
    check_runtime(trained, params, params_name, declarations)
    changes = changed_since_training(trained, params, declarations)
    if changes:
        listed = "; ".join(f"{key}: trained {old!r}, {params_name} now {new!r}" for key, old, new in changes)
        log.warning(
            "%s changed preprocessing since the models were trained; predicting with the trained "
            "values (retrain with `dvc repro` to use the new ones): %s",
            params_name,
            listed,
        )
    return [key for key, _, _ in changes]


def _lookup(root: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        root = root.get(part, _MISSING) if isinstance(root, Mapping) else _MISSING
    return root


def with_runtime(
    trained: Mapping[str, Mapping], params: Mapping[str, Any], declarations: Mapping[str, type]
) -> dict[str, dict]:
    """The trained sections completed with their runtime knobs, ready to parse.

    Runtime knobs come from ``params`` (today's machine), else from the section's declared
    defaults; one found nowhere is left for the section's parser to name.
    """
    out = {}
    for section, values in trained.items():
        full = copy.deepcopy(dict(values))
        fallback = defaults(declarations[section])
        for key in runtime_keys(declarations[section]):
            node = _lookup(params.get(section, {}), key)
            if node is _MISSING:
                node = _lookup(fallback, key)
            if node is _MISSING:
                continue
            *parents, last = key.split(".")
            target = full
            for part in parents:
                target = target.setdefault(part, {})
            target[last] = copy.deepcopy(node)
        out[section] = full
    return out
