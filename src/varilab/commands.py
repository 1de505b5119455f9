"""The commands: those of every family (train, eval, diagnose, report, sample, data), and any family's own
`Command`, turned into `varilab NAME RUN [options]`. Each takes the words after its name and returns the text
to print. Nothing here names a family or a family's command: they come from the registry.
Heavy modules (PyTorch, the report) are imported per command, so `varilab --help` starts at once."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Callable

from .families import folder, options, registry
from .families.protocol import Command, Family, Run
from .run_files import METRICS, STEPS


class Parser(argparse.ArgumentParser):
    """argparse that raises its errors (the command line prints them in one line) and prints help as usual."""

    def error(self, message):
        raise ValueError(message)


def _parser(name: str, text: str, args: list[tuple[str, dict]], add_help: bool = True) -> Parser:
    p = Parser(prog=f"varilab {name}", description=text, add_help=add_help)
    for flag, kwargs in args:
        p.add_argument(flag, **kwargs)
    return p


def _wants_help(argv: list[str]) -> bool:
    return "-h" in argv or "--help" in argv


# --- train --------------------------------------------------------------------------------------------------------

RUN_ARGS = [("--model", {"metavar": "MODEL", "help": "the model; vae when not given. `varilab train --model M --help` "
                                                    "lists M's options"}),
            ("--config", {"metavar": "FILE", "help": "a .json or .toml file of options; flags override it"}),
            ("--out", {"metavar": "DIR", "help": "the run folder; runs/MODEL-DATA when not given"}),
            ("--resume", {"action": "store_true", "help": "continue the run in --out from its last checkpoint"}),
            ("--force", {"action": "store_true", "help": "replace a run already in --out"}),
            ("--quiet", {"action": "store_true", "help": "print nothing but errors and the final line"})]


def parse_train(argv: list[str]):
    """(family, options, out, resume, quiet, force) from the words of `varilab train`: the model's options
    from (in rising precedence) the resumed run's config.json, the --config file and the flags."""
    pre = _parser("train", "", RUN_ARGS, add_help=False)
    args, _ = pre.parse_known_args(argv)
    given = options.read_config_file(args.config) if args.config else {}
    saved = None
    if args.resume:
        if not args.out:
            raise ValueError("--resume needs --out, the run folder to continue")
        saved = registry.load_config(args.out)
        model = saved["model"]
        if args.model and args.model != model:
            raise ValueError(f"--model is {args.model!r} but the run in {args.out} is {model!r}")
    else:
        model = args.model or given.get("model") or "vae"
    family = registry.family_of(model)
    given.pop("model", None)
    where = registry.elsewhere(model)
    options.check_keys(given, family.options, model, args.config or "config", where)
    for word in argv:  # a flag of another model or family: say where it belongs
        name = word[2:].split("=")[0].replace("-", "_") if word.startswith("--") else None
        if name in where:
            raise ValueError(f"--{name.replace('_', '-')} applies to {where[name]}, not to {model}")
    keys = [k for k in options.keys_for(family.options, model) if k != "model"]
    kept = options.to_argv({k: v for k, v in (saved or {}).items() if k in keys})
    opts, ns = options.parse(family.options, model, kept + options.to_argv(given) + argv,
                             prog=f"varilab train --model {model}", extra=RUN_ARGS)
    if saved is not None:
        before, _ = options.parse(family.options, model, kept, prog=str(args.out))
        for key in keys:
            if key not in family.resumable and getattr(opts, key) != getattr(before, key):
                raise ValueError(f"{options.flag(key)} is {getattr(opts, key)!r} but the run was started with "
                                 f"{getattr(before, key)!r}; a resumed run keeps its configuration (only "
                                 f"{', '.join(options.flag(k) for k in family.resumable)} may change)")
    data = getattr(opts, "data", None)
    out = Path(ns.out or f"runs/{model}-{Path(str(data)).stem if data else 'run'}")
    return family, opts, out, bool(ns.resume), bool(ns.quiet), bool(ns.force)


def train(argv: list[str]) -> str:
    """`varilab train`: the final line. The folder is locked while it is written; --force sets the old run aside
    and drops it only once the new one has written a checkpoint."""
    from .checkpoint import read_jsonl

    family, opts, out, resume, quiet, force = parse_train(argv)
    with folder.lock(out, "train"):
        folder.settle(out)  # a run that --force was replacing when it was killed
        folder.check_out_dir(out, resume, force)
        if not resume:
            folder.set_aside(out, family)
        try:
            history = family.train(opts, out, resume=resume, quiet=quiet)
        finally:
            if folder.settle(out) == "restored" and not quiet:
                print(f"the earlier run in {out} is kept: the new one stopped before its first checkpoint",
                      file=sys.stderr)
    m = history[-1] if history else {}
    line = (f"trained {opts.model} for {m.get('epoch', 0)} epochs: train loss {m.get('loss', float('nan')):.4f}, "
            f"test loss {m.get('test_loss', float('nan')):.4f}" + (f"; {m['summary']}" if "summary" in m else "")
            + f"; run in {out}")
    note = still_improving(history, read_jsonl(out / STEPS))
    return line + (f"; {note}" if note else "")


