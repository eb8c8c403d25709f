"""Typed configs: one dataclass per command holds every default; the CLI, YAML files and the Python API share it.

Declare fields with :func:`option` so each one carries its help sentence, allowed choices or range
(``low``/``high`` inclusive, ``above`` exclusive) and whether it fixes the network (``fixed``: it cannot
change once a model exists). :func:`validate` checks choices and ranges wherever a config is built from
flags, a YAML file or a saved model dir, so ``--size -5`` and ``size: -5`` get the same one line. :func:`add_config_arguments` turns
a dataclass into kebab-case flags, :func:`config_from_args` layers the flags a user actually typed over a
base config (defaults, a ``--config`` YAML or the config saved in a model dir). Every flag may also be typed
with underscores (``--model_dir``), as the reference ports spell their arguments, and :func:`add_flag` gives a
plain argparse flag its other spellings the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

from facelab.core.errors import FacelabError
from facelab.core.files import atomic_write_text

T = TypeVar("T")
COMMAND_LINE = "command line"  # the source name of options typed as flags


def option(default: Any, help: str, choices: Iterable[Any] | None = None, fixed: bool = False,
           low: float | None = None, high: float | None = None, above: float | None = None,
           aliases: Iterable[str] = (), value_aliases: dict[str, str] | None = None,
           spellings: Iterable[str] = ()) -> Any:
    """A dataclass field with the metadata the CLI and validation need; a number (or each number of a
    list) must lie in ``low..high`` and be greater than ``above`` where those are given. ``aliases`` are
    the option's old names: flags, YAML files and saved model configs that use one still work, for one
    release, with a one-line note naming the new name. ``spellings`` are the names the reference ports
    give the option (StarGAN's ``metadata_path``): accepted for good and silently, like every option's
    snake-case flag, since a user who types them is not using an old facelab. ``value_aliases`` maps other spellings of a choice
    to it (DeepFaceLab's face type ``wf`` is ``whole``): wherever the config is made, the Python API too,
    the value is stored in its one spelling, so a saved config and every comparison see only that. A choice
    ending in ``:N`` (``cuda:N``) admits that prefix with any index (``cuda:1``)."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "fixed": fixed,
            "low": low, "high": high, "above": above, "aliases": tuple(aliases), "spellings": tuple(spellings),
            "value_aliases": dict(value_aliases or {})}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, name: str, source: str) -> Any:
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise FacelabError(f"{source}: option '{name}' may not be empty")
    origin = typing.get_origin(base)
    try:
        if origin in (list, tuple):
            (item_tp, *_) = typing.get_args(base) or (str,)
            if isinstance(value, str):
                value = value.replace(",", " ").split()
            items = [_coerce(v, item_tp, name, source) for v in value]
            return items if origin is list else tuple(items)
        if base is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
        if base is Path:
            return Path(value)
    except (TypeError, ValueError):
        raise FacelabError(f"{source}: option '{name}' expects {getattr(base, '__name__', base)}, got {value!r}") from None
    return value


def range_text(low: float | None = None, high: float | None = None, above: float | None = None) -> str:
    """How a range reads in an error: "1..100", ">= 1", "> 0", "> 0 and <= 1000"."""
    if low is not None and high is not None:
        return f"{low}..{high}"
    parts = [f">= {low}" if low is not None else "", f"> {above}" if above is not None else "",
             f"<= {high}" if high is not None else ""]
    return " and ".join(p for p in parts if p)


def check_range(value: float, name: str, source: str, low: float | None = None, high: float | None = None,
                above: float | None = None) -> None:
    """One line naming ``source`` and the option when ``value`` is outside its range."""
    if (low is not None and value < low) or (high is not None and value > high) or (above is not None and value <= above):
        shown = f"{flag_name(name)} {value}" if source == COMMAND_LINE else f"{name}={value}"
        raise FacelabError(f"{source}: {shown} is out of range; use {range_text(low, high, above)}")


def _is_choice(value: Any, choice: Any) -> bool:
    """``value`` is ``choice``, or ``choice`` ends in ``:N`` (e.g. ``cuda:N``) and ``value`` is its prefix with an index."""
    if isinstance(choice, str) and choice.endswith(":N") and isinstance(value, str):
        prefix, _, index = value.partition(":")
        return prefix == choice[:-2] and index.isdigit()
    return value == choice


