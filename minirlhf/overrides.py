"""`--set section.field=value`: change one field of a nested frozen config from the command line.

The value's type comes from the dataclass's own annotation (int, float, bool, str, or an optional one), and the
new config is built with `dataclasses.replace`, so each config's own `__post_init__` checks the value exactly as
it checks one written in Python. Errors are ValueErrors in words, which the CLI turns into argparse's one-line
message; an unknown field lists the valid ones.
"""
from __future__ import annotations

import dataclasses
import types
import typing

TRUE, FALSE, NONE = ("true", "yes", "1", "on"), ("false", "no", "0", "off"), ("none", "null")


def fields(cfg) -> dict[str, object]:
    """Every settable dotted path of a nested config, with its current value (what `--help` lists)."""
    found = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            found.update({f"{f.name}.{k}": v for k, v in fields(value).items()})
        else:
            found[f.name] = value
    return found


def apply(cfg, assignments: list[str]):
    """A copy of `cfg` with each "a.b.c=value" applied in order (later ones win)."""
    for text in assignments:
        path, sep, value = text.partition("=")
        if not sep or not path:
            raise ValueError(f"--set takes section.field=value (e.g. ppo.beta=0.1), got {text!r}")
        cfg = _set(cfg, path.strip().split("."), value.strip(), path.strip())
    return cfg


def _set(cfg, names: list[str], value: str, path: str):
    hints = typing.get_type_hints(type(cfg))
    name = names[0]
    if name not in hints:
        valid = ", ".join(sorted(fields(cfg)))
        raise ValueError(f"unknown config field {path!r}: {type(cfg).__name__} has {valid}")
    kind, optional = _unwrap(hints[name])
    if len(names) > 1:  # a nested config: descend (an unset optional one starts from its defaults)
        inner = getattr(cfg, name)
        if inner is None and dataclasses.is_dataclass(kind):
            inner = kind()
        if not dataclasses.is_dataclass(inner):
            raise ValueError(f"{path!r}: {name} is a {kind.__name__}, not a section with fields")
        new = _set(inner, names[1:], value, path)
    else:
        new = _parse(value, kind, optional, path)
    try:
        return dataclasses.replace(cfg, **{name: new})
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}={value}: {e}") from None


def _unwrap(hint) -> tuple[type, bool]:
    """(the type, whether None is allowed) from an annotation like `float` or `AdaptiveKLConfig | None`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _parse(value: str, kind: type, optional: bool, path: str):
    if optional and value.lower() in NONE:
        return None
    if kind is bool:
        if value.lower() not in TRUE + FALSE:
            raise ValueError(f"{path} is true or false, got {value!r}")
        return value.lower() in TRUE
    if dataclasses.is_dataclass(kind):
        raise ValueError(f"{path} is a section: set its fields ({path}.FIELD=value)"
                         + (f" or turn it off with {path}=none" if optional else ""))
    try:
        return kind(value) if kind in (int, float, str) else value
    except ValueError:
        raise ValueError(f"{path} is {'an' if kind is int else 'a'} {kind.__name__}, got {value!r}") from None
