"""The commands: those of every family (train, eval, diagnose, report, sample, data), and any family's own `Command`,
turned into `varilab NAME RUN [options]`. Each takes the words after its name and returns the text to print. Nothing
here names a family or a family's command: they come from the registry. Heavy modules (PyTorch, the report) are
imported per command, so `varilab --help` starts at once."""
from __future__ import annotations

from typing import Callable

from ..families import registry
from .family import family_command
from .printing import json_ready, table_lines
from .train import parse_train, still_improving, train
from .verbs import data, diagnose, evaluate, report, sample

SHARED: dict[str, tuple[str, Callable[[list[str]], str]]] = {
    "train": ("train a model and write a run folder (`varilab train --model M --help`)", train),
    "eval": ("test-split metrics of a run", evaluate),
    "diagnose": ("posterior-collapse diagnostics of a run", diagnose),
    "report": ("write the run's self-contained HTML report", report),
    "sample": ("draw samples from a trained generative run", sample),
    "data": ("data sets: list them, or collect transformer activations", data),
}


def listing() -> dict[str, str]:
    """Every command and its one line: those of every family, then the families' own, in registry order."""
    registry.builtin()
    found = {name: text for name, (text, _) in SHARED.items()}
    for fam in registry.ordered():
        for name, cmd in fam.commands.items():
            owners = ", ".join(f.name for f in registry.having(name))
            found.setdefault(name, f"{cmd.help} ({owners} runs)")
    return found


def run_command(name: str, argv: list[str]) -> str:
    """`varilab NAME ...`: a command of every family, or one of a family's own."""
    if name in SHARED:
        return SHARED[name][1](argv)
    which = registry.having(name)
    if not which:
        raise ValueError(f"unknown command {name!r}; choose one of {', '.join(listing())}")
    commands = list({id(f.commands[name]): f.commands[name] for f in which}.values())
    return family_command(name, argv, commands, which)


__all__ = ["SHARED", "json_ready", "listing", "parse_train", "run_command", "still_improving", "table_lines", "train"]
