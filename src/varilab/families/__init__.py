"""Model families by name: one plain registry from model names to families, filled by each family's own
module through `register`, and the commands every family shares (train from command-line words, load a
run folder whatever its family).

A new family is one module that builds a `Family` and calls `register(family)`; see the README's
"Adding a model family".
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
import sys
from pathlib import Path

from ..checkpoint import read_jsonl
from ..train import METRICS, STEPS
from . import folder, options
from .protocol import Family, Run

FAMILIES: dict[str, Family] = {}  # family name -> family
MODELS: dict[str, Family] = {}  # model name -> its family
FIRST = ("vae", "sae", "diffusion")  # listed first, in this order; every other family after them


def register(family: Family) -> Family:
    """Add a family and its models to the registry (a model name belongs to one family)."""
    if not dataclasses.is_dataclass(family.options) or "model" not in {f.name for f in dataclasses.fields(family.options)}:
        raise TypeError(f"family {family.name!r}: options must be a dataclass with a 'model' field")
    for model in family.models:
        if model in MODELS and MODELS[model].name != family.name:
            raise ValueError(f"model {model!r} already belongs to the {MODELS[model].name} family")
    FAMILIES[family.name] = family
    MODELS.update({m: family for m in family.models})
    return family


def builtin() -> dict[str, Family]:
    """Model name -> family, with every module of this package imported (a family module registers itself;
    modules named _* are a family's helpers), varilab's first families listed first."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    order = [n for n in FIRST if n in FAMILIES] + [n for n in FAMILIES if n not in FIRST]
    return {m: FAMILIES[n] for n in order for m in FAMILIES[n].models}


def family_of(model: str) -> Family:
    models = builtin()
    if model not in models:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(models)}")
    return models[model]


def _elsewhere(model: str) -> dict[str, str]:
    """Option -> the models it applies to, for options that do not apply to `model`."""
    own = MODELS[model]
    where = {}
    for fam in FAMILIES.values():
        for f in dataclasses.fields(fam.options):
            if fam is own and not options.applies(f, model):
                where.setdefault(f.name, " and ".join(f.metadata["models"]))
            elif fam is not own and f.name not in {g.name for g in dataclasses.fields(own.options)}:
                where.setdefault(f.name, f"the {fam.name} models ({', '.join(fam.models)})")
    return where


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
    import argparse

    pre = argparse.ArgumentParser(add_help=False)
    for name, kwargs in RUN_ARGS:
        pre.add_argument(name, **kwargs)
    args, _ = pre.parse_known_args(argv)
    given = options.read_config_file(args.config) if args.config else {}
    saved = None
    if args.resume:
        if not args.out:
            raise ValueError("--resume needs --out, the run folder to continue")
        saved = load_config(args.out)
        model = saved["model"]
        if args.model and args.model != model:
            raise ValueError(f"--model is {args.model!r} but the run in {args.out} is {model!r}")
    else:
        model = args.model or given.get("model") or "vae"
    family = family_of(model)
    given.pop("model", None)
    where = _elsewhere(model)
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
    """Run `varilab train` on its words; returns the final line. The folder is locked while it is written;
    --force sets the old run aside and drops it only once the new one has written a checkpoint."""
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


def folder_args(what: str, files: str) -> list[tuple[str, dict]]:
    """The arguments of a command that reads a run and writes a folder of its own (solve, attack)."""
    return [("run", {"metavar": "RUN", "help": what}),
            ("--out", {"required": True, "metavar": "DIR", "help": f"folder for {files}"}),
            ("--force", {"action": "store_true", "help": "overwrite an earlier result's files in --out"}),
            ("--quiet", {"action": "store_true", "help": "no progress bars"})]


def parse_command(argv: list[str], cls, choices: dict[str, str], prog: str, extra: list[tuple[str, dict]]):
    """(options, namespace) of a command whose options depend on one choice, the class's AXIS (e.g. --method):
    an option of another choice is refused, naming the choices it belongs to."""
    import argparse

    name = options.axis(cls)
    default = next(f.default for f in dataclasses.fields(cls) if f.name == name)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument(options.flag(name), default=default)
    args, rest = pre.parse_known_args(argv)
    chosen = getattr(args, name)
    if chosen not in choices:
        raise ValueError(f"{options.flag(name)} must be one of {', '.join(choices)}, got {chosen!r}")
    for word in rest:  # an option of another choice: say which choices it belongs to
        key = word[2:].split("=")[0].replace("-", "_") if word.startswith("--") else None
        f = next((f for f in dataclasses.fields(cls) if f.name == key), None)
        if f is not None and not options.applies(f, chosen):
            raise ValueError(f"--{word[2:].split('=')[0]} applies to {options.flag(name)} "
                             f"{' or '.join(f.metadata['models'])}, not to {chosen}")
    axis_arg = (options.flag(name), {"metavar": name.upper(), "default": chosen,
                                     "help": "; ".join(f"{k}: {v}" for k, v in choices.items())})
    return options.parse(cls, chosen, rest, prog=prog, extra=[axis_arg] + extra)


