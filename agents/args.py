"""Dataclass → argparse: one flag per config field, its docstring as `--help`.

Every `lppo` subcommand (train, eval, compare, saidpo) is a config dataclass; this module
turns its fields into flags, in the manner of TRL's `HfArgumentParser`, so a new field is
a new flag with its help and no parser code is copied between commands:

    parser = ArgumentParser(prog="lppo train")
    add_dataclass_arguments(parser, TrainConfig, defaults=False)
    cfg = dataclass_from_args(TrainConfig, parser.parse_args(), config_file=...)

Flags follow the field type (`agents.fields`): `bool` → `--x/--no-x`; `dict` → JSON;
`list[X]` → one or more values; `Literal` → choices; `X | None` → like X. Values are
converted by the same rules as YAML and Python (`agents.fields.coerce_value`).

`ArgumentParser` prints a user error as one line (`lppo train: error: ...`) and exits with
status 2, instead of argparse's usage block followed by the message.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

from agents.fields import ConfigError, coerce_value, field_docs, field_types, from_mapping

__all__ = [
    "ArgumentParser",
    "add_dataclass_arguments",
    "dataclass_from_args",
    "load_mapping",
]


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are one line and exit status 2."""

    def error(self, message: str) -> typing.NoReturn:  # noqa: D102 - argparse's contract
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected JSON, got {text!r} ({e})") from e


def _converter(tp: Any, name: str) -> Any:
    """Argparse `type=`: the string coerced to `tp` by the config rules."""

    def convert(text: str) -> Any:
        try:
            return coerce_value(text, tp, name)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e).replace("config expects ", "expects ")) from e

    convert.__name__ = getattr(tp, "__name__", "value")  # argparse names it in messages
    return convert


def _strip_none(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def add_dataclass_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    defaults: bool = True,
) -> argparse.ArgumentParser:
    """Add one `--field-name` flag per field of dataclass `cls` to `parser`.

    Args:
        parser: the parser (or subparser) to extend.
        cls: the config dataclass; help text from `agents.fields.field_docs`.
        exclude: fields that get no flag (set by the command itself).
        defaults: True puts each field's default in the parsed namespace; False leaves an
            unset flag out of the namespace, so it does not override a `--config` file.

    Returns:
        `parser`.
    """
    docs = field_docs(cls)
    types_ = field_types(cls)
    skip = set(exclude)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        tp = _strip_none(types_[f.name])
        default = _default_of(f)
        shown = "" if default is dataclasses.MISSING else f" (default: {default!r})"
        kw: dict[str, Any] = {
            "dest": f.name,
            "help": (docs.get(f.name, "") + shown).strip().replace("%", "%%"),
        }
        if default is dataclasses.MISSING:
            kw["required"] = True
        elif defaults:
            kw["default"] = default
        else:
            kw["default"] = argparse.SUPPRESS
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        flag = "--" + f.name.replace("_", "-")
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif origin is dict or tp is dict:
            parser.add_argument(flag, type=_json_arg, metavar="JSON", **kw)
        elif origin is Literal:
            parser.add_argument(flag, type=_converter(tp, f.name), choices=list(args), **kw)
        elif origin in (list, tuple):
            fixed = origin is tuple and args and args[-1] is not Ellipsis
            item = args[0] if args else Any
            parser.add_argument(
                flag,
                type=_converter(item, f.name),
                nargs=len(args) if fixed else "+",
                metavar=f.name.upper(),
                **kw,
            )
        else:
            parser.add_argument(flag, type=_converter(tp, f.name), metavar=f.name.upper(), **kw)
    return parser


def load_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML (or JSON) file of config fields, as a dict; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    import yaml

    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid YAML: {' '.join(str(e).split())}") from e
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{p}: expected a mapping of fields, got {type(loaded).__name__}")
    return dict(loaded)


def dataclass_from_args(
    cls: type,
    args: argparse.Namespace,
    *,
    config_file: str | Path | None = None,
    exclude: Iterable[str] = (),
) -> Any:
    """Build `cls` from defaults ← `config_file` ← the flags present in `args`.

    Args:
        cls: the config dataclass.
        args: parsed flags (see `add_dataclass_arguments`); fields absent from it keep the
            file's or the class's value.
        config_file: optional YAML/JSON file of fields.
        exclude: fields never taken from the flags.
    """
    data: dict[str, Any] = {}
    if config_file is not None:
        data.update(load_mapping(config_file))
    skip = set(exclude)
    for f in dataclasses.fields(cls):
        if f.name not in skip and hasattr(args, f.name):
            data[f.name] = getattr(args, f.name)
    source = str(config_file) if config_file is not None else "command line"
    return from_mapping(cls, data, source=source)
