"""Typed configuration: how the dataclasses behind `d2v serve`, `d2v embed`, `d2v pretrain` and
`d2v finetune` become command lines and config files. One mechanism for every command.

A field's annotation is its type (int, float, bool, str, a Literal of choices, list[X], tuple[X, ...],
X | None), its default is the default, and the docstring under it is its `--help` text. A value that
lives in a table of the code (a reference recipe's) is not copied into the docstring: `{TABLE}` there
stands for the field's value in the table the dataclass names so in its `help_tables` (`help_text`).
`add_arguments` adds one `--flag` per field (underscores become dashes); `config_from_args` builds
the dataclass from the defaults, then a JSON or YAML `--config` file (where the command takes one),
then the flags given, converting and checking every value by its field's type. A value that does not
fit raises `ConfigError`, one line naming the file and the key (the commands print it and exit 2).

Field metadata adjusts a flag: `flag` (its name, if not the field's), `metavar`, `repeat` (a list
given as a repeated flag rather than as several values after one flag).

Torch-free and cheap to import: `d2v COMMAND --help` builds its parser from this module.
"""

import argparse
import dataclasses
import functools
import json
import re
import types
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Literal

__all__ = ["ConfigError", "add_arguments", "config_from_args", "convert", "field_docs", "help_text",
           "read_config_file", "values_from_args"]


class ConfigError(ValueError):
    """A setting that does not fit its field: one line naming the file (if any) and the key."""


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Per-field docstrings (the string literal under each annotated field) of a dataclass, with
    whitespace runs folded to one space; empty when the source cannot be read."""
    import ast
    import inspect
    import itertools
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # no source (e.g. only bytecode installed): flags without help
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _show(value: Any) -> str:
    """A value as its flag takes it: 0.001, 1e-08, and a tuple as its values (0.9 0.98)."""
    if isinstance(value, tuple | list):
        return " ".join(_show(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _in_table(table: Mapping[str, Any], name: str) -> str:
    """A field's value in a table of {field: value}, or of {modality: {field: value}} ("image 0.05,
    audio and text 0.01"; one value when all agree; None: no value there)."""
    if not all(isinstance(row, Mapping) for row in table.values()):
        return _show(table[name])
    if not any(name in row for row in table.values()):
        raise KeyError(name)
    groups: dict[str, list[str]] = {}
    for key, row in table.items():
        if row.get(name) is not None:
            groups.setdefault(_show(row[name]), []).append(key)
    if len(groups) == 1 and len(next(iter(groups.values()))) == len(table):
        return next(iter(groups))
    return ", ".join(f"{', '.join(keys[:-1])} and {keys[-1]} {value}" if len(keys) > 1 else f"{keys[0]} {value}"
                     for value, keys in groups.items())


def help_text(cls: type, name: str) -> str:
    """The `--help` text of a field: its docstring, each `{TABLE}` in it replaced by the field's value in
    `cls.help_tables[TABLE]` (a {field: value} table, or {modality: {field: value}}), so that a reference
    value is stated once, in the table the run reads.

    Raises:
        KeyError: a placeholder names no table, or the table has no value for the field (a bug)."""
    tables: Mapping[str, Mapping[str, Any]] = getattr(cls, "help_tables", {})
    return _PLACEHOLDER.sub(lambda m: _in_table(tables[m.group(1)], name), field_docs(cls).get(name, ""))