def into_folder(command: str, opts, ns, files: tuple[str, ...]) -> str:
    """Run the verb `command` of the run ns.run's family with `opts`, writing `files` into ns.out: the folder must
    not hold a training run, and an earlier result there is replaced only with --force (all of its files)."""
    out = Path(ns.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    if folder.holds_run(out):
        raise ValueError(f"--out {out} holds a training run; write the {command}'s files to a folder of their own")
    present = [f for f in files if (out / f).exists()]
    if present and not ns.force:
        raise FileExistsError(f"{out} already holds a {command} ({', '.join(present)}); pass --force to overwrite it")
    run = load(ns.run)
    verb = run.family.verb(command)
    with folder.lock(out, command):
        for f in present:  # --force: an earlier result's files, all of them, so none is left from it
            (out / f).unlink()
        return verb(run, opts, out, quiet=bool(ns.quiet))


def solve(argv: list[str]) -> str:
    """Run `varilab solve` on its words: RUN --method M --task T ... --out DIR; returns the summary line."""
    from ._solve import FILES, METHODS, SolveOptions

    extra = folder_args("the diffusion run folder whose model is the prior",
                        "estimate.npy, metrics.json, trace.json and report.html")
    opts, ns = parse_command(argv, SolveOptions, METHODS, "varilab solve", extra)
    return into_folder("solve", opts, ns, FILES)


def attack(argv: list[str]) -> str:
    """Run `varilab attack` on its words: RUN --direction D --eps E ... --out DIR; returns the summary line."""
    from ._attack import DIRECTIONS, FILES, AttackOptions

    extra = folder_args("the run whose encoder is attacked (a VAE, diffusevae or purifier run)",
                        "adversarial.npy, control.npy, metrics.json and report.html")
    opts, ns = parse_command(argv, AttackOptions, DIRECTIONS, "varilab attack", extra)
    return into_folder("attack", opts, ns, FILES)


def robustness(argv: list[str]) -> str:
    """`varilab robustness RUN --classifier RUN2 --attack A --eps E`: the table's lines, or JSON with --json."""
    from ..models.robustness import ATTACKS
    from .robust import RobustnessOptions

    return printed("robustness", argv, RobustnessOptions, ATTACKS, "the purifier run")


def predict(argv: list[str]) -> str:
    """`varilab predict RUN --input SEQ.npy --window H --iterations n --ahead K`: the table, or JSON with --json."""
    from .sequence import METHODS, PredictOptions

    return printed("predict", argv, PredictOptions, METHODS, "the sequence run (varilab train --model pvrnn)")


def compress(argv: list[str]) -> str:
    """`varilab compress RUN --input IMAGES --out FILE.vlc`: one line, or JSON with --json."""
    from ._codec_files import CONTAINERS, CompressOptions

    return printed("compress", argv, CompressOptions, CONTAINERS, "the codec run (varilab train --model vq-codec)")


def decompress(argv: list[str]) -> str:
    """`varilab decompress RUN --input FILE.vlc --out DIR`: one line, or JSON with --json."""
    from ._codec_files import CONTAINERS, DecompressOptions

    return printed("decompress", argv, DecompressOptions, CONTAINERS, "the codec run that wrote the file")


def printed(command: str, argv: list[str], cls, choices: dict[str, str], what: str) -> str:
    """Run a verb that prints (robustness, predict) on the words of its command: its lines, or JSON with --json."""
    extra = [("run", {"metavar": "RUN", "help": what}),
             ("--json", {"action": "store_true", "help": "print one JSON object"})]
    opts, ns = parse_command(argv, cls, choices, f"varilab {command}", extra)
    run = load(ns.run)
    result, lines = run.family.verb(command)(run, opts)
    return json.dumps(json_ready(result), allow_nan=False) if ns.json else "\n".join(lines)


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


def own_flags(run: Run, verb, **flags) -> dict:
    """The flags given (not None) that only some families' `verb` takes; one the run's family does not take is
    refused in one line."""
    import inspect

    given = {k: v for k, v in flags.items() if v is not None}
    for key in given.keys() - inspect.signature(verb).parameters.keys():
        raise ValueError(f"--{key.replace('_', '-')} does not apply to a {run.family.name} run")
    return given


def report_page(run: Run):
    """The family's report page of a run, with a warning when the run stopped while still improving."""
    page = run.family.verb("report")(run)
    note = still_improving(read_jsonl(run.dir / METRICS), read_jsonl(run.dir / STEPS))
    if note and not page.warning:
        page.warning = f"This run stopped while {note}."
    return page


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


def json_ready(result):
    """`result` with every NaN or Inf replaced by null, and "non_finite" naming each replaced key and its value,
    so that --json output is JSON (which has no NaN)."""
    import math

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


def load_config(run_dir: str | Path) -> dict:
    """config.json of a run, in its family's current keys."""
    raw = folder.read_config(run_dir)
    builtin()
    if raw["family"] not in FAMILIES:
        raise ValueError(f"{run_dir}: family {raw['family']!r} is not registered; known: {', '.join(FAMILIES)}")
    family = FAMILIES[raw["family"]]
    return family.upgrade(raw) if family.upgrade else raw


def load(run_dir: str | Path, data: str | None = None) -> Run:
    """A run folder of any family, loaded by its family: options, trained model and data."""
    run_dir = Path(run_dir)
    raw = load_config(run_dir)
    family = FAMILIES[raw["family"]]
    model = raw.get("model")
    if model not in family.models:
        raise ValueError(f"{run_dir / folder.CONFIG}: unknown model {model!r} for the {family.name} family")
    keys = options.keys_for(family.options, model)
    opts, _ = options.parse(family.options, model, options.to_argv({k: v for k, v in raw.items()
                                                                     if k in keys and k != "model"}), prog=str(run_dir))
    return family.load(run_dir, opts, data=data, raw=raw)


__all__ = ["FAMILIES", "MODELS", "Family", "Run", "attack", "compress", "decompress", "register", "family_of", "load",
           "load_config", "robustness", "predict", "solve", "train", "parse_train", "still_improving"]
