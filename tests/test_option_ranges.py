"""Every numeric option of every command has a declared range, and the command line holds to it: each option fed
0, -1, 1e9, 10^9, nan and inf either parses (the value lies in its range) or is refused in one line with exit 2,
within 2 s, before anything is loaded or built. The options are found by walking the families, their verbs' flags,
their own commands and the shared commands' arguments, so an option added later is walked too."""
import argparse
import dataclasses
import shutil
import time
import typing
from pathlib import Path

import pytest

from varilab.cli import main
from varilab.commands import verbs
from varilab.commands.family import parse_command
from varilab.families import options, registry
from varilab.families.ranges import Range

BEFORE = Path(__file__).parent / "fixtures" / "before32"  # one run folder per family
VERB_NAMES = {"evaluate": "eval"}
REQUIRED = {"solve": ["--task", "denoise"], "robustness": ["--classifier", "RUN2"],  # a command's required options
            "unlearn": ["--forget", "class:0"]}
VALUES = ("0", "-1", "1e9", "1000000000", "nan", "inf")


# families newer than the fixtures whose verbs have flags of their own: a tiny run of each is trained beside them
NEWER = {"multimodal": ["train", "--model", "mm-mae", "--scenes", "10", "--epochs", "1", "--width", "2"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    shutil.copytree(BEFORE, root / "before32")
    for name, argv in NEWER.items():
        assert main([*argv, "--out", str(root / "before32" / name), "--quiet"]) == 0
    return root / "before32"


def _kind(f, hint) -> type | None:
    """int or float for a numeric option (list[int], int | None, ...), str for a word-or-number option with a
    declared range ("learned" or 0.3), else None."""
    args = typing.get_args(hint) or (hint,)
    for a in args:
        inner = typing.get_args(a) or (a,)
        for kind in (int, float):
            if kind in inner:
                return kind
    return str if isinstance(f.metadata.get("check"), Range) else None


def _fields(cls):
    hints = typing.get_type_hints(cls)
    return [(f, _kind(f, hints[f.name])) for f in dataclasses.fields(cls) if _kind(f, hints[f.name])]


def sites(runs: Path, tmp: Path):
    """(where, command words before the option, the options class or None, the model or choice it applies to,
    the option's flag, its Range, int or float, whether it reads a list)."""
    registry.builtin()
    found = []
    for fam in registry.ordered():
        run = str(runs / fam.name)
        for f, kind in _fields(fam.options):
            model = next(m for m in fam.models if options.applies(f, m))
            found.append(("train", ["train", "--model", model, "--out", str(tmp / "r")], fam.options, model, f, kind))
        for verb, cls in fam.flags.items():
            if not (runs / fam.name).exists():  # a family newer than the fixtures: its flags class must be walked
                assert any(cls is f.flags.get(verb) for f in registry.ordered() if (runs / f.name).exists()), fam.name
                continue  # on another family's run
            model = registry.load_config(run).get("model")
            for f, kind in _fields(cls):
                found.append((verb, [VERB_NAMES.get(verb, verb), run], cls, model, f, kind))
        for name, cmd in fam.commands.items():
            axis = options.axis(cmd.options)
            has_axis = any(g.name == axis for g in dataclasses.fields(cmd.options))
            choices = (cmd.choices or {c: "" for c in next(g for g in dataclasses.fields(cmd.options)
                                                          if g.name == axis).metadata["choices"]}) if has_axis else {}
            for f, kind in _fields(cmd.options):
                choice = next((c for c in choices if options.applies(f, c)), None)
                words = [name, run] + ([options.flag(axis), choice] if has_axis else [])
                words += ["--out", str(tmp / "o")] if cmd.writes or cmd.writes_run else []
                words += REQUIRED.get(name, [])
                found.append((name, words, cmd.options, choice, f, kind))
    for where, words, args in (("sample", ["sample", str(runs / "vae")], verbs.SAMPLE_ARGS),
                               ("data collect", ["data", "collect", "--out", str(tmp / "acts")], verbs.COLLECT_ARGS)):
        for flag, kwargs in args:
            if hasattr(kwargs.get("type"), "range"):
                found.append((where, words, None, None, flag, kwargs["type"]))
    return found


def _flag(site) -> str:
    return site[4] if isinstance(site[4], str) else options.flag(site[4].name)


def _declared(site) -> Range:
    return site[5].range if site[2] is None else site[4].metadata["check"]


def _in_range(site, text: str) -> bool:
    """Whether `text` names a value inside the option's declared range (read as the option reads it)."""
    where, words, cls, model, f, kind = site
    try:
        if cls is None:
            value = int(text) if kind.__name__ == "int" else float(text)
        else:
            value = f.metadata["parse"](text) if f.metadata.get("parse") else kind(text)
    except (ValueError, ArithmeticError):
        return False
    return _declared(site)(value) is None


def _parses(site, text: str) -> bool:
    """Whether the option's parser takes `text` (without running the command)."""
    where, words, cls, model, f, kind = site
    try:
        if cls is None:
            kind(text)
        elif where == "train" or where in VERB_NAMES or where in ("evaluate", "diagnose", "sample", "report"):
            options.parse(cls, model, [_flag(site), text], prog="varilab")
        else:
            cmd = registry.family_of_run(words[1]).commands[where]  # the run's family's version of the command
            parse_command(words[1:] + [_flag(site), text], cmd, where)
    except (ValueError, argparse.ArgumentTypeError):
        return False
    return True


def test_every_numeric_option_of_every_command_declares_its_range(runs, tmp_path):
    found = sites(runs, tmp_path)
    assert len(found) > 120  # the walk reaches every family's options, flags and commands
    undeclared = [f"{s[0]} {_flag(s)}" for s in found if not isinstance(_declared(s), Range)]
    assert not undeclared
    for s in found:  # finite, and NaN never inside
        assert _declared(s).hi < float("inf") and not _declared(s).contains(float("nan")), f"{s[0]} {_flag(s)}"


def test_every_numeric_option_refuses_what_lies_outside_its_range_in_one_line(runs, tmp_path, capsys):
    main(["train", "--model", "vae", "--epochs", "0"])  # imports once
    capsys.readouterr()
    refused = 0
    for site in sites(runs, tmp_path):
        for text in VALUES:
            if _in_range(site, text):
                assert _parses(site, text), f"{site[0]} {_flag(site)} {text}: in range but refused"
                continue
            t0 = time.perf_counter()
            rc = main(site[1] + [_flag(site), text])
            seconds = time.perf_counter() - t0
            out, err = capsys.readouterr()
            lines = err.strip().splitlines()
            where = f"{' '.join(site[1][:1])} {_flag(site)} {text}"
            assert rc == 2, f"{where}: exit {rc}"
            assert len(lines) == 1 and "Traceback" not in err, f"{where}: {err}"
            assert seconds < 2.0, f"{where}: {seconds:.1f} s"
            refused += 1
    assert refused > 500
    assert not (tmp_path / "r").exists() and not (tmp_path / "o").exists()
