"""Command-line flags generated from the settings tree: `--sip-port`, `--recognizer-engine-device`, plus
the short aliases of `FLAG_ALIASES`; help text is each field's description."""

from __future__ import annotations

import argparse
import json
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from ivr.app.config import Setting, settings

_DEST = "setting:"  # argparse dest of a setting's flag: the prefix, then the dotted path


def _optional_inner(annotation: Any) -> Any:
    """`X` of `X | None`; the annotation itself otherwise."""
    if get_origin(annotation) in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _is_json(annotation: Any) -> bool:
    return get_origin(annotation) in (list, tuple, set, frozenset, dict)


def _argument(setting: Setting) -> tuple[tuple[str, ...], dict[str, Any]]:
    inner = _optional_inner(setting.annotation)
    kwargs: dict[str, Any] = {"dest": _DEST + setting.key, "default": argparse.SUPPRESS}
    help_text = setting.field.description or ""
    if inner is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif get_origin(inner) is Literal:
        choices = get_args(inner)
        kwargs.update(choices=choices, type=type(choices[0]))
    elif _is_json(inner):
        kwargs.update(type=json.loads, metavar="JSON")
    else:
        kwargs["metavar"] = setting.path[-1].upper()
    kwargs["help"] = f"{help_text} [{setting.env}]" if help_text else f"[{setting.env}]"
    return setting.flags, kwargs


def add_setting_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...] | None = None) -> None:
    """One flag per setting of `sections` (all if None). Secrets have none: a command line is visible
    to every user of the machine, so they come from the environment or a file only."""
    for setting in settings(sections):
        if setting.secret:
            continue
        flags, kwargs = _argument(setting)
        parser.add_argument(*flags, **kwargs)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, nested as the tree is: {"sip": {"port": "5070"}}."""
    tree: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if not dest.startswith(_DEST):
            continue
        *parents, leaf = dest.removeprefix(_DEST).split(".")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return tree
