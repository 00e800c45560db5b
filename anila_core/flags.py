"""The command line's shared flag parsing: integers, the training settings as flags, and what they override."""

from __future__ import annotations

import argparse
import decimal
from dataclasses import fields

from anila_core.sampling.compile_rule import parse_fast
from anila_core.training.config import TrainConfig
from anila_core.training.file_sources import absolute_data_spec

__all__ = ["add_config_flags", "config_overrides", "integer_flag", "listed"]


def integer_flag(text: str) -> int:
    """An integer flag's value: ``2000``, or ``1e3`` when it names an integer exactly (``1.5`` does not)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = decimal.Decimal(text)
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
    except decimal.InvalidOperation:
        pass
    raise argparse.ArgumentTypeError(f"expected an integer (such as 2000 or 2e3), got {text!r}")


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    group = parser.add_argument_group("hyperparameters (each overrides the preset)")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default {getattr(defaults, f.name)!r} before the preset)"
        if f.metadata.get("choices"):  # the metavar hides argparse's own {a,b,c}: the values are listed here
            help_text += f"; one of: {listed(f.metadata['choices'])}"
        if f.type in ("bool", bool):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            kinds = {"int": integer_flag, "float": float, "str": str, "str | bool": _fast_flag}
            kind = kinds[f.type if isinstance(f.type, str) else f.type.__name__]
            group.add_argument(
                flag,
                dest=f.name,
                type=kind,
                default=None,
                choices=f.metadata.get("choices"),
                metavar=f.name.upper(),
                help=help_text,
            )


def listed(values) -> str:
    """``a, b, c`` for a help text, the empty string shown as ``''`` and booleans as the flags take them (``true``)."""
    return ", ".join(repr(v) if v == "" else str(v).lower() if isinstance(v, bool) else str(v) for v in values)


def _fast_flag(text: str):
    """``--fast auto|true|false`` as the config holds it: ``"auto"``, ``True`` or ``False``."""
    try:
        return parse_fast(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def config_overrides(args: argparse.Namespace) -> dict:
    """The settings given on the command line (every flag named after a TrainConfig field that was set)."""
    names = {f.name for f in fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if overrides.get("dataset"):  # a folder or file of your own, as the run records it: its absolute path
        overrides["dataset"] = absolute_data_spec(overrides["dataset"])
    if overrides.get("dataset") and "target" in overrides:
        raise ValueError(
            "--target and --dataset: choose one; --target learns a 2-D toy density, --dataset an image dataset, "
            "a folder of images or points of a file"
        )
    return overrides