def still_improving(history: list[dict], steps: list[dict] = (), share: float = 0.1, threshold: float = 0.01) -> str:
    """A note when the loss still fell by more than `threshold` (relative) over the last `share` of training:
    the test loss per epoch when there are at least 1 / share epochs, else the training loss logged every
    few steps (its mean over the last share against the share before)."""
    losses = [m["test_loss"] for m in history if "test_loss" in m]
    if len(losses) >= round(1 / share):
        back = round(share * len(losses))
        before, last, what = losses[-1 - back], losses[-1], f"the test loss over the last {back} of its {len(losses)} epochs"
    else:
        train = [s["loss"] for s in steps if "loss" in s]
        w = int(share * len(train))
        if w < 2:
            return ""
        before, last = sum(train[-2 * w:-w]) / w, sum(train[-w:]) / w  # means of the last two tenths
        what = f"the training loss over the last {share:.0%} of its {steps[-1]['step']:,} steps"
    drop = (before - last) / max(abs(before), 1e-12)
    if drop > threshold:
        return f"still improving: {what} fell {drop:.1%}, so more epochs would likely help"
    return ""


# --- the verbs of every family: eval, diagnose, report, sample ------------------------------------------------------

RUN = ("run", {"metavar": "RUN", "help": "run folder"})
JSON = ("--json", {"action": "store_true", "help": "print one JSON object"})
DATA = ("--data", {"help": "use another data set or file with the same number of features"})
FORCE = ("--force", {"action": "store_true", "help": "overwrite existing files"})


def _family_flags_help(verb: str) -> str:
    """The flags each family brings to `verb`, for --help."""
    parts = []
    for fam in registry.ordered():
        if verb in fam.flags:
            lines = [f"flags of {fam.name} runs ({', '.join(fam.models)}):"]
            for f in dataclasses.fields(fam.flags[verb]):
                default = options.default_for(fam.flags[verb], f.name, None)
                lines.append(f"  {options.flag(f.name):<22}{options.help_of(fam.flags[verb], f)}"
                             + (f" (default: {default})" if default not in (None, False) else ""))
            parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _owners(verb: str, word: str) -> list[str]:
    """The families whose own flags of `verb` include the flag `word`."""
    key = word.split("=")[0].removeprefix("--").replace("-", "_")
    return [f.name for f in registry.ordered() if verb in f.flags
            and key in {g.name for g in dataclasses.fields(f.flags[verb])}]


def _verb(verb: str, name: str, text: str, args: list[tuple[str, dict]], argv: list[str]):
    """(run, the common arguments, the family's own flags as keywords) of `varilab NAME RUN ...`: the run's family
    reads the words the common arguments leave; a flag of another family is refused, naming the families it
    belongs to."""
    registry.builtin()
    p = _parser(name, text, [RUN, *args], add_help=False)
    if _wants_help(argv):
        p.epilog = _family_flags_help(verb) or None
        p.formatter_class = argparse.RawDescriptionHelpFormatter
        p.print_help()
        raise SystemExit(0)
    ns, rest = p.parse_known_args(argv)
    family = registry.family_of_run(ns.run)
    if getattr(family, verb) is None:
        raise ValueError(registry.refusal(name, family, ns.run))
    for word in rest:  # a flag of another family's runs: say whose it is
        owners = _owners(verb, word) if word.startswith("--") else []
        if owners and family.name not in owners:
            raise ValueError(f"{word.split('=')[0]} applies to {' and '.join(owners)} runs, not to {family.name} runs")
    flags = {}
    if verb in family.flags:
        model = registry.load_config(ns.run).get("model")
        given, _ = options.parse(family.flags[verb], model, rest, prog=f"varilab {name} ({family.name} runs)")
        flags = dataclasses.asdict(given)
    elif rest:
        raise ValueError(f"unrecognized arguments: {' '.join(rest)}")
    run = registry.load(ns.run, getattr(ns, "data", None))
    return run, ns, flags


