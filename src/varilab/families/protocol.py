"""What a model family answers: the same few verbs for every family, as plain functions, and its own commands
as data.

    train(opts, out, resume, quiet) -> list of epoch metrics   (calls folder.begin once its input is checked)
    load(run_dir, opts, data, raw) -> Run                      (data: another data set, or None)
    evaluate(run, **flags) -> dict                             (JSON-ready numbers)
    diagnose(run, **flags) -> (dict, list of text lines)
    report(run) -> report.Page                                 (sections as data; the report draws the rest)
    sample(run, n, seed, **flags) -> {name: array}             (and "note": words printed after the files)

`flags` are the fields of the options class the family declares for that verb (`Family.flags`), so a verb's
own flags (e.g. `varilab eval RUN --FLAG`) belong to the family that uses them. A verb a family cannot answer is
None. Any other command is an entry of `Family.commands`: a `Command` brings its options, its function and its
one line of help, and the command line builds `varilab NAME` from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

VERBS = ("evaluate", "diagnose", "report", "sample")  # every family's verbs beyond train and load


@dataclass(frozen=True)
class Command:
    """A command of the families that list it: `varilab NAME RUN [options]`.

    `run(run, opts) -> (dict, lines)` prints the lines, or the dict with --json. With `writes` (the files it
    writes into a folder), the command also takes --out DIR, --force and --quiet, and is called
    `run(run, opts, out, quiet)`; an earlier result's files in --out are replaced only with --force. With
    `writes_file`, the options' own `out` names the one file it writes, and --force is needed to replace one. With
    `writes_run`, it makes runs as train does (`folder.new_run`) and takes --out DIR, --force and --quiet.
    """
    help: str  # one line, for `varilab --help`
    options: type  # a dataclass of its options, each declared once (an AXIS class attribute picks which apply)
    run: Callable
    choices: dict[str, str] | None = None  # the values of the options' AXIS field, each with one line
    about_run: str = "the run folder"  # what RUN must be, for --help
    writes: tuple[str, ...] = ()
    writes_file: bool = False  # its options' `out` names one file: an existing one is replaced only with --force
    writes_run: bool = False  # it makes a run (or runs) in --out DIR: called run(run, opts, out, force, quiet)
    models: tuple[str, ...] | None = None  # the models of its families it serves (None: every one)


@dataclass
class Family:
    name: str
    models: dict[str, str]  # model name -> one line
    options: type  # the dataclass of every training option of the family (extends options.TrainOptions)
    train: Callable
    load: Callable
    evaluate: Callable | None = None
    diagnose: Callable | None = None
    report: Callable | None = None
    sample: Callable | None = None
    flags: dict[str, type] = field(default_factory=dict)  # verb -> the dataclass of the family's own flags of it
    commands: dict[str, Command] = field(default_factory=dict)  # the family's own commands, by name
    why_not: dict[str, str] = field(default_factory=dict)  # verb -> where to look instead, when the family lacks it
    resumable: tuple[str, ...] = ("epochs",)  # options a resumed run may change
    files: tuple[str, ...] = ()  # files or folders of its own in a run folder, replaced with the run
    facts: tuple[str, ...] = ()  # keys its config.json records beside the options (sizes derived from the data)
    upgrade: Callable[[dict], dict] | None = None  # an older config.json's keys -> the current ones
    improving_on: str = "test_loss"  # the logged quantity that says whether a run stopped while still improving
    trends: Callable[[list[dict], object], str] | None = None  # its own warnings from (per-epoch metrics, options)

    def answers(self, name: str) -> bool:
        """Whether the family has the verb or command `name`."""
        return name in self.commands or (name in VERBS and getattr(self, name) is not None)


@dataclass
class Run:
    """A loaded run: its folder, family, options, trained model and data."""
    dir: Path
    family: Family
    options: object
    model: object
    data: object = None

    @property
    def settings(self) -> list[tuple[str, object]]:
        from .options import settings

        return settings(self.options, self.model)
