"""Typed declarations of the ``params.yaml`` sections: one dataclass field per knob.

Why: a knob declared once cannot drift between its default, its validation and its help. Each
section is one frozen dataclass, next to the code that uses it, whose fields mirror the YAML keys
exactly (nested dataclasses for nested mappings) and are declared with
:func:`knob`: default, help text, bounds and allowed values in one place. :func:`parse_section`
turns the YAML mapping into that dataclass, checking every value against its declaration; the
first problem is one :class:`~rakuten.core.errors.PipelineError` line naming the dotted key::

    params.yaml: tfidf_svm.C = -1, expected a number in (0.0, inf]
    params.yaml: unknown key tfidf_svm.foo; expected one of text_column, max_features, ...
    params.yaml: missing key tfidf_svm.C

Field types come from the annotations: ``bool``, ``int``, ``float``, ``str``, ``int | float`` (a
number kept as written), ``tuple[T, ...]`` (a YAML list), ``dict[str, T]`` (a mapping with free
keys), a nested dataclass (a mapping with exactly its keys) and ``X | None`` (a key that may be
absent or null). Cross-field rules live in a ``validate(self, key)`` method of the declaration,
which raises :class:`ConfigError` naming the keys; parsing calls it on every nested level.
The declared defaults equal ``params.yaml`` (``tests/core/test_params_schema.py`` checks it key by key).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import types
import typing
from typing import Any, Callable, Iterator, Mapping, TypeVar

from rakuten.core.errors import PipelineError
from rakuten.core.params import PARAMS_FILE

T = TypeVar("T")


class ConfigError(ValueError):
    """A value that breaks its declaration; the message names the dotted key (no file name)."""


@dataclasses.dataclass(frozen=True)
class Knob:
    """What a knob declares besides its type and default: help text, bounds, allowed values.

    Bounds and choices apply to the value, or to each item of a list / each value of a mapping;
    ``nonempty`` applies to the string, list or mapping itself. ``runtime`` marks a knob that changes
    how fast or where a step runs (processes, batch sizes, a cache folder), never what the models are
    trained on: it is not saved with a model's preprocessing, changing it retrains nothing, and DVC does
    not track it. ``report`` qualifies a runtime knob that still shapes a side report of its stage (the
    contact sheets): it stays out of the preprocessing record, but DVC tracks it so the report is redrawn.
    """

    help: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] | None = None
    nonempty: bool = False
    runtime: bool = False
    report: bool = False


def knob(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    choices: typing.Iterable[str] | None = None,
    nonempty: bool = False,
    runtime: bool = False,
    report: bool = False,
) -> Any:
    """A dataclass field declaring one knob (no ``default``: the key is required, e.g. inside a profile).

    Mutable or nested defaults (dataclass instances, dicts, lists) become a ``default_factory``
    that returns a fresh copy, so instances never share them.
    """
    meta = {
        "knob": Knob(
            help, lo, hi, lo_open, hi_open, tuple(choices) if choices is not None else None, nonempty, runtime, report
        )
    }
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    if dataclasses.is_dataclass(default) or isinstance(default, (dict, list, set)):
        return dataclasses.field(default_factory=functools.partial(copy.deepcopy, default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def knob_of(field: dataclasses.Field) -> Knob:
    """The declaration of ``field``; a field not made with :func:`knob` is a programming error."""
    try:
        return field.metadata["knob"]
    except KeyError:
        raise TypeError(f"field {field.name} is not declared with rakuten.core.config.knob()") from None


# ------------------------------------------------------------------------------------- parsing


def invalid(key: str, value: Any, expected: str) -> ConfigError:
    """The usual message: ``key = value, expected ...``."""
    return ConfigError(f"{key} = {value!r}, expected {expected}")


def parse_section(cls: type[T], raw: Any, key: str, source: str = PARAMS_FILE) -> T:
    """``raw`` (the YAML value of section ``key``) checked and converted into ``cls``.

    ``source`` names the file in the error (``params.yaml``, or a saved model's config file).
    """
    try:
        return _parse(cls, raw, key, None)
    except ConfigError as exc:
        raise PipelineError(f"{source}: {exc}") from None


def from_params(cls: type[T], params: Mapping[str, Any], key: str, source: str = PARAMS_FILE) -> T:
    """Section ``key`` of a loaded params file (:func:`rakuten.core.params.load_params`) parsed into ``cls``."""
    if key not in params:
        raise PipelineError(f"{source}: missing key {key}")
    return parse_section(cls, params[key], key, source)


def check_value(cls: type, name: str, raw: Any, key: str) -> Any:
    """``raw`` checked against the knob at dotted ``name`` of ``cls`` (errors name ``key``); the parsed value.

    For values that stand in for a knob elsewhere, e.g. the candidate values of a grid search.
    """
    field, tp = _field_at(cls, name)
    return _parse(tp, raw, key, knob_of(field))


def _field_at(cls: type, name: str) -> tuple[dataclasses.Field, Any]:
    *parents, last = name.split(".")
    for part in parents:
        hint = _hints(cls)[part]  # a nested section, possibly optional (``X | None``)
        cls = next(a for a in (_union_args(hint) or (hint,)) if dataclasses.is_dataclass(a))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if last not in fields:
        raise KeyError(name)
    return fields[last], _hints(cls)[last]


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _union_args(tp: Any) -> tuple | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _is_optional(tp: Any) -> bool:
    args = _union_args(tp)
    return args is not None and type(None) in args


def _range(k: Knob) -> str:
    if k.lo is None and k.hi is None:
        return ""
    lo = "-inf" if k.lo is None else k.lo
    hi = "inf" if k.hi is None else k.hi
    return f" in {'(' if k.lo_open else '['}{lo}, {hi}{')' if k.hi_open else ']'}"


def _in_range(value: float, k: Knob) -> bool:
    if not math.isfinite(value):
        return False
    if k.lo is not None and (value <= k.lo if k.lo_open else value < k.lo):
        return False
    return not (k.hi is not None and (value >= k.hi if k.hi_open else value > k.hi))


def _number(raw: Any, key: str, k: Knob, kind: str) -> int | float:
    """``kind``: ``int`` (integers only), ``float`` (converted to float) or ``number`` (kept as written)."""
    what = "an integer" if kind == "int" else "a number"
    allowed = int if kind == "int" else (int, float)
    if isinstance(raw, bool) or not isinstance(raw, allowed):
        raise invalid(key, raw, what)
    if not _in_range(raw, k):
        raise invalid(key, raw, what + (_range(k) or " (finite)"))
    return float(raw) if kind == "float" else raw


def _parse(tp: Any, raw: Any, key: str, k: Knob | None) -> Any:
    if dataclasses.is_dataclass(tp):
        return _parse_dataclass(tp, raw, key)
    k = k or Knob("")
    if _union_args(tp) is not None:
        return _parse_union(tp, raw, key, k)
    origin = typing.get_origin(tp)
    if origin is tuple:
        return _parse_list(typing.get_args(tp)[0], raw, key, k)
    if origin is dict:
        return _parse_mapping(typing.get_args(tp)[1], raw, key, k)
    return _parse_scalar(tp, raw, key, k)


def _parse_union(tp: Any, raw: Any, key: str, k: Knob) -> Any:
    """``X | None`` (absent or null allowed) and ``int | float`` (a number kept as written)."""
    args = _union_args(tp)
    if raw is None and type(None) in args:
        return None
    rest = tuple(a for a in args if a is not type(None))
    if set(rest) == {int, float}:
        return _number(raw, key, k, "number")
    if len(rest) == 1:
        return _parse(rest[0], raw, key, k)
    raise TypeError(f"{key}: unsupported knob type {tp}")


def _parse_list(item: Any, raw: Any, key: str, k: Knob) -> tuple:
    item_knob = dataclasses.replace(k, nonempty=False)
    if not isinstance(raw, (list, tuple)):
        raise invalid(key, raw, f"a list of {_describe(item, item_knob, plural=True)}")
    if k.nonempty and not raw:
        raise invalid(key, raw, f"a non-empty list of {_describe(item, item_knob, plural=True)}")
    return tuple(_parse(item, v, f"{key}[{i}]", item_knob) for i, v in enumerate(raw))


def _parse_mapping(value_type: Any, raw: Any, key: str, k: Knob) -> dict:
    value_knob = dataclasses.replace(k, nonempty=False)
    if not isinstance(raw, Mapping) or not all(isinstance(name, str) for name in raw):
        raise invalid(key, raw, f"a mapping name -> {_describe(value_type, value_knob)}")
    if k.nonempty and not raw:
        raise invalid(key, raw, f"a non-empty mapping name -> {_describe(value_type, value_knob)}")
    return {name: _parse(value_type, v, f"{key}.{name}", value_knob) for name, v in raw.items()}


def _parse_scalar(tp: Any, raw: Any, key: str, k: Knob) -> Any:
    if tp is bool:
        if not isinstance(raw, bool):
            raise invalid(key, raw, "true or false")
        return raw
    if tp is int:
        return _number(raw, key, k, "int")
    if tp is float:
        return _number(raw, key, k, "float")
    if tp is str:
        if not isinstance(raw, str) or (k.choices is not None and raw not in k.choices) or (k.nonempty and not raw):
            raise invalid(key, raw, _describe(str, k))
        return raw
    raise TypeError(f"{key}: unsupported knob type {tp}")


def _describe(tp: Any, k: Knob, plural: bool = False) -> str:
    """What a value of type ``tp`` must look like, for error messages."""
    if tp is str:
        if k.choices is not None:
            return ("values from " if plural else "one of ") + ", ".join(k.choices)
        return "strings" if plural else ("a non-empty string" if k.nonempty else "a string")
    if tp is bool:
        return "true or false"
    if tp is int:
        return ("integers" if plural else "an integer") + _range(k)
    if _union_args(tp) is not None or tp is float:
        return ("numbers" if plural else "a number") + _range(k)
    if typing.get_origin(tp) is tuple:
        return "a list of " + _describe(typing.get_args(tp)[0], k, plural=True)
    return "values" if plural else "a value"


def _parse_dataclass(cls: type, raw: Any, key: str) -> Any:
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    if not isinstance(raw, Mapping):
        raise invalid(key, raw, "a mapping with keys " + ", ".join(names))
    unknown = [str(name) for name in raw if name not in names]
    if unknown:
        raise ConfigError(f"unknown key {key}.{unknown[0]}; expected one of {', '.join(names)}")
    hints = _hints(cls)
    values = {}
    for f in fields:
        sub = f"{key}.{f.name}"
        if f.name not in raw:
            if not _is_optional(hints[f.name]):
                raise ConfigError(f"missing key {sub}")
            values[f.name] = None
            continue
        values[f.name] = _parse(hints[f.name], raw[f.name], sub, knob_of(f))
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(key)
    return obj


# ------------------------------------------------------------------------------------ reading back


def to_dict(obj: Any) -> Any:
    """The YAML-shaped value of a parsed declaration: nested mappings, lists; absent optional keys omitted."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if getattr(obj, f.name) is not None
        }
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {name: to_dict(v) for name, v in obj.items()}
    return obj