def _strip_none(hint: Any) -> tuple[Any, bool]:
    """X | None -> (X, True); X -> (X, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


_PARSERS: dict[Any, Callable[[str], Any]] = {int: int, float: float, str: str, bool: _parse_bool}
_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _scalar(hint: Any, value: Any, key: str) -> Any:
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if not any(value == c and type(value) is type(c) for c in choices):  # 1 is not True, nor "1" 1
            raise ConfigError(f"{key}: expected one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if hint not in _PARSERS:
        raise TypeError(f"{key}: unsupported field type {hint!r}")
    if isinstance(value, str) and hint is not str:  # e.g. YAML 1.1 reads `lr: 1e-3` as a string
        try:
            return _PARSERS[hint](value.strip())
        except (ValueError, argparse.ArgumentTypeError):
            raise ConfigError(f"{key}: expected {_NAMES[hint]}, got {value!r}") from None
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str), bool: lambda v: isinstance(v, bool)}[hint](value)
    if not ok:
        raise ConfigError(f"{key}: expected {_NAMES[hint]}, got {value!r}")
    return float(value) if hint is float else value


def convert(hint: Any, value: Any, key: str) -> Any:
    """`value` (from a config file or a flag) as the field type `hint` says, or ConfigError naming `key`.

    Strings are parsed as the flag would parse them ("1e-3" -> 0.001 for a float, "no" -> False for a
    bool), lists become tuples for tuple fields; nothing else is coerced (2.5 is not an integer)."""
    hint, optional = _strip_none(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: may not be null")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args[-1] is not Ellipsis and len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        items = [_scalar(args[0], v, key) for v in value]
        return tuple(items) if origin is tuple else items
    return _scalar(hint, value, key)


def _fields(cls: type, only: Collection[str] | None) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if only is None or f.name in only]


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
                  only: Collection[str] | None = None, config_file: bool = False, switches: bool = False) -> None:
    """One `--flag` per field of the dataclass `cls` (or per field named in `only`), its docstring the
    help (with the default, where the field has one), plus `--config FILE` when `config_file`.

    Bools take a value (`--hflip false`), or with `switches` are `--warmup/--no-warmup`. Flags not
    given leave no attribute on the namespace, so that `config_from_args` can tell them from a file's
    values."""
    hints = typing.get_type_hints(cls)
    if config_file:
        parser.add_argument("--config", metavar="FILE", help="JSON or YAML file of field values; flags override it")
    for f in _fields(cls, only):
        hint, _ = _strip_none(hints[f.name])
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text(cls, f.name)}
        show_default = _default(f) is not dataclasses.MISSING
        if origin is Literal:
            kwargs["choices"] = list(args)
        elif hint is bool and switches:
            kwargs["action"] = argparse.BooleanOptionalAction
            show_default = False
        elif hint is bool:
            kwargs.update(type=_parse_bool, metavar="{true,false}")
        elif origin is list and f.metadata.get("repeat"):
            kwargs.update(action="append", type=_PARSERS[args[0]])
            show_default = False
        elif origin is list:
            kwargs.update(type=_PARSERS[args[0]], nargs="+")
        elif origin is tuple:
            kwargs.update(type=_PARSERS[args[0]], nargs=len(args))
        else:
            kwargs["type"] = _PARSERS[hint]
        if "metavar" in f.metadata:
            kwargs["metavar"] = f.metadata["metavar"]
        if show_default:
            kwargs["help"] += f" (default: {_default(f)})"
        parser.add_argument(f.metadata.get("flag", "--" + f.name.replace("_", "-")), **kwargs)


def read_config_file(path: str, cls: type) -> dict[str, Any]:
    """The settings of a JSON or YAML file (.yaml, .yml), checked and converted by `cls`'s field types;
    keys may be written with dashes (max-tokens) or underscores, and as a field's name or its flag's."""
    try:
        text = Path(path).read_text()
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
            data = {} if data is None else data
        else:
            data = json.loads(text)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - json.JSONDecodeError, yaml.YAMLError: one line, not a traceback
        raise ConfigError(f"{path}: not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'}: "
                          f"{' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of setting names to values")
    hints = typing.get_type_hints(cls)
    names = {f.name: f.name for f in dataclasses.fields(cls)}
    names |= {f.metadata["flag"].lstrip("-").replace("-", "_"): f.name for f in dataclasses.fields(cls)
              if "flag" in f.metadata}  # a setting may also go by its flag's name (model: for --model)
    values = {}
    for key, value in data.items():
        name = names.get(str(key).replace("-", "_"))
        if name is None:
            raise ConfigError(f"{path}: {key}: unknown setting")
        try:
            values[name] = convert(hints[name], value, str(key))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    return values


def values_from_args(cls: type, args: argparse.Namespace, only: Collection[str] | None = None) -> dict[str, Any]:
    """The fields of `cls` (or those in `only`) from the defaults, then `args.config` (if the command
    has one), then the flags given; every one converted by its field's type.

    Raises:
        ConfigError: a config file's value does not fit, or a required setting is missing."""
    hints = typing.get_type_hints(cls)
    chosen = _fields(cls, only)
    values = {f.name: _default(f) for f in chosen}
    if getattr(args, "config", None):
        values.update({k: v for k, v in read_config_file(args.config, cls).items() if k in values})
    given = vars(args)
    values.update({f.name: convert(hints[f.name], given[f.name], "--" + f.name.replace("_", "-"))
                   for f in chosen if f.name in given})
    missing = [name for name, v in values.items() if v is dataclasses.MISSING]
    if missing:
        raise ConfigError("missing required settings: " + ", ".join("--" + m.replace("_", "-") for m in missing))
    return values


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """An instance of the dataclass `cls` from the defaults, `--config FILE` and the flags given."""
    return cls(**values_from_args(cls, args))
