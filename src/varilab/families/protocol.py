"""What a model family answers: the same few verbs for every family, as plain functions.

    train(opts, out, resume, quiet) -> list of epoch metrics   (calls folder.begin once its input is checked)
    load(out, opts, data) -> Run                               (data: another data set, or None)
    evaluate(run, nll_k) -> dict                               (JSON-ready numbers)
    diagnose(run, threshold) -> (dict, list of text lines)
    report(run) -> report.Page                                 (sections as data; the report draws the rest)
    sample(run, n, steps, sampler, seed, prior) -> {name: array}
    solve(run, opts, out, quiet) -> summary line              (inverse problems with the run as the prior)
    attack(run, opts, out, quiet) -> summary line             (the posterior collapse attack on the run's encoder)
    robustness(run, opts) -> (dict, list of text lines)       (a purifier run against classifier attacks)
    predict(run, opts) -> (dict, list of text lines)          (follow new sequences online and predict ahead)
    compress(run, opts), decompress(run, opts) -> (dict, lines) (images to a .vlc bitstream and back)

A verb a family cannot answer is None, and `why_not[verb]` says why in one line (else `WHY_NOT[verb]`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


WHY_NOT = {"compress": "`varilab compress` takes a codec run (varilab train --model vq-codec)",
           "decompress": "`varilab decompress` takes the codec run that wrote the file",
           "robustness": "`varilab robustness` takes a purifier run (varilab train --model purifier) and a "
                         "classifier run (--classifier)"}


@dataclass
class Family:
    name: str
    models: dict[str, str]  # model name -> one line
    options: type  # the dataclass of every option of the family (see families.options)
    train: Callable
    load: Callable
    evaluate: Callable | None = None
    diagnose: Callable | None = None
    report: Callable | None = None
    sample: Callable | None = None
    solve: Callable | None = None
    attack: Callable | None = None
    robustness: Callable | None = None
    predict: Callable | None = None
    compress: Callable | None = None
    decompress: Callable | None = None
    why_not: dict[str, str] = field(default_factory=dict)
    resumable: tuple[str, ...] = ("epochs",)  # options a resumed run may change
    files: tuple[str, ...] = ()  # files or folders of its own in a run folder, replaced with the run
    upgrade: Callable[[dict], dict] | None = None  # an older config.json's keys -> the current ones

    def verb(self, name: str) -> Callable:
        """The family's function for a command, or a ValueError saying why the command does not apply."""
        fn = getattr(self, name)
        if fn is None:
            raise ValueError(self.why_not.get(name) or WHY_NOT.get(name, f"`varilab {name}` does not apply to {self.name} runs"))
        return fn


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

        return settings(self.options)