def defaults(cls: type) -> dict[str, Any]:
    """The declared defaults of a section, shaped like its ``params.yaml`` block."""
    return to_dict(cls())


def iter_knobs(cls: type, prefix: str = "") -> Iterator[tuple[str, Any, Knob]]:
    """``(dotted name, type, declaration)`` of every knob of ``cls``, nested sections included."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        tp = hints[f.name]
        yield name, tp, knob_of(f)
        nested = [a for a in (_union_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
        for sub in nested:
            yield from iter_knobs(sub, name + ".")


def runtime_keys(cls: type) -> tuple[str, ...]:
    """Dotted names (inside the section) of the knobs declared ``runtime=True``, the ones a model's
    preprocessing record leaves out; a runtime nested section is named once, without its knobs."""
    return _keys_where(cls, lambda declared: declared.runtime)


def untracked_keys(cls: type) -> tuple[str, ...]:
    """The runtime knobs DVC does not track: all of :func:`runtime_keys` but those that shape a report of
    their stage (``report=True``), which stay tracked so the report is redrawn."""
    return _keys_where(cls, lambda declared: declared.runtime and not declared.report)


def _keys_where(cls: type, flagged: Callable[[Knob], bool]) -> tuple[str, ...]:
    out: list[str] = []
    for name, _, declared in iter_knobs(cls):
        if flagged(declared) and not any(name.startswith(parent + ".") for parent in out):
            out.append(name)
    return tuple(out)


def replace_at(obj: T, name: str, value: Any) -> T:
    """A copy of ``obj`` with the knob at dotted ``name`` set to ``value`` (nested sections copied too)."""
    head, _, rest = name.partition(".")
    if not rest:
        return dataclasses.replace(obj, **{head: value})
    return dataclasses.replace(obj, **{head: replace_at(getattr(obj, head), rest, value)})


# ------------------------------------------------------------------------------------------ profiles


class ProfileView:
    """Mixin of a section whose ``profile`` knob names one of its nested profile sections.

    ``cfg.active`` is the selected profile, and a profile knob read on the section reads the
    selected profile's value (``cfg.epochs`` is ``cfg.active.epochs``), so training code sees one
    flat view while ``params.yaml`` keeps both profiles, each declared once.
    """

    @property
    def active(self) -> Any:
        return getattr(self, self.profile)

    def with_active(self: T, **changes: Any) -> T:
        """A copy whose selected profile has ``changes`` (``cfg.with_active(epochs=1)``)."""
        return dataclasses.replace(self, **{self.profile: dataclasses.replace(self.active, **changes)})

    def __getattr__(self, name: str) -> Any:
        # only reached when normal lookup fails; never delegates dunders (copy and pickle probe them)
        if not name.startswith("_"):
            profile = self.__dict__.get(self.__dict__.get("profile", ""))
            if dataclasses.is_dataclass(profile) and name in {f.name for f in dataclasses.fields(profile)}:
                return getattr(profile, name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