def evaluate(argv: list[str]) -> str:
    run, ns, flags = _verb("evaluate", "eval", "test-split metrics of a run", [DATA, JSON], argv)
    result = run.family.evaluate(run, **flags)
    return json.dumps(json_ready(result), allow_nan=False) if ns.json else "\n".join(table_lines(result))


def diagnose(argv: list[str]) -> str:
    run, ns, flags = _verb("diagnose", "diagnose", "posterior-collapse diagnostics of a run", [DATA, JSON], argv)
    result, lines = run.family.diagnose(run, **flags)
    return json.dumps(json_ready(result), allow_nan=False) if ns.json else "\n".join(lines)


def report(argv: list[str]) -> str:
    from .checkpoint import read_jsonl
    from .report import write_report

    args = [("--out", {"help": "report path (default RUN/report.html)"}), DATA,
            ("--force", {"action": "store_true", "help": "overwrite an existing report"})]
    run, ns, flags = _verb("report", "report", "write the run's self-contained HTML report", args, argv)
    page = run.family.report(run, **flags)
    note = still_improving(read_jsonl(run.dir / METRICS), read_jsonl(run.dir / STEPS))
    if note and not page.warning:
        page.warning = f"This run stopped while {note}."
    with folder.lock(run.dir, "report"):
        return str(write_report(run, page, ns.out, ns.force))


def sample(argv: list[str]) -> str:
    import numpy as np

    args = [("--n", {"type": int, "default": 64, "help": "number of samples (default 64)"}),
            ("--seed", {"type": int, "default": 0, "help": "random seed (default 0)"}),
            ("--out", {"help": ".npy file (default RUN/samples-....npy; a second output gets its own suffix)"}), FORCE]
    run, ns, flags = _verb("sample", "sample", "draw samples from a trained generative run", args, argv)
    check_sample_size(run, ns.n)
    named = getattr(run.family.flags.get("sample"), "FILE_NAME", ())  # the flags that name the file
    name = "-".join(["samples"] + [str(flags[k]) for k in named if flags.get(k) is not None])
    out = Path(ns.out) if ns.out else run.dir / f"{name}.npy"
    if out.suffix != ".npy":
        raise ValueError(f"--out must be a .npy file, got {out}")
    if out.exists() and not ns.force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    result = run.family.sample(run, n=ns.n, seed=ns.seed, **flags)
    out.parent.mkdir(parents=True, exist_ok=True)
    shape = getattr(run.data, "image_shape", None)
    arrays = {k: (v.reshape(len(v), *shape) if shape else v).numpy() for k, v in result.items() if k != "chain"}
    files = {out if k == "samples" else out.with_name(f"{out.stem}-{k}.npy"): v for k, v in arrays.items()}
    taken = [str(p) for p in files if p.exists()]
    if taken and not ns.force:
        raise FileExistsError(f"{taken[0]} exists; pass --force to overwrite it")
    with folder.lock(run.dir, "sample"):
        for path, array in files.items():  # e.g. a DiffuseVAE's VAE outputs beside their refinements
            np.save(path, array)
    return f"{ns.n} samples: {out}" + "".join(f", {p}" for p in files if p != out)


def check_sample_size(run: Run, n: int) -> None:
    """Refuse a number of samples that is not positive, or whose arrays cannot fit in memory (a generous
    64 floats of network state per output value)."""
    if n < 1:
        raise ValueError(f"--n must be a positive number of samples, got {n}")
    width = getattr(run.data, "x_dim", 1)
    need, have = 64 * 4 * n * width, folder.available_memory()
    if need > have:
        raise ValueError(f"{n:,} samples of {width:,} values would need about {need / 2**30:,.1f} GiB but "
                         f"{have / 2**30:,.1f} GiB is available; draw fewer (several runs of --n with other --seed)")


