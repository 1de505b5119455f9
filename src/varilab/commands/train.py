"""`varilab train`: a model's options from the flags, a --config file and (with --resume) the run's config.json; the
run folder written under its lock; and the note that a run stopped while still improving."""
from __future__ import annotations

import sys
from pathlib import Path

from ..families import folder, options, registry
from ..families.windows import last_two
from ..run_files import CHECKPOINT, STEPS
from .args import command_parser

MODEL_HELP = "the model; vae when not given. `varilab train --model M --help` lists M's options"
RUN_ARGS = [("--model", {"metavar": "MODEL", "help": MODEL_HELP}),
            ("--config", {"metavar": "FILE", "help": "a .json or .toml file of options; flags override it"}),
            ("--out", {"metavar": "DIR", "help": "the run folder; runs/MODEL-DATA when not given"}),
            ("--resume", {"action": "store_true", "help": "continue the run in --out from its last checkpoint"}),
            ("--force", {"action": "store_true", "help": "replace a run already in --out"}),
            ("--quiet", {"action": "store_true", "help": "print nothing but errors and the final line"})]


def with_models(args: list) -> list:
    """The run arguments with --model's help listing every model, by family."""
    listing = "; ".join(f"{fam.name}: {', '.join(fam.models)}" for fam in registry.ordered())
    return [(name, {**kw, "help": f"{MODEL_HELP}. Models: {listing}"} if name == "--model" else kw)
            for name, kw in args]


def parse_train(argv: list[str]):
    """(family, options, out, resume, quiet, force) from the words of `varilab train`: the model's options
    from (in rising precedence) the resumed run's config.json, the --config file and the flags."""
    pre = command_parser("train", "", RUN_ARGS, add_help=False)
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
        name = options.key_of(word)
        if name in where:
            raise ValueError(f"--{name.replace('_', '-')} applies to {where[name]}, not to {model}")
    keys = [k for k in options.keys_for(family.options, model) if k != "model"]
    kept = options.to_argv({k: v for k, v in (saved or {}).items() if k in keys})
    opts, ns = options.parse(family.options, model, kept + options.to_argv(given) + argv,
                             prog=f"varilab train --model {model}", extra=with_models(RUN_ARGS))
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
    from ..checkpoint import read_jsonl

    family, opts, out, resume, quiet, force = parse_train(argv)
    with folder.lock(out, "train"):
        folder.settle(out)  # a run that --force was replacing when it was killed
        folder.check_out_dir(out, resume, force)
        if not resume:
            folder.set_aside(out, family)
        try:
            history = family.train(opts, out, resume=resume, quiet=quiet)
        except BaseException:
            if not resume and not (out / CHECKPOINT).exists():  # nothing to resume: no stub of the failed run is left
                folder.discard(out, family)
            raise
        finally:
            if folder.settle(out) == "restored" and not quiet:
                print(f"the earlier run in {out} is kept: the new one stopped before its first checkpoint",
                      file=sys.stderr)
    m = history[-1] if history else {}
    line = (f"trained {opts.model} for {m.get('epoch', 0)} epochs: train loss {m.get('loss', float('nan')):.4f}, "
            f"test loss {m.get('test_loss', float('nan')):.4f}" + (f"; {m['summary']}" if "summary" in m else "")
            + f"; run in {out}")
    notes = [still_improving(history, read_jsonl(out / STEPS), key=family.improving_on),
             family.trends(history, opts) if family.trends else ""]
    return line + "".join(f"; {n}" for n in notes if n)


def still_improving(history: list[dict], steps: list[dict] = (), share: float = 0.1, threshold: float = 0.01,
                    key: str = "test_loss") -> str:
    """A note when the loss still fell by more than `threshold` (relative) over the last `share` of training:
    the test loss per epoch when there are at least 1 / share epochs, else the training loss logged every
    few steps (its mean over the last share against the share before). With `key` another logged quantity per
    epoch (a family whose test loss does not measure the fit: PV-RNN's runs free), its mean over the last share of
    the epochs against the share before, so that epoch-to-epoch noise does not read as progress."""
    if key != "test_loss":
        values = [m[key] for m in history if key in m]
        ends = last_two(values, share)
        if ends is None:
            return ""
        before, last, back = ends
        what = f"the mean {key.replace('_', ' ')} over the last {back} of its {len(values)} epochs"
        drop = (before - last) / max(abs(before), 1e-12)
        return f"still improving: {what} fell {drop:.1%}, so more epochs would likely help" if drop > threshold else ""
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
