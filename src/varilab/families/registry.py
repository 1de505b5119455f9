"""The registry: family and model names, filled by each family's own module through `register`, and `load`, which
opens a run folder of any family. It sits low: it imports no family and no command, so a family imports it freely.
A family defined outside varilab (a user's module, a test file) registers itself the same way."""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path

from . import folder, options
from .protocol import Family, Run

FAMILIES: dict[str, Family] = {}  # family name -> family
MODELS: dict[str, Family] = {}  # model name -> its family
FIRST = ("vae", "sae", "diffusion")  # listed first, in this order; every other family after them
SHARED = ("train", "eval", "diagnose", "report", "sample", "data")  # commands of every family (varilab.commands)
LOW = ("folder", "options", "protocol", "registry")  # the modules of varilab.families that are not families


def register(family: Family) -> Family:
    """Add a family and its models to the registry (a model name belongs to one family)."""
    if not dataclasses.is_dataclass(family.options) or "model" not in {f.name for f in dataclasses.fields(family.options)}:
        raise TypeError(f"family {family.name!r}: options must be a dataclass with a 'model' field")
    for model in family.models:
        if model in MODELS and MODELS[model].name != family.name:
            raise ValueError(f"model {model!r} already belongs to the {MODELS[model].name} family")
    for name in family.commands:
        if name in SHARED:
            raise ValueError(f"family {family.name!r}: `{name}` is a command of every family, not one of its own")
    FAMILIES[family.name] = family
    MODELS.update({m: family for m in family.models})
    return family


def builtin() -> dict[str, Family]:
    """Model name -> family, with every family of this package imported (each registers itself), varilab's first
    families listed first, then the others by name."""
    from .. import families

    for module in pkgutil.iter_modules(families.__path__):
        if module.name not in LOW and not module.name.startswith("_"):
            importlib.import_module(f"{families.__name__}.{module.name}")
    return {m: f for f in ordered() for m in f.models}


def ordered() -> list[Family]:
    """The registered families, varilab's first ones first, then the others by name (the same order whichever of
    them a process happened to import first)."""
    return [FAMILIES[n] for n in FIRST if n in FAMILIES] + [FAMILIES[n] for n in sorted(FAMILIES) if n not in FIRST]


def family_of(model: str) -> Family:
    models = builtin()
    if model not in models:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(models)}")
    return models[model]


def having(name: str) -> list[Family]:
    """The families that answer the verb or command `name`."""
    builtin()
    return [f for f in ordered() if f.answers(name)]


class NotApplicable(ValueError):
    """A verb or command asked of a run whose family has no such thing: said as information (exit 2, no 'error:')."""


def refusal(name: str, family: Family, run_dir) -> str:
    """One line: why `varilab NAME` does not apply to a run of `family`, and which families it applies to."""
    which = having(name)

    def served(f: Family) -> list[str]:
        command = f.commands.get(name)
        return [m for m in f.models if command is None or command.models is None or m in command.models]
    where = "; it applies to " + ", ".join(f"{f.name} runs ({', '.join(served(f))})" for f in which) if which else ""
    hint = f"; {family.why_not[name]}" if name in family.why_not else ""
    return f"`varilab {name}` does not apply to {family.name} runs" + (f" ({run_dir})" if run_dir else "") + hint + where


def elsewhere(model: str) -> dict[str, str]:
    """Option -> the models it applies to, for the options of any family that do not apply to `model`."""
    own = MODELS[model]
    where = {}
    for fam in FAMILIES.values():
        for f in dataclasses.fields(fam.options):
            if fam is own and not options.applies(f, model):
                where.setdefault(f.name, " and ".join(f.metadata["models"]))
            elif fam is not own and f.name not in {g.name for g in dataclasses.fields(own.options)}:
                where.setdefault(f.name, f"the {fam.name} models ({', '.join(fam.models)})")
    return where


RECORD = ("family", "format")  # config.json's keys beside the options


def load_config(run_dir: str | Path) -> dict:
    """config.json of a run, in its family's current keys."""
    raw = folder.read_config(run_dir)
    builtin()
    if raw["family"] not in FAMILIES:
        raise ValueError(f"{run_dir}: family {raw['family']!r} is not registered; known: {', '.join(FAMILIES)}")
    family = FAMILIES[raw["family"]]
    return family.upgrade(raw) if family.upgrade else raw


def family_of_run(run_dir: str | Path) -> Family:
    """The family of the run in `run_dir`, from its config.json alone (nothing is loaded)."""
    return FAMILIES[load_config(run_dir)["family"]]


def load(run_dir: str | Path, data: str | None = None) -> Run:
    """A run folder of any family, loaded by its family: options, trained model and data."""
    run_dir = Path(run_dir)
    raw = load_config(run_dir)
    family = FAMILIES[raw["family"]]
    model = raw.get("model")
    if model not in family.models:
        raise ValueError(f"{run_dir / folder.CONFIG}: unknown model {model!r} for the {family.name} family")
    keys = options.keys_for(family.options, model)
    known = {f.name for f in dataclasses.fields(family.options)} | set(RECORD + family.facts)  # older folders also
    options.check_keys([k for k in raw if k not in known], family.options, model,  # hold other models' options
                       str(run_dir / folder.CONFIG), elsewhere(model))
    opts, _ = options.parse(family.options, model, options.to_argv({k: v for k, v in raw.items()
                                                                     if k in keys and k != "model"}), prog=str(run_dir))
    return family.load(run_dir, opts, data=data, raw=raw)
