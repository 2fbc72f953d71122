"""Typed config fields: coerce a value to its dataclass field's type, or refuse it by name.

Why: a config arrives from YAML, JSON, flags or Python, and each source bends types its own
way. PyYAML reads `lr: 1e-5` as the string "1e-5" (YAML 1.1 wants a dot in a float), a
quoted `resume: "false"` is a non-empty, hence truthy, string, and `learner: null` is None.
Every config of the project calls `coerce_fields(self)` first thing in `__post_init__`, so
whichever way it was built, a field holds a value of its declared type or the constructor
raises a `ConfigError` naming the class and the field.

The rules, by declared type:

- `bool`: only True/False; strings ("false", "yes") and numbers are refused, never truthy;
- `int`: ints, integral floats (8.0) and strings that spell an int ("8", "1e3"); not bools;
- `float`: ints, floats and numeric strings ("1e-5"); non-finite values are refused;
- `str`: strings only (`model: 123` is refused, not turned into "123");
- `X | None`: None, or a value of X; a bare `X` refuses None;
- `dict[...]`: mappings (values kept as given); `list[X]` / `tuple[X, ...]` / `tuple[X, Y]`:
  lists or tuples, each item coerced; `Literal[...]`: one of the listed values.

`field_docs(cls)` reads each field's help (metadata "help", the string literal under the
field, or the class docstring's "Attributes:" section), for `--help` (`agents.args`).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import math
import re
import textwrap
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

__all__ = ["ConfigError", "coerce_fields", "coerce_value", "field_docs", "from_mapping"]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


class _Refused(Exception):
    """Internal: the value does not fit the type; `expected` says what would."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a finite number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return f"one of {list(typing.get_args(tp))}"
    if origin in (Union, types.UnionType):
        parts = [_describe(a) for a in typing.get_args(tp) if a is not type(None)]
        none = type(None) in typing.get_args(tp)
        return " or ".join(parts + (["null"] if none else []))
    if origin is dict or tp is dict:
        return "a mapping"
    if origin in (list, tuple) or tp in (list, tuple):
        return "a list"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> Any:
    """`value` as type `tp`, or raise `_Refused`."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise _Refused(_describe(tp))
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a)
            except _Refused:
                pass
        raise _Refused(_describe(tp))
    if origin is Literal:
        for choice in args:
            if type(value) is type(choice) and value == choice:
                return choice
        raise _Refused(_describe(tp))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Refused(_describe(tp))
    if tp is int:
        if isinstance(value, bool):
            raise _Refused(_describe(tp))
        if isinstance(value, int):
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text)
            except ValueError:
                pass
            try:
                value = float(text)
            except ValueError:
                raise _Refused(_describe(tp)) from None
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise _Refused(_describe(tp))
    if tp is float:
        if isinstance(value, bool):
            raise _Refused(_describe(tp))
        if isinstance(value, int | float):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value.strip())
            except ValueError:
                raise _Refused(_describe(tp)) from None
        else:
            raise _Refused(_describe(tp))
        if not math.isfinite(out):
            raise _Refused(_describe(tp))
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Refused(_describe(tp))
    if origin is dict or tp is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise _Refused(_describe(tp))
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            raise _Refused(_describe(tp))
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Refused(f"a list of {len(args)} items")
            return tuple(_coerce(v, a) for v, a in zip(value, args, strict=True))
        item = args[0] if args else Any
        items = [_coerce(v, item) for v in value]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Refused(_describe(tp))
    return value  # an annotation we do not model (e.g. a Protocol): leave it to the class


def coerce_value(value: Any, tp: Any, name: str, *, owner: str = "config") -> Any:
    """`value` converted to the type `tp` of field `name`, or a `ConfigError` naming it.

    Args:
        value: what the source gave.
        tp: the resolved field type (`typing.get_type_hints`, not a string annotation).
        name: the field, for the message.
        owner: the config class name, for the message.
    """
    try:
        return _coerce(value, tp)
    except _Refused as e:
        raise ConfigError(
            f"{owner} expects {name} to be {e.expected}, got {value!r}"
            + (f" ({type(value).__name__})" if value is not None else "")
        ) from None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce_fields(obj: Any) -> None:
    """Coerce every field of the dataclass instance `obj` in place (call in `__post_init__`)."""
    cls = type(obj)
    hints = _hints(cls)
    for f in dataclasses.fields(obj):
        if f.name not in hints or not f.init:
            continue
        value = coerce_value(getattr(obj, f.name), hints[f.name], f.name, owner=cls.__name__)
        object.__setattr__(obj, f.name, value)  # works for frozen dataclasses too


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type of every field of dataclass `cls`."""
    hints = _hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def from_mapping(cls: type, data: Mapping[str, Any], *, source: str = "config") -> Any:
    """Build dataclass `cls` from a mapping; an unknown key is named with a "did you mean"."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        hints = [difflib.get_close_matches(str(u), names, n=1) for u in unknown]
        sugg = "; ".join(
            f"{u!r}" + (f" (did you mean {h[0]!r}?)" if h else "")
            for u, h in zip(unknown, hints, strict=True)
        )
        raise ConfigError(f"{source}: unknown field(s) {sugg}")
    return cls(**data)


# --------------------------------------------------------------------------- help text
_NAME_PREFIX = re.compile(r"^\s*(\w+)\s*:\s*")


def _attribute_docstrings(cls: type) -> dict[str, str]:
    """The string literal under each annotated field in the class body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    docs = {}
    for a, b in zip(body, body[1:], strict=False):  # pairwise
        if (
            isinstance(a, ast.AnnAssign)
            and isinstance(a.target, ast.Name)
            and isinstance(b, ast.Expr)
            and isinstance(b.value, ast.Constant)
            and isinstance(b.value.value, str)
        ):
            text = " ".join(inspect.cleandoc(b.value.value).split())
            m = _NAME_PREFIX.match(text)
            if m and m.group(1) == a.target.id:  # "lr: learning rate" -> "learning rate"
                text = text[m.end() :]
            docs[a.target.id] = text
    return docs


def _attributes_section(cls: type) -> dict[str, str]:
    """Google-style "Attributes:" entries of the class docstring."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    lines = doc.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == "Attributes:")
    except StopIteration:
        return {}
    docs: dict[str, list[str]] = {}
    current = None
    indent = None
    for ln in lines[start + 1 :]:
        if not ln.strip():
            continue
        width = len(ln) - len(ln.lstrip())
        if indent is None:
            indent = width
        if width < indent:
            break
        m = re.match(r"\s*(\w+)(?:\s*\([^)]*\))?\s*:\s*(.*)", ln)
        if width == indent and m:
            current = m.group(1)
            docs[current] = [m.group(2)]
        elif current is not None:
            docs[current].append(ln.strip())
    return {k: " ".join(" ".join(v).split()) for k, v in docs.items()}


def field_docs(cls: type) -> dict[str, str]:
    """Help text of every documented field of dataclass `cls`, base classes included.

    Precedence: `field(metadata={"help": ...})`, then the string literal under the field,
    then the "Attributes:" section of the class docstring; a subclass overrides its bases.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        docs.update(_attributes_section(klass))
        docs.update(_attribute_docstrings(klass))
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            docs[f.name] = str(f.metadata["help"])
    return docs
