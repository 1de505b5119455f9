"""Options, each declared once as a dataclass field: its default, help text, constraint and the models it
applies to. Everything else is derived from the fields: the command-line flags (built by simple-parsing),
the config-file keys, validation, and the configuration table of the report.

    @dataclass
    class MyOptions(TrainOptions):
        DEFAULTS = {"epochs": 20}                   # this family's values of the shared options
        PER_MODEL = {"mixed": {"lr": 1e-2}}         # a model's values of any option
        model: str = option("mine", "the model")
        width: int = option(64, "hidden units", check=positive_int.upto(4096))
        mix: float = option(0.5, "mixing weight", check=unit_interval, models=("mixed",))

Every int or float option declares its range as its check (a `Range`): a value outside is refused in one line.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

# constraints: value -> error text or None; a numeric option's is its declared range
from .ranges import (MILLION, Range, between, non_negative, non_negative_int, positive, positive_int,  # noqa: F401
                     positive_ints, any_seed, unit_interval)


def option(default, help: str, *, check=None, choices=None, models=None, parse=None, when=None):
    """One option: `check(value)` returns an error text (or None), `choices` the valid values, `models` the
    models it applies to (None: all of its family's), `parse(text)` reads its command-line text, `when(opts, model)` whether
    it matters given the other options and the trained model (only under one quantiser; only for a U-Net, which the
    data's shape chose; `model` None: not known): the report's configuration table leaves it out otherwise."""
    meta = {"help": help, "check": check, "choices": tuple(choices) if choices else None,
            "models": tuple(models) if models else None, "parse": parse, "when": when}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def ints(text) -> list[int]:
    """'512,256' -> [512, 256]."""
    return [int(v) for v in str(text).split(",") if v.strip()]


def floats(text) -> list[float]:
    """'9,6,4.5' -> [9.0, 6.0, 4.5]."""
    return [float(v) for v in str(text).split(",") if v.strip()]


def default_for(cls, name: str, model: str):
    """An option's value for `model` when none is given: the model's (cls.PER_MODEL), else the family's (DEFAULTS of
    the class or of the class it extends, nearest first), else the field's own default."""
    tables = [getattr(cls, "PER_MODEL", {}).get(model, {})] + [k.__dict__.get("DEFAULTS", {}) for k in cls.__mro__]
    for table in tables:
        if name in table:
            return table[name]
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


@dataclass
class TrainOptions:
    """What every family trains with. A family's options class extends it and adds only its own fields; its
    values of these (and any model's values of any option) are data: DEFAULTS = {option: value} for the family,
    PER_MODEL = {model: {option: value}}, HELP = {option: text} where the family's words are more exact. An
    option left None takes its value for the model when the options are made, so config.json records it; a family
    that sets none of them trains with the values below."""
    DEFAULTS: ClassVar[dict] = {"epochs": 10, "batch_size": 128, "lr": 1e-3, "test_fraction": 0.2}
    PER_MODEL: ClassVar[dict] = {}
    HELP: ClassVar[dict] = {}
    data: str | None = option(None, "data set name or a .npy/.npz/.csv path")
    epochs: int | None = option(None, "epochs to train (with --resume, the new total)", check=positive_int.upto(100_000))
    batch_size: int | None = option(None, "examples per batch", check=positive_int)
    lr: float | None = option(None, "Adam learning rate", check=positive.upto(10))
    seed: int = option(0, "random seed of the split, initialisation and sampling", check=any_seed)
    test_fraction: float | None = option(None, "share of the data held out as the test split", check=unit_interval)

    def __post_init__(self):
        model = getattr(self, axis(type(self)), None)
        for f in dataclasses.fields(self):
            if getattr(self, f.name) is None:
                setattr(self, f.name, default_for(type(self), f.name, model))


def help_of(cls, f: dataclasses.Field) -> str:
    return getattr(cls, "HELP", {}).get(f.name, f.metadata["help"])


def applies(f: dataclasses.Field, model: str) -> bool:
    return f.metadata.get("models") is None or model in f.metadata["models"]


def axis(cls) -> str:
    """The field whose value decides which options apply: `model`, or the class's AXIS (e.g. a solver's method)."""
    return getattr(cls, "AXIS", "model")


def chosen(opts) -> str | None:
    """The value of the options' axis (the model, a method, ...); None for a class without one."""
    return getattr(opts, axis(type(opts)), None)


def fields_for(cls, model: str) -> list[dataclasses.Field]:
    """The options of `cls` that apply to `model` (the axis field itself included)."""
    return [f for f in dataclasses.fields(cls) if applies(f, model)]


def keys_for(cls, model: str) -> list[str]:
    return [f.name for f in fields_for(cls, model)]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def key_of(word: str) -> str | None:
    """The option a command-line word names ("--latent-dim=8" -> "latent_dim"); None for a word that is no flag."""
    return word[2:].split("=")[0].replace("-", "_") if word.startswith("--") else None


def settings(opts, model=None) -> list[tuple[str, object]]:
    """(option, value) for the options that apply to the run's model, and matter given the others and the trained
    `model` where it is given, numbers as a person writes them (0.001, 8/255, 1000; text, so that the table aligns
    them alike): the report's configuration table."""
    return [(f.name, as_written(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
            for f in fields_for(type(opts), chosen(opts)) if (v := getattr(opts, f.name)) is not None
            and (f.metadata.get("when") is None or f.metadata["when"](opts, model))]


def to_dict(opts) -> dict:
    """The options that apply to the run's model, as written to config.json."""
    return {f.name: getattr(opts, f.name) for f in fields_for(type(opts), chosen(opts))}


def validate(opts) -> None:
    """Check every applicable option against its choices and constraint; one error naming the option."""
    for f in fields_for(type(opts), chosen(opts)):
        value = getattr(opts, f.name)
        choices, check = f.metadata.get("choices"), f.metadata.get("check")
        if choices and value not in choices:
            raise ValueError(f"{f.name} must be one of {', '.join(str(c) for c in choices if c is not None)}, "
                             f"got {value!r}")
        problem = check(value) if check else None
        if problem:
            raise ValueError(f"{f.name} {problem}")


def read_config_file(path: str | Path) -> dict:
    """A JSON or TOML file of options (dashes allowed: latent-dim = latent_dim)."""
    import tomllib

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        if path.suffix == ".toml":
            d = tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            d = json.loads(path.read_text())
        else:
            raise ValueError(f"{path}: config files are .json or .toml, got {path.suffix or 'no suffix'}")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: not valid {path.suffix[1:].upper()}: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a table of keys, got {type(d).__name__}")
    return {k.replace("-", "_"): v for k, v in d.items()}


def check_keys(keys, cls, model: str, where: str, elsewhere: dict[str, str]) -> None:
    """Refuse a key that is not an option of `model`: name the models it applies to (`elsewhere`: option ->
    where it belongs), or the closest valid key."""
    import difflib

    valid = keys_for(cls, model)
    for key in keys:
        if key in valid:
            continue
        if key in elsewhere:
            raise ValueError(f"{where}: {flag(key)} applies to {elsewhere[key]}, not to {model}")
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; valid keys: {', '.join(valid)}"
        raise ValueError(f"{where}: unknown config key {key!r}{hint}")


def to_argv(values: dict) -> list[str]:
    """Option values as command-line words, so a config file goes through the same parser as flags."""
    argv = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        argv += [flag(key), str(value)]
    return argv


_PARSERS: dict = {}  # (options class, model, extra flags) -> parser: building one reads the class's source


def parser(cls, model: str, prog: str, extra: list[tuple[str, dict]] = ()):
    """A command-line parser of the options of `cls` that apply to `model` (built by simple-parsing), plus
    the `extra` arguments ((flag, argparse keywords)) of the command itself. Errors raise ValueError."""
    key = (cls, model, tuple(name for name, _ in extra))
    if key not in _PARSERS:
        _PARSERS[key] = _build(cls, model, extra)
    _PARSERS[key].prog = prog
    return _PARSERS[key]


def _build(cls, model: str, extra):
    import simple_parsing

    class Parser(simple_parsing.ArgumentParser):
        def error(self, message):
            raise ValueError(message)

    hints = typing.get_type_hints(cls)
    shown = [f for f in fields_for(cls, model) if f.name != axis(cls)]
    view = dataclasses.make_dataclass("Options", [(f.name, _cli_type(hints[f.name], default_for(cls, f.name, model)),
                                                   _cli_field(cls, f, model)) for f in shown])
    view.__doc__ = " "
    title = "options" if not model else f"options of {model}" if axis(cls) == "model" else f"options of {flag(axis(cls))} {model}"

    class Group(simple_parsing.wrappers.DataclassWrapper):  # the group's title in --help, not the parser's names
        @property
        def title(self) -> str:
            return title

    class Help(simple_parsing.SimpleHelpFormatter):  # "(default: ...)" only where there is a default to show
        def _get_help_string(self, action):
            if action.default in (None, "") or action.required or (action.nargs == 0 and action.default is False):
                return action.help
            if isinstance(action.default, float):  # 8/255 or 0.0314, not 0.03137254901960784
                return f"{action.help} (default: {as_written(action.default)})"
            return super()._get_help_string(action)

    p = Parser(add_option_string_dash_variants=simple_parsing.DashVariant.DASH, formatter_class=Help)
    for name, kwargs in extra:
        p.add_argument(name, **kwargs)
    p.add_arguments(view, dest="options", dataclass_wrapper_class=Group)
    return p


def _cli_type(hint, default):
    """`int | None` as `int`: a flag takes a value or is left out (None then means "the model's value"), so --help
    shows `--n int`, not `--n [int]`."""
    args = typing.get_args(hint)
    if type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return hint


def as_written(value) -> str:
    """A default as a person writes it: 8/255 and 1/3 for the fractions they are (a float whose decimals run on), a
    float to 4 significant digits, anything else as it is."""
    if not isinstance(value, float):
        return str(value)
    from fractions import Fraction

    f = Fraction(value).limit_denominator(255)
    if f.denominator > 1 and abs(float(f) - value) < 1e-12 and len(repr(value)) > 8:
        return f"{f.numerator}/{f.denominator}"
    return f"{value:.4g}"


def _cli_field(cls, f: dataclasses.Field, model: str) -> dataclasses.Field:
    """The field as simple-parsing sees it: the model's default (shown in --help), the family's help text."""
    check = f.metadata.get("check")
    required = check is not None and not isinstance(check, Range) and check(None) is not None  # e.g. solve's --task
    custom = {"help": help_of(cls, f) + (f"; in {check}" if isinstance(check, Range) else "")
              + (" (required)" if required else "")}
    if f.metadata.get("choices"):
        custom["metavar"] = "{" + ",".join(str(c) for c in f.metadata["choices"] if c is not None) + "}"  # None: unset
    if f.metadata.get("parse"):
        custom.update(type=_reader(f.metadata["parse"]), nargs=None)
    meta = {"custom_args": custom}
    default = default_for(cls, f.name, model)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def number(kind, declared: Range):
    """An argparse `type` for a command's own numeric argument: `kind` (int or float) read, then `declared` checked;
    argparse names the flag ("argument --n: must be a positive integer, got 0")."""
    def read(text):
        value = _reader(kind)(text)
        problem = declared(value)
        if problem:
            import argparse

            raise argparse.ArgumentTypeError(problem)
        return value

    read.__name__, read.range = kind.__name__, declared
    return read


def _reader(parse):
    """`parse` for argparse: its own error text reaches the user (argparse replaces a plain ValueError's)."""
    import argparse

    def read(text):
        try:
            return parse(text)
        except (TypeError, ValueError, ArithmeticError) as e:  # e.g. --eps 1/0
            raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None

    read.__name__ = parse.__name__
    return read


def parse(cls, model: str, argv: list[str], prog: str, extra=()) -> tuple[object, object]:
    """(options, namespace of the extra arguments) from command-line words; the options are validated."""
    ns = parser(cls, model, prog, extra).parse_args(argv)
    has_axis = any(f.name == axis(cls) for f in dataclasses.fields(cls))
    opts = cls(**({axis(cls): model} if has_axis else {}), **dataclasses.asdict(ns.options))
    validate(opts)
    return opts, ns