def data(argv: list[str]) -> str:
    """`varilab data list` and `varilab data collect`."""
    p = Parser(prog="varilab data", description="data sets: list them, or collect transformer activations")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="the data sets and whether each is available here")
    c = sub.add_parser("collect", help="store MiniLM activations of one layer as memory-mapped shards (varilab[sae])")
    c.add_argument("--layer", type=int, default=3, help="transformer block whose output is stored (1-6; default 3)")
    c.add_argument("--tokens", type=int, default=500_000, help="word-piece tokens to store, at least (default 500000)")
    c.add_argument("--text", help="your own UTF-8 text file (default: offline Wikipedia extracts)")
    c.add_argument("--out", required=True, help="activation folder (an interrupted collection resumes there)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.action == "collect":
        from .data.activations import collect

        with folder.lock(Path(args.out), "data collect"):
            cur = collect(args.out, layer=args.layer, tokens=args.tokens, text_file=args.text, progress=not args.quiet)
        return f"{cur['tokens']:,} activations of layer {args.layer} in {len(cur['shards'])} shards in {args.out}"
    from .data import DATASETS, available

    lines = []
    for name, text in DATASETS.items():
        ok, how = available(name)
        lines.append(f"{name:<16} {'available' if ok else f'missing: {how}':<12} {text}")
    lines.append(f"{'PATH':<16} {'':<12} your own array: .npy, .npz (key x, optional y) or .csv, shape [N, D] or [N, H, W]")
    return "\n".join(lines)


SHARED: dict[str, tuple[str, Callable[[list[str]], str]]] = {
    "train": ("train a model and write a run folder (`varilab train --model M --help`)", train),
    "eval": ("test-split metrics of a run", evaluate),
    "diagnose": ("posterior-collapse diagnostics of a run", diagnose),
    "report": ("write the run's self-contained HTML report", report),
    "sample": ("draw samples from a trained generative run", sample),
    "data": ("data sets: list them, or collect transformer activations", data),
}


# --- a family's own commands ----------------------------------------------------------------------------------------

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


def _command_args(cmd: Command) -> list[tuple[str, dict]]:
    args = [("run", {"metavar": "RUN", "help": cmd.about_run}), JSON]
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
        key = word[2:].split("=")[0].replace("-", "_") if word.startswith("--") else None
        f = next((f for f in dataclasses.fields(cls) if f.name == key), None)
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
        if _wants_help(argv):
            owners = ", ".join(f"{f.name} ({', '.join(f.models)})" for f in which)
            print(f"{cmd.help}. RUN: a run of {owners}.\n")
        opts, ns = parse_command(argv, cmd, name)
        family = registry.family_of_run(ns.run)
    else:
        if not argv or argv[0].startswith("-"):
            raise ValueError(f"`varilab {name}` takes the run folder first: varilab {name} RUN [options]")
        family = registry.family_of_run(argv[0])
        cmd = family.commands.get(name)
        if cmd is not None:
            opts, ns = parse_command(argv, cmd, name)
    if family.commands.get(name) is not cmd:
        raise ValueError(registry.refusal(name, family, ns.run if len(commands) == 1 else argv[0]))
    if cmd.writes:
        result, lines = _into_folder(name, cmd, opts, ns)
    else:
        run = registry.load(ns.run)
        result, lines = cmd.run(run, opts)
    return json.dumps(json_ready(result), allow_nan=False) if ns.json else "\n".join(lines)


def _into_folder(name: str, cmd: Command, opts, ns):
    """Run a command that writes `cmd.writes` into ns.out: the folder must not hold a training run, and an earlier
    result there is replaced only with --force (all of its files)."""
    out = Path(ns.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    if folder.holds_run(out):
        raise ValueError(f"--out {out} holds a training run; write the {name}'s files to a folder of their own")
    present = [f for f in cmd.writes if (out / f).exists()]
    if present and not ns.force:
        raise FileExistsError(f"{out} already holds a {name} ({', '.join(present)}); pass --force to overwrite it")
    run = registry.load(ns.run)
    with folder.lock(out, name):
        for f in present:  # --force: an earlier result's files, all of them, so none is left from it
            (out / f).unlink()
        return cmd.run(run, opts, out, quiet=bool(ns.quiet))


# --- printing -------------------------------------------------------------------------------------------------------

def table_lines(result: dict) -> list[str]:
    """A result as lines: `key  value` for each number or word, then each list of rows as a table."""
    lines, tables = [], []
    for k, v in result.items():
        if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
            tables.append((k, v))
        else:
            lines.append(f"{k:>10}  {v:.4f}" if isinstance(v, float) else f"{k:>10}  {v}")
    for k, rows in tables:
        cols = list(rows[0])
        lines += ["", k, " ".join(f"{c:>12}" for c in cols)]
        lines += [" ".join(f"{r.get(c):>12.4f}" if isinstance(r.get(c), float) else f"{r.get(c)!s:>12}" for c in cols)
                  for r in rows]
    return lines


def json_ready(result):
    """`result` with every NaN or Inf replaced by null, and "non_finite" naming each replaced key and its value,
    so that --json output is JSON (which has no NaN)."""
    found = {}

    def clean(v, key):
        if isinstance(v, float) and not math.isfinite(v):
            found[key] = str(v)
            return None
        if isinstance(v, dict):
            return {k: clean(x, f"{key}.{k}" if key else k) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x, f"{key}[{i}]") for i, x in enumerate(v)]
        return v

    out = clean(result, "")
    return {**out, "non_finite": found} if found else out