def _check_values(cls: type, values: dict[str, Any], source: str) -> None:
    for f in dataclasses.fields(cls):
        value = values.get(f.name)
        if value is None:
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        choices = f.metadata.get("choices")
        bounds = {k: f.metadata.get(k) for k in ("low", "high", "above")}
        for v in items:
            if choices is not None and not any(_is_choice(v, c) for c in choices):
                allowed = ", ".join(map(str, choices))
                raise FacelabError(f"{source}: {f.name}={v!r} is not one of: {allowed}")
            if any(b is not None for b in bounds.values()) and isinstance(v, (int, float)) and not isinstance(v, bool):
                if v != v:  # NaN is in no range
                    raise FacelabError(f"{source}: {f.name} is NaN; give a number")
                check_range(v, f.name, source, **bounds)


def _canonical_values(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with each choice spelled as the option's ``value_aliases`` say (lists item by item)."""
    out = dict(values)
    for f in dataclasses.fields(cls):
        spelled = f.metadata.get("value_aliases")
        if spelled and out.get(f.name) is not None:
            value = out[f.name]
            out[f.name] = type(value)(spelled.get(v, v) for v in value) if isinstance(value, (list, tuple)) \
                else spelled.get(value, value)
    return out


def validate(cfg: Any, source: str = "config") -> None:
    """Check every field's value against its declared choices and range."""
    _check_values(type(cfg), {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}, source)


class Validated:
    """Base of the config dataclasses: a config checks its values when it is made, from the Python API
    too (``ExtractConfig(size=-5)`` is refused like ``--size -5``)."""

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in _canonical_values(type(self), values).items():
            if value is not values[name]:
                setattr(self, name, value)
        validate(self, type(self).__name__)

    def check(self) -> None:
        """Rules across options (what ``option``'s ranges cannot say), refused before any network is built;
        the trainer calls it once the options are final (after presets and saved configs)."""


def old_name_note(renamed: dict[str, str], source: str) -> None:
    """The one line that old option names get (see ``aliases`` of :func:`option`)."""
    names = ", ".join(f"'{old}' is now '{new}'" for old, new in renamed.items())
    print(f"facelab: note: {source}: {names}; the old names are accepted until the next release", file=sys.stderr)


def _renamed(cls: type, data: dict[str, Any], source: str) -> dict[str, Any]:
    """``data`` with old option names replaced by the current ones."""
    new_names = {old: f.name for f in dataclasses.fields(cls) for old in f.metadata.get("aliases", ())}
    spelled = {other: f.name for f in dataclasses.fields(cls) for other in f.metadata.get("spellings", ())}
    used = {key: new_names[key] for key in data if key in new_names}
    if used:
        old_name_note(used, source)
    return {used.get(key, spelled.get(key, key)): value for key, value in data.items()}


def config_from_dict(cls: type[T], data: dict[str, Any], source: str = "config", base: T | None = None) -> T:
    """Build ``cls`` from a plain dict, starting from ``base`` (or the defaults); unknown keys are refused."""
    data = _renamed(cls, data, source)
    types_ = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise FacelabError(f"{source}: unknown option(s) {', '.join(unknown)}; see --help for the valid names")
    values = dataclasses.asdict(base) if base is not None else {}
    for key, value in data.items():
        values[key] = _coerce(value, types_[key], key, source)
    values = _canonical_values(cls, values)
    _check_values(cls, values, source)  # before construction, so the error names ``source``
    return cls(**values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    out = {}
    for key, value in dataclasses.asdict(cfg).items():
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The ``option: value`` mapping of a YAML file, or one line naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FacelabError(f"config file {path} not found; check the path")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FacelabError(f"config file {path} is not valid YAML ({reason}); fix or delete it") from None
    if not isinstance(data, dict):
        raise FacelabError(f"config file {path} must hold a mapping of option: value")
    return data


def load_config(cls: type[T], path: str | Path, base: T | None = None) -> T:
    return config_from_dict(cls, read_yaml_mapping(path), source=str(path), base=base)


def save_config(cfg: Any, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def fixed_options(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("fixed")]


def check_fixed_unchanged(saved: Any, requested: Any, where: str) -> None:
    """Refuse a change to an option that fixes the network, naming the option and the saved value."""
    for name in fixed_options(type(saved)):
        old, new = getattr(saved, name), getattr(requested, name)
        if old != new:
            raise FacelabError(
                f"{name} cannot change once a model exists: {where} was made with {name}={old!r}, "
                f"not {new!r}; drop the flag or use a new model dir"
            )


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, exclude: Iterable[str] = ()) -> None:
    """Add one kebab-case flag per field; flags the user does not give stay absent from the namespace."""
    types_ = _field_types(cls)
    skip = set(exclude)
    topics = {first: title for title, first in getattr(cls, "HELP_TOPICS", {}).items()}
    target: Any = parser
    for f in dataclasses.fields(cls):
        if f.name in topics:  # `--help` lists the options by topic (a class's HELP_TOPICS)
            target = parser.add_argument_group(topics[f.name])
        if f.name in skip:
            continue
        tp, _ = _unwrap_optional(types_[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        helptext = f.metadata.get("help", "")
        if f.metadata.get("fixed"):
            helptext += " Fixed once the model exists."
        if f.metadata.get("value_aliases"):
            helptext += " Also accepted: " + ", ".join(f"{k} = {v}" for k, v in f.metadata["value_aliases"].items()) + "."
        helptext += f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": helptext}
        choices = f.metadata.get("choices")
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) in (list, tuple):
            kwargs["nargs"] = "+"
            if choices:
                kwargs["choices"] = choices
        else:
            kwargs["type"] = str
            if choices:
                kwargs["metavar"] = "{" + ",".join(map(str, choices)) + "}"
        target.add_argument(flag_name(f.name), **kwargs)
        # a bool's other spellings take an optional value (`--masked_training false`), as the reference ports' do
        other = {**kwargs, "help": argparse.SUPPRESS, **({"nargs": "?", "const": True} if tp is bool else {})}
        other.pop("action", None)
        for spelling in other_spellings(f.name, f.metadata.get("aliases", ())):
            target.add_argument(spelling, **other, action=OldFlag, new_flag=flag_name(f.name))
        for spelling in other_spellings(f.name, f.metadata.get("spellings", ()), own=True):
            target.add_argument(spelling, **other)


def other_spellings(name: str, names: Iterable[str] = (), own: bool = False) -> list[str]:
    """The flags that also set option ``name``: each of ``names`` in kebab and snake case, and with ``own``
    the option's own name in snake case (``--model_dir``: the reference ports spell every flag so, as YAML
    does). The old names (``aliases``) get the note; the option's spellings do not."""
    flags = [flag_name(n) for n in names] + ["--" + n for n in ((name, *names) if own else names)]
    return [n for n in dict.fromkeys(flags) if n != flag_name(name)]


def add_flag(parser: Any, flag: str, spellings: Iterable[str], **kwargs: Any) -> argparse.Action:
    """``parser.add_argument(flag, **kwargs)`` for a flag that is no config option, with its other
    ``spellings`` (the reference ports' ``--model_dir`` for ``--model-dir``): hidden from ``--help``, they
    store the same value, silently and for good. The spellings form one group of which at most one may be
    given, and that group is what ``required`` asks for, so a required flag may be typed either way."""
    group = parser.add_mutually_exclusive_group(required=kwargs.pop("required", False))
    action = group.add_argument(flag, **kwargs)
    for spelling in spellings:
        group.add_argument(spelling, dest=action.dest, type=action.type, choices=action.choices, nargs=action.nargs,
                           metavar=action.metavar, default=action.default, help=argparse.SUPPRESS)
    return action


class OldFlag(argparse.Action):
    """An option's old flag spelling: stores the value like the new flag and prints the one-line note
    (``parser.add_argument(OLD, dest=..., action=OldFlag, new_flag=NEW, help=argparse.SUPPRESS)``)."""

    def __init__(self, option_strings, dest, new_flag: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new_flag = new_flag

    def __call__(self, parser, namespace, values, option_string=None):
        old_name_note({option_string: self.new_flag}, COMMAND_LINE)
        setattr(namespace, self.dest, values)


def given_options(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def config_from_args(cls: type[T], args: argparse.Namespace, base: T | None = None) -> T:
    """Defaults (or ``base``), then ``--config FILE`` if given, then the flags the user typed."""
    config_file = getattr(args, "config", None)
    if config_file:
        base = load_config(cls, config_file, base=base)
    return config_from_dict(cls, given_options(args, cls), source=COMMAND_LINE, base=base)
