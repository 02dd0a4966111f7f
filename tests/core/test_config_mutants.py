"""The knob declarations (rakuten.core.config) on hand-made sections, with exact messages (docs/mutation.md)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from rakuten.core import config as C
from rakuten.core.config import ConfigError, Knob, knob
from rakuten.core.errors import PipelineError


@dataclasses.dataclass(frozen=True)
class Inner:
    a: int = knob(1, "a", lo=0, hi=10)
    b: str | None = knob(None, "b")

    def validate(self, key):
        if self.a == 7:
            raise ConfigError(f"{key}.a: not 7")


@dataclasses.dataclass(frozen=True)
class Section:
    n: int = knob(3, "count", lo=1)
    x: float = knob(0.5, "share", lo=0, hi=1, lo_open=True)
    num: int | float = knob(2, "number", lo=0)
    flag: bool = knob(False, "flag")
    mode: str = knob("a", "mode", choices=["a", "b"])
    name: str = knob("x", "name", nonempty=True)
    items: tuple[int, ...] = knob((1, 2), "items", lo=0, nonempty=True)
    tags: tuple[str, ...] = knob(("p",), "tags", choices=("p", "q"))
    weights: dict[str, float] = knob({"w": 1.0}, "weights", lo=0, runtime=True)
    inner: Inner = knob(Inner(), "inner")
    opt: Inner | None = knob(None, "optional inner")

    def validate(self, key):
        if self.n > 100:
            raise ConfigError(f"{key}.n: too many")


RAW = {
    "n": 3,
    "x": 0.5,
    "num": 2,
    "flag": False,
    "mode": "a",
    "name": "x",
    "items": [1, 2],
    "tags": ["p"],
    "weights": {"w": 1.0},
    "inner": {"a": 1},
}


def parse(raw=None, **changes):
    return C.parse_section(Section, {**RAW, **changes} if raw is None else raw, "sec")


def error(**changes):
    with pytest.raises(PipelineError) as exc:
        parse(**changes)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
    return str(exc.value)


# --------------------------------------------------------------------------- declaring


def test_knob_records_its_declaration():
    fields = {f.name: f for f in dataclasses.fields(Section)}
    assert C.knob_of(fields["x"]) == Knob("share", 0, 1, True, False, None, False, False)
    assert C.knob_of(fields["mode"]) == Knob("mode", choices=("a", "b"))
    assert C.knob_of(fields["weights"]) == Knob("weights", lo=0, runtime=True)
    assert C.knob_of(fields["name"]) == Knob("name", nonempty=True)
    full = knob(1, "h", lo=2, hi=3, lo_open=True, hi_open=True, choices=iter(["c"]), nonempty=True, runtime=True)
    assert full.metadata["knob"] == Knob("h", 2, 3, True, True, ("c",), True, True)
    assert full.default == 1 and full.default_factory is dataclasses.MISSING
    assert knob().metadata["knob"] == Knob("", None, None, False, False, None, False, False)
    required = knob(help="req")
    assert required.default is dataclasses.MISSING and required.default_factory is dataclasses.MISSING


def test_a_field_without_knob_is_a_programming_error():
    @dataclasses.dataclass
    class Bare:
        v: int = 1

    with pytest.raises(TypeError) as exc:
        C.knob_of(dataclasses.fields(Bare)[0])
    assert str(exc.value) == "field v is not declared with rakuten.core.config.knob()" and exc.value.__cause__ is None
    assert exc.value.__suppress_context__


def test_mutable_defaults_are_fresh_copies():
    @dataclasses.dataclass
    class Mutable:
        d: dict = knob({"k": [1]}, "d")
        l: list = knob([1, [2]], "l")
        s: set = knob({1}, "s")
        i: Inner = knob(Inner(a=2), "i")
        t: tuple = knob((1,), "t")

    one, two = Mutable(), Mutable()
    assert (one.d, one.l, one.s, one.i, one.t) == ({"k": [1]}, [1, [2]], {1}, Inner(a=2), (1,))
    assert one.d is not two.d and one.d["k"] is not two.d["k"] and one.l[1] is not two.l[1] and one.s is not two.s
    assert one.i == two.i
    one.d["k"].append(2)
    assert Mutable().d == {"k": [1]}
    fields = {f.name: f for f in dataclasses.fields(Mutable)}
    assert fields["t"].default == (1,) and fields["d"].default is dataclasses.MISSING
    assert fields["i"].default is dataclasses.MISSING and one.i is not two.i  # a dataclass: a fresh copy too
    assert [C.knob_of(fields[n]).help for n in "dlsit"] == list("dlsit")


# --------------------------------------------------------------------------- parsing


def test_a_valid_section():
    got = parse()
    assert got == Section() and got.opt is None and got.inner.b is None
    assert type(got.x) is float and type(got.items) is tuple and type(got.num) is int
    full = parse(
        x=1,
        num=2.5,
        items=(0, 3),
        tags=[],
        weights={},
        inner={"a": 0, "b": "s"},
        opt={"a": 10},
        flag=True,
        mode="b",
        name="y",
    )
    assert full == Section(3, 1.0, 2.5, True, "b", "y", (0, 3), (), {}, Inner(0, "s"), Inner(10))
    assert type(full.x) is float and type(full.num) is float
    assert parse(opt=None).opt is None


def test_the_file_is_named():
    with pytest.raises(PipelineError) as exc:
        C.parse_section(Section, {**RAW, "n": 0}, "sec", "models/m/config.yaml")
    assert str(exc.value) == "models/m/config.yaml: sec.n = 0, expected an integer in [1, inf]"
    with pytest.raises(PipelineError, match=r"^params\.yaml: sec\.n = 0, "):
        C.parse_section(Section, {**RAW, "n": 0}, "sec")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n": 0}, "sec.n = 0, expected an integer in [1, inf]"),
        ({"n": 1.0}, "sec.n = 1.0, expected an integer"),
        ({"n": True}, "sec.n = True, expected an integer"),
        ({"n": "3"}, "sec.n = '3', expected an integer"),
        ({"n": 101}, "sec.n: too many"),
        ({"x": 0}, "sec.x = 0, expected a number in (0, 1]"),
        ({"x": 1.0000001}, "sec.x = 1.0000001, expected a number in (0, 1]"),
        ({"x": math.nan}, "sec.x = nan, expected a number in (0, 1]"),
        ({"x": math.inf}, "sec.x = inf, expected a number in (0, 1]"),
        ({"x": False}, "sec.x = False, expected a number"),
        ({"x": "0.5"}, "sec.x = '0.5', expected a number"),
        ({"num": -1}, "sec.num = -1, expected a number in [0, inf]"),
        ({"num": None}, "sec.num = None, expected a number"),
        ({"num": True}, "sec.num = True, expected a number"),
        ({"flag": 1}, "sec.flag = 1, expected true or false"),
        ({"flag": None}, "sec.flag = None, expected true or false"),
        ({"mode": "c"}, "sec.mode = 'c', expected one of a, b"),
        ({"mode": 1}, "sec.mode = 1, expected one of a, b"),
        ({"name": ""}, "sec.name = '', expected a non-empty string"),
        ({"name": None}, "sec.name = None, expected a non-empty string"),
        ({"items": []}, "sec.items = [], expected a non-empty list of integers in [0, inf]"),
        ({"items": 1}, "sec.items = 1, expected a list of integers in [0, inf]"),
        ({"items": "12"}, "sec.items = '12', expected a list of integers in [0, inf]"),
        ({"items": [1, -1]}, "sec.items[1] = -1, expected an integer in [0, inf]"),
        ({"tags": ["p", "r"]}, "sec.tags[1] = 'r', expected one of p, q"),
        ({"tags": {"p": 1}}, "sec.tags = {'p': 1}, expected a list of values from p, q"),
        ({"weights": [1]}, "sec.weights = [1], expected a mapping name -> a number in [0, inf]"),
        ({"weights": {1: 1.0}}, "sec.weights = {1: 1.0}, expected a mapping name -> a number in [0, inf]"),
        ({"weights": {"a": 1, "b": -0.5}}, "sec.weights.b = -0.5, expected a number in [0, inf]"),
        ({"inner": 5}, "sec.inner = 5, expected a mapping with keys a, b"),
        ({"inner": {"a": 11}}, "sec.inner.a = 11, expected an integer in [0, 10]"),
        ({"inner": {"a": 7}}, "sec.inner.a: not 7"),
        ({"inner": {"b": "s"}}, "missing key sec.inner.a"),
        ({"inner": {"a": 1, "c": 1, "d": 2}}, "unknown key sec.inner.c; expected one of a, b"),
        ({"inner": {"a": 1, "b": 2}}, "sec.inner.b = 2, expected a string"),
        ({"opt": {"a": 7}}, "sec.opt.a: not 7"),
        ({"opt": []}, "sec.opt = [], expected a mapping with keys a, b"),
    ],
)
def test_errors_name_the_key(changes, message):
    assert error(**changes) == f"params.yaml: {message}"


def test_section_level_errors():
    with pytest.raises(
        PipelineError,
        match=r"^params.yaml: sec = \[\], expected a mapping with keys n, x, num, "
        r"flag, mode, name, items, tags, weights, inner, opt$",
    ):
        parse(raw=[])
    raw = dict(RAW)
    del raw["weights"]
    with pytest.raises(PipelineError) as exc:
        parse(raw=raw)
    assert str(exc.value) == "params.yaml: missing key sec.weights"
    with pytest.raises(PipelineError) as exc:
        parse(raw={**RAW, 3: 1})
    assert str(exc.value) == (
        "params.yaml: unknown key sec.3; expected one of n, x, num, flag, mode, name, items, tags, weights, inner, opt"
    )
    with pytest.raises(PipelineError) as exc:
        C.parse_section(Section, None, "sec")
    assert str(exc.value).startswith("params.yaml: sec = None, expected a mapping with keys n, x, ")


def test_from_params():
    assert C.from_params(Section, {"sec": RAW, "other": 1}, "sec") == Section()
    with pytest.raises(PipelineError) as exc:
        C.from_params(Section, {"other": RAW}, "sec")
    assert str(exc.value) == "params.yaml: missing key sec"
    with pytest.raises(PipelineError) as exc:
        C.from_params(Section, {"other": RAW}, "sec", "saved.yaml")
    assert str(exc.value) == "saved.yaml: missing key sec"
    with pytest.raises(PipelineError) as exc:
        C.from_params(Section, {"sec": {**RAW, "n": 0}}, "sec", "saved.yaml")
    assert str(exc.value) == "saved.yaml: sec.n = 0, expected an integer in [1, inf]"


# --------------------------------------------------------------------------- types and bounds one by one


def test_ranges_and_bounds():
    assert C._range(Knob("")) == ""
    assert C._range(Knob("", lo=0)) == " in [0, inf]"
    assert C._range(Knob("", hi=2.5)) == " in [-inf, 2.5]"
    assert C._range(Knob("", lo=1, hi=2, lo_open=True, hi_open=True)) == " in (1, 2)"
    assert C._range(Knob("", lo=1, hi=2, hi_open=True)) == " in [1, 2)"
    k = Knob("", lo=1, hi=2)
    assert [C._in_range(v, k) for v in (0.999, 1, 1.5, 2, 2.001)] == [False, True, True, True, False]
    k = Knob("", lo=1, hi=2, lo_open=True, hi_open=True)
    assert [C._in_range(v, k) for v in (1, 1.001, 1.999, 2)] == [False, True, True, False]
    assert [C._in_range(v, Knob("")) for v in (-1e300, 0, math.inf, -math.inf, math.nan)] == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert C._in_range(5, Knob("", hi=5)) and not C._in_range(-5, Knob("", lo=-4))


def test_numbers():
    k = Knob("")
    assert C._number(3, "k", k, "float") == 3.0 and type(C._number(3, "k", k, "float")) is float
    assert type(C._number(3, "k", k, "number")) is int and type(C._number(3.5, "k", k, "number")) is float
    assert type(C._number(3, "k", k, "int")) is int
    for kind, what in (("int", "an integer"), ("float", "a number"), ("number", "a number")):
        with pytest.raises(ConfigError) as exc:
            C._number(math.inf, "k", k, kind) if kind != "int" else C._number(2.0, "k", k, kind)
        expected = f"k = 2.0, expected {what}" if kind == "int" else f"k = inf, expected {what} (finite)"
        assert str(exc.value) == expected
    with pytest.raises(ConfigError, match=r"^k = nan, expected a number \(finite\)$"):
        C._number(math.nan, "k", k, "float")


def test_parse_types_directly():
    k = Knob("")
    assert C._parse(int | None, None, "k", None) is None
    assert C._parse(int | None, 4, "k", None) == 4
    assert C._parse(int | float | None, None, "k", k) is None
    assert C._parse(int | float | None, 2, "k", k) == 2
    with pytest.raises(ConfigError, match=r"^k = -1, expected an integer in \[0, inf\]$"):
        C._parse(int | None, -1, "k", Knob("", lo=0))
    with pytest.raises(ConfigError, match=r"^k = None, expected an integer$"):
        C._parse(int, None, "k", None)
    with pytest.raises(TypeError) as exc:
        C._parse(str | int, "a", "k", k)
    assert str(exc.value) == "k: unsupported knob type str | int"
    with pytest.raises(TypeError) as exc:
        C._parse(bytes, b"a", "k", k)
    assert str(exc.value) == "k: unsupported knob type <class 'bytes'>"
    assert C._parse(tuple[str, ...], ("", "b"), "k", Knob("", nonempty=True)) == ("", "b")  # items may be empty
    assert C._parse(dict[str, str], {"a": ""}, "k", Knob("", nonempty=True)) == {"a": ""}
    with pytest.raises(ConfigError, match=r"^k = \{\}, expected a non-empty mapping name -> a string$"):
        C._parse(dict[str, str], {}, "k", Knob("", nonempty=True))
    assert C._parse(dict[str, str], {}, "k", k) == {}
    assert C._parse(tuple[int, ...], [], "k", k) == ()
    assert C._parse(tuple[Inner, ...], [{"a": 2}], "k", k) == (Inner(2),)
    assert C._parse(dict[str, Inner], {"z": {"a": 3}}, "k", k) == {"z": Inner(3)}
    with pytest.raises(ConfigError, match=r"^k\.z\.a = 11, expected an integer in \[0, 10\]$"):
        C._parse(dict[str, Inner], {"z": {"a": 11}}, "k", k)
    with pytest.raises(ConfigError, match=r"^k\[0\]\.a = -1, expected an integer in \[0, 10\]$"):
        C._parse(tuple[Inner, ...], [{"a": -1}], "k", k)
    with pytest.raises(ConfigError, match=r"^k\[1\]\[0\] = 'x', expected an integer$"):
        C._parse(tuple[tuple[int, ...], ...], [[1], ["x"]], "k", k)


@pytest.mark.parametrize(
    "tp, k, plural, expected",
    [
        (str, Knob("", choices=("a", "b")), False, "one of a, b"),
        (str, Knob("", choices=("a", "b")), True, "values from a, b"),
        (str, Knob(""), True, "strings"),
        (str, Knob("", nonempty=True), True, "strings"),
        (str, Knob("", nonempty=True), False, "a non-empty string"),
        (str, Knob(""), False, "a string"),
        (bool, Knob(""), True, "true or false"),
        (int, Knob("", lo=1), True, "integers in [1, inf]"),
        (int, Knob(""), False, "an integer"),
        (float, Knob("", hi=1), True, "numbers in [-inf, 1]"),
        (float, Knob(""), False, "a number"),
        (int | float, Knob(""), False, "a number"),
        (int | None, Knob(""), True, "numbers"),
        (tuple[int, ...], Knob("", lo=0), False, "a list of integers in [0, inf]"),
        (tuple[str, ...], Knob(""), True, "a list of strings"),
        (Inner, Knob(""), False, "a value"),
        (Inner, Knob(""), True, "values"),
        (dict[str, int], Knob(""), False, "a value"),
    ],
)
def test_describe(tp, k, plural, expected):
    assert C._describe(tp, k, plural=plural) == expected
    if not plural:
        assert C._describe(tp, k) == expected


def test_nested_descriptions_in_messages():
    with pytest.raises(ConfigError) as exc:
        C._parse(tuple[tuple[int, ...], ...], 1, "k", Knob(""))
    assert str(exc.value) == "k = 1, expected a list of a list of integers"
    with pytest.raises(ConfigError) as exc:
        C._parse(dict[str, tuple[bool, ...]], [], "k", Knob(""))
    assert str(exc.value) == "k = [], expected a mapping name -> a list of true or false"
    with pytest.raises(ConfigError) as exc:
        C._parse(tuple[Inner, ...], {}, "k", Knob(""))
    assert str(exc.value) == "k = {}, expected a list of values"


def test_optional_helpers():
    assert C._union_args(int | None) == (int, type(None))
    assert C._union_args(int) is None and C._union_args(tuple[int, ...]) is None
    import typing

    assert C._union_args(typing.Optional[int]) == (int, type(None))
    assert C._is_optional(int | None) and C._is_optional(typing.Optional[str])
    assert not C._is_optional(int | float) and not C._is_optional(int)


# --------------------------------------------------------------------------- one knob, by dotted name


def test_check_value():
    assert C.check_value(Section, "x", 1, "grid.x[0]") == 1.0 and type(C.check_value(Section, "x", 1, "k")) is float
    assert C.check_value(Section, "inner.a", 10, "k") == 10
    with pytest.raises(ConfigError) as exc:
        C.check_value(Section, "x", 0, "grid.x[0]")
    assert str(exc.value) == "grid.x[0] = 0, expected a number in (0, 1]"
    with pytest.raises(ConfigError) as exc:
        C.check_value(Section, "inner.a", 11, "grid.a")
    assert str(exc.value) == "grid.a = 11, expected an integer in [0, 10]"
    with pytest.raises(ConfigError) as exc:
        C.check_value(Section, "mode", "z", "m")
    assert str(exc.value) == "m = 'z', expected one of a, b"
    with pytest.raises(KeyError) as exc:
        C.check_value(Section, "inner.zz", 1, "k")
    assert exc.value.args == ("inner.zz",)
    with pytest.raises(KeyError):
        C.check_value(Section, "zz", 1, "k")
    field, tp = C._field_at(Section, "inner.b")
    assert field.name == "b" and tp == (str | None)


# --------------------------------------------------------------------------- reading back


def test_to_dict_and_defaults():
    assert C.to_dict(Section()) == {
        "n": 3,
        "x": 0.5,
        "num": 2,
        "flag": False,
        "mode": "a",
        "name": "x",
        "items": [1, 2],
        "tags": ["p"],
        "weights": {"w": 1.0},
        "inner": {"a": 1},
    }
    assert C.defaults(Section) == C.to_dict(Section())
    assert C.to_dict(Inner) is Inner
    assert C.to_dict({"a": (Inner(2, "s"), [None])}) == {"a": [{"a": 2, "b": "s"}, [None]]}
    assert C.to_dict(Inner(0, "")) == {"a": 0, "b": ""}
    assert C.to_dict(None) is None and C.to_dict("s") == "s"


@dataclasses.dataclass(frozen=True)
class Cache:
    dir: str = knob("", "dir", runtime=True)
    keep: bool = knob(True, "keep")


@dataclasses.dataclass(frozen=True)
class Runtimes:
    cache: Cache = knob(Cache(), "cache", runtime=True)
    cache2: int = knob(1, "jobs", runtime=True)
    seed: int = knob(0, "seed")
    opt: Cache | None = knob(None, "opt")


def test_iter_knobs_and_runtime_keys():
    got = [(name, tp, k.help) for name, tp, k in C.iter_knobs(Runtimes)]
    assert got == [
        ("cache", Cache, "cache"),
        ("cache.dir", str, "dir"),
        ("cache.keep", bool, "keep"),
        ("cache2", int, "jobs"),
        ("seed", int, "seed"),
        ("opt", Cache | None, "opt"),
        ("opt.dir", str, "dir"),
        ("opt.keep", bool, "keep"),
    ]
    assert [n for n, _, _ in C.iter_knobs(Inner, "p.")] == ["p.a", "p.b"]
    assert C.runtime_keys(Runtimes) == ("cache", "cache2", "opt.dir")
    assert C.runtime_keys(Section) == ("weights",)
    assert C.runtime_keys(Inner) == ()


def test_replace_at():
    s = Section()
    t = C.replace_at(s, "inner.a", 5)
    assert t.inner == Inner(5) and s.inner == Inner(1) and t.n == 3
    assert C.replace_at(s, "n", 9) == dataclasses.replace(s, n=9)
    deep = C.replace_at(Runtimes(), "cache.dir", "/c")
    assert deep == Runtimes(cache=Cache("/c"))


# --------------------------------------------------------------------------- profiles


@dataclasses.dataclass(frozen=True)
class Profile:
    epochs: int = knob(1, "epochs")
    lr: float = knob(0.1, "lr")
    _private: int = knob(5, "not delegated")


@dataclasses.dataclass(frozen=True)
class Trained(C.ProfileView):
    profile: str = knob("quick", "profile", choices=("quick", "full"))
    quick: Profile = knob(Profile(), "quick")
    full: Profile = knob(Profile(10, 0.01), "full")
    other: int = knob(0, "other")


def test_profile_view():
    cfg = Trained()
    assert cfg.active is cfg.quick and cfg.epochs == 1 and cfg.lr == 0.1
    full = Trained(profile="full")
    assert full.active is full.full and full.epochs == 10
    changed = full.with_active(epochs=2)
    assert changed.full == Profile(2, 0.01) and changed.quick == Profile() and full.full.epochs == 10
    assert changed.profile == "full"
    with pytest.raises(AttributeError) as exc:
        _ = cfg.nothing
    assert str(exc.value) == "Trained has no attribute 'nothing'"
    with pytest.raises(AttributeError) as exc:
        _ = cfg._epochs
    assert str(exc.value) == "Trained has no attribute '_epochs'"
    with pytest.raises(AttributeError) as exc:  # names starting with _ are never delegated
        _ = cfg._private
    assert str(exc.value) == "Trained has no attribute '_private'" and cfg.active._private == 5
    bare = object.__new__(Trained)  # as copy and pickle make them: no profile yet
    with pytest.raises(AttributeError) as exc:
        _ = bare.epochs
    assert str(exc.value) == "Trained has no attribute 'epochs'"
    odd = object.__new__(Trained)
    object.__setattr__(odd, "profile", "other")
    object.__setattr__(odd, "other", 3)
    with pytest.raises(AttributeError):  # the profile names no dataclass
        _ = odd.epochs
    import copy

    assert copy.deepcopy(full) == full


@dataclasses.dataclass(frozen=True)
class _Part:
    n: int = knob(1, "n", lo=1)


@dataclasses.dataclass(frozen=True)
class _Holder:
    part: _Part | None = knob(None, "an optional nested section")


def test_check_value_reaches_a_knob_inside_an_optional_section():
    assert C.check_value(_Holder, "part.n", 3, "grid") == 3
    with pytest.raises(ConfigError, match=r"^grid = 0, expected an integer in \[1, inf\]$"):
        C.check_value(_Holder, "part.n", 0, "grid")
