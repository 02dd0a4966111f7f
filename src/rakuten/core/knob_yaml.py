"""Declarations rendered back as commented YAML: how ``params.yaml`` is generated from the knobs.

Why: a knob's default and help live in its declaration (:func:`rakuten.core.config.knob`); writing them by
hand into ``params.yaml`` as well would declare every knob twice. :func:`render_section` writes one
section's defaults with each knob's help as a comment above it, so the file a user edits shows what
each value means, and a check (``tools/params_yaml.py --check``) fails when the file and the declarations
disagree. :func:`tracked_keys` is the other half: the keys a stage's outputs depend on, i.e. every knob
except those declared ``runtime=True``, as ``dvc.yaml`` lists them under the stage's ``params:``.
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Any

import yaml

from rakuten.core.config import iter_knobs, knob_of, to_dict, untracked_keys

WIDTH = 116
RUNTIME_NOTE = "[runtime: never changes an output, not tracked by DVC] "


def scalar(value: Any) -> str:
    """``value`` as one line of YAML (flow style for lists and mappings)."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


def _comment(help_text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(help_text, WIDTH - len(indent) - 2)] if help_text else []


def _render_fields(cls: type, value: Any, indent: str) -> list[str]:
    lines: list[str] = []
    for field in dataclasses.fields(cls):
        current = getattr(value, field.name)
        if current is None:  # an optional key left out (e.g. a profile's absent ``scratch``)
            continue
        declared = knob_of(field)
        untracked = declared.runtime and not declared.report
        lines += _comment((RUNTIME_NOTE if untracked else "") + declared.help, indent)
        if dataclasses.is_dataclass(current):
            lines.append(f"{indent}{field.name}:")
            lines += _render_fields(type(current), current, indent + "  ")
        elif isinstance(current, dict) and current and all(not isinstance(v, (dict, list)) for v in current.values()):
            lines.append(f"{indent}{field.name}:")
            lines += [f"{indent}  {key}: {scalar(v)}" for key, v in current.items()]
        else:
            lines.append(f"{indent}{field.name}: {scalar(to_dict(current))}")
    return lines


def render_section(name: str, cls: type) -> str:
    """Section ``name`` of ``params.yaml`` at the declared defaults of ``cls``, help text as comments."""
    doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
    return "\n".join([*_comment(doc, ""), f"{name}:", *_render_fields(cls, cls(), "  ")]) + "\n"


def tracked_keys(cls: type, section: str) -> list[str]:
    """The dotted keys of ``section`` a stage's outputs depend on: the whole section when no knob of it is
    runtime, else each non-runtime knob (a nested group named once when nothing inside it is runtime)."""
    runtime = untracked_keys(cls)
    if not runtime:
        return [section]
    keys: list[str] = []
    for name, _, _ in iter_knobs(cls):
        if name in runtime or any(name.startswith(r + ".") for r in runtime):
            continue
        if any(name.startswith(k + ".") for k in keys):
            continue  # inside a nested group already listed whole
        if any(r.startswith(name + ".") for r in runtime):
            continue  # a group holding a runtime knob: its other knobs are listed one by one
        keys.append(name)
    return [f"{section}.{key}" for key in keys]
