"""A family's own commands (`Family.commands`): `varilab NAME RUN [options]` parsed from the `Command`'s options, the
run's family checked to list it, and, for a command that writes a folder, --out, --force and --quiet."""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from pathlib import Path

from ..families import folder, options, registry
from ..families.protocol import Command, Family
from .args import JSON, wants_help
from .printing import shown

def _command_args(cmd: Command) -> list[tuple[str, dict]]:
    args = [("run", {"metavar": "RUN", "help": cmd.about_run}), JSON]
    if cmd.writes_file:
        args += [("--force", {"action": "store_true", "help": "replace an existing --out file"})]
    if cmd.writes_run:
        args += [("--out", {"required": True, "metavar": "DIR", "help": "the folder of the new run"}),
                 ("--force", {"action": "store_true", "help": "replace a run already in --out"}),
                 ("--quiet", {"action": "store_true", "help": "no progress bars"})]
    if cmd.writes:
        args += [("--out", {"required": True, "metavar": "DIR", "help": f"folder for {', '.join(cmd.writes)}"}),
                 ("--force", {"action": "store_true", "help": "overwrite an earlier result's files in --out"}),
                 ("--quiet", {"action": "store_true", "help": "no progress bars"})]
    return args


def parse_command(argv: list[str], cmd: Command, name: str):
    """(options, namespace) of a family command's words. Where its options have an AXIS (e.g. --method), an option
    of another choice is refused, naming the choices it belongs to."""
    cls, extra, prog = cmd.options, _command_args(cmd), f"varilab {name}"
    axis = options.axis(cls)
    field = next((f for f in dataclasses.fields(cls) if f.name == axis), None)
    if field is None:
        return options.parse(cls, None, argv, prog=prog, extra=extra)
    choices = cmd.choices or {c: "" for c in field.metadata.get("choices") or ()}
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument(options.flag(axis), default=field.default)
    args, rest = pre.parse_known_args(argv)
    chosen = getattr(args, axis)
    if choices and chosen not in choices:
        raise ValueError(f"{options.flag(axis)} must be one of {', '.join(choices)}, got {chosen!r}")
    for word in rest:  # an option of another choice: say which choices it belongs to
        f = next((f for f in dataclasses.fields(cls) if f.name == options.key_of(word)), None)
        if f is not None and not options.applies(f, chosen):
            raise ValueError(f"--{word[2:].split('=')[0]} applies to {options.flag(axis)} "
                             f"{' or '.join(f.metadata['models'])}, not to {chosen}")
    axis_arg = (options.flag(axis), {"metavar": axis.upper(), "default": chosen,
                                     "help": "; ".join(f"{k}: {v}" if v else k for k, v in choices.items())})
    return options.parse(cls, chosen, rest, prog=prog, extra=[axis_arg] + extra)


def family_command(name: str, argv: list[str], commands: list[Command], which: list[Family]) -> str:
    """Run a family's command on its words: the run's family must list it. With several families' versions of one
    name, RUN comes first and picks the version."""
    if len(commands) == 1:
        cmd = commands[0]
        if wants_help(argv):
            owners = ", ".join(f"{f.name} ({', '.join(f.models)})" for f in which)
            print(f"{cmd.help}. RUN: a run of {owners}.\n")
        opts, ns = parse_command(argv, cmd, name)
        family = registry.family_of_run(ns.run)
    else:
        if wants_help(argv) and (not argv or argv[0].startswith("-")):
            _help_of_each(name, commands)
        if not argv or argv[0].startswith("-"):
            raise ValueError(f"`varilab {name}` takes the run folder first: varilab {name} RUN [options]")
        family = registry.family_of_run(argv[0])
        cmd = family.commands.get(name)
        if cmd is not None:
            opts, ns = parse_command(argv, cmd, name)
    if cmd is None or family.commands.get(name) is not cmd:  # the run's family has no version of the command
        raise registry.NotApplicable(registry.refusal(name, family, ns.run if len(commands) == 1 else argv[0]))
    if cmd.writes_run:
        out, run = Path(ns.out), registry.load(ns.run)
        if out.resolve() == run.dir.resolve():
            raise ValueError(f"--out {out} is the run that `varilab {name}` reads; write to another folder")
        result, lines = cmd.run(run, opts, out, force=bool(ns.force), quiet=bool(ns.quiet))
    elif cmd.writes:
        result, lines = _into_folder(name, cmd, opts, ns)
    elif cmd.writes_file and getattr(opts, "out", None):
        out = Path(opts.out)
        if not out.parent.is_dir():
            raise ValueError(f"--out {out}: its folder {out.parent} does not exist")
        with folder.file_lock(out, name):  # a second command writing the same file is refused while this one runs
            _check_out_file(out, bool(ns.force))
            result, lines = cmd.run(registry.load(ns.run), opts)
    else:
        result, lines = cmd.run(registry.load(ns.run), opts)
    return shown(result, lines, ns.json)


def _help_of_each(name: str, commands: list[Command]) -> None:
    """--help of a command several families answer, each its own way: every version's help, then exit."""
    for cmd in commands:
        owners = ", ".join(f"{f.name} ({', '.join(f.models)})" for f in registry.ordered() if f.commands.get(name) is cmd)
        print(f"{cmd.help}. RUN: a run of {owners}.\n")
        try:
            parse_command(["--help"], cmd, name)
        except SystemExit:
            print()
    raise SystemExit(0)


def _check_out_file(out: Path, force: bool) -> None:
    """An --out file: an existing one is replaced only with --force, and never a run folder's own file."""
    if out.is_dir():
        raise ValueError(f"--out {out}: is a directory; name the file to write")
    if out.name in folder.RUN_FILES and (out.parent / folder.CONFIG).exists():
        raise ValueError(f"--out {out}: a file of the run in {out.parent}; write to another name")
    if out.exists() and not force:
        raise FileExistsError(f"--out {out} exists; pass --force to replace it")


def _into_folder(name: str, cmd: Command, opts, ns):
    """Run a command that writes `cmd.writes` into ns.out: the folder must not hold a training run, and an earlier
    result there is replaced only with --force, and only once the new one is complete: its files wait in a folder
    of their own (.previous-NAME) until the command succeeds, and come back if it fails or was killed."""
    out = Path(ns.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    if folder.holds_run(out):
        raise ValueError(f"--out {out} holds a training run; write the {name}'s files to a folder of their own")
    keep = out / f".previous-{name}"
    present = [f for f in cmd.writes if (out / f).exists() or (keep / f).exists()]
    if present and not ns.force:
        raise FileExistsError(f"{out} already holds a {name} ({', '.join(present)}); pass --force to overwrite it")
    run = registry.load(ns.run)
    with folder.lock(out, name):
        _restore(out, keep, cmd.writes)  # a command killed while replacing: its earlier result comes back
        if present:  # --force: an earlier result's files, all of them, set aside so none is left mixed in
            keep.mkdir()
            for f in present:
                os.replace(out / f, keep / f)
        try:
            result = cmd.run(run, opts, out, quiet=bool(ns.quiet))
        except BaseException:
            _restore(out, keep, cmd.writes)
            raise
        shutil.rmtree(keep, ignore_errors=True)
        return result


def _restore(out: Path, keep: Path, writes: tuple[str, ...]) -> None:
    """Put the result set aside in `keep` back into `out`, dropping whatever a failed command wrote instead."""
    if not keep.is_dir():
        return
    for f in writes:
        (out / f).unlink(missing_ok=True)
    for p in keep.iterdir():
        os.replace(p, out / p.name)
    keep.rmdir()
