"""The verbs every family answers (eval, diagnose, report, sample) and `varilab data`. A family's own flags of a verb
(`Family.flags`) are read from the words the common arguments leave, after the run's family is known."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..families import folder, options, registry
from ..families.protocol import Run
from ..run_files import METRICS, STEPS
from .args import DATA, FORCE, JSON, RUN, Parser, command_parser, wants_help
from .printing import shown, table_lines
from .train import still_improving


def _family_flags_help(verb: str) -> str:
    """The flags each family brings to `verb`, for --help."""
    parts = []
    for fam in registry.ordered():
        if verb in fam.flags:
            lines = [f"flags of {fam.name} runs ({', '.join(fam.models)}):"]
            for f in dataclasses.fields(fam.flags[verb]):
                default = options.default_for(fam.flags[verb], f.name, None)
                lines.append(f"  {options.flag(f.name):<22}{options.help_of(fam.flags[verb], f)}"
                             + (f" (default: {options.as_written(default)})" if default not in (None, False) else ""))
            parts.append("\n".join(lines))
    return "\n\n".join(parts)


def warning(own: str | None, note: str, trend: str) -> str | None:
    """A page's warning: the family's own, else the still-improving note; then the family's trend, each a sentence."""
    first = own or (f"This run stopped while {note}." if note else None)
    return " ".join(w for w in (first, f"{trend[0].upper()}{trend[1:]}." if trend else None) if w) or None


def _owners(verb: str, word: str) -> list[str]:
    """The families whose own flags of `verb` include the flag `word`."""
    key = options.key_of(word)
    return [f.name for f in registry.ordered() if verb in f.flags
            and key in {g.name for g in dataclasses.fields(f.flags[verb])}]


def _verb(verb: str, name: str, text: str, args: list[tuple[str, dict]], argv: list[str]):
    """(run, the common arguments, the family's own flags as keywords) of `varilab NAME RUN ...`: the run's family
    reads the words the common arguments leave; a flag of another family is refused, naming the families it
    belongs to."""
    registry.builtin()
    p = command_parser(name, text, [RUN, *args], add_help=False)
    if wants_help(argv):
        p.epilog = _family_flags_help(verb) or None
        p.formatter_class = argparse.RawDescriptionHelpFormatter
        p.print_help()
        raise SystemExit(0)
    ns, rest = p.parse_known_args(argv)
    raw = registry.load_config(ns.run)
    family = registry.FAMILIES[raw["family"]]
    if getattr(family, verb) is None:
        raise registry.NotApplicable(registry.refusal(name, family, ns.run))
    for word in rest:  # a flag of another family's runs: say whose it is
        owners = _owners(verb, word)
        if owners and family.name not in owners:
            raise ValueError(f"{word.split('=')[0]} applies to {' and '.join(owners)} runs, not to {family.name} runs")
    flags = {}
    if verb in family.flags:
        given, _ = options.parse(family.flags[verb], raw.get("model"), rest, prog=f"varilab {name} ({family.name} runs)")
        flags = dataclasses.asdict(given)
    elif rest:
        raise ValueError(f"unrecognized arguments: {' '.join(rest)}")
    run = registry.load(ns.run, getattr(ns, "data", None))
    return run, ns, flags


def evaluate(argv: list[str]) -> str:
    run, ns, flags = _verb("evaluate", "eval", "test-split metrics of a run", [DATA, JSON], argv)
    result = run.family.evaluate(run, **flags)
    return shown(result, table_lines(result), ns.json)


def diagnose(argv: list[str]) -> str:
    run, ns, flags = _verb("diagnose", "diagnose", "posterior-collapse diagnostics of a run", [DATA, JSON], argv)
    return shown(*run.family.diagnose(run, **flags), ns.json)


def report(argv: list[str]) -> str:
    from ..checkpoint import read_jsonl
    from ..report import write_report

    args = [("--out", {"help": "report path (default RUN/report.html)"}), DATA,
            ("--force", {"action": "store_true", "help": "overwrite an existing report"})]
    run, ns, flags = _verb("report", "report", "write the run's self-contained HTML report", args, argv)
    page = run.family.report(run, **flags)
    history = read_jsonl(run.dir / METRICS)
    note = still_improving(history, read_jsonl(run.dir / STEPS), key=run.family.improving_on)
    page.warning = warning(page.warning, note, run.family.trends(history, run.options) if run.family.trends else "")
    with folder.lock(run.dir, "report"):
        return str(write_report(run, page, ns.out, ns.force))


SAMPLE_ARGS = [("--n", {"type": options.number(int, options.positive_int.upto(100_000_000)), "default": 64,
                         "help": "number of samples (default 64)"}),
               ("--seed", {"type": options.number(int, options.any_seed), "default": 0, "help": "random seed (default 0)"}),
               ("--out", {"help": ".npy file (default RUN/samples-....npy; a second output gets its own suffix)"}), FORCE]
COLLECT_ARGS = [("--layer", {"type": options.number(int, options.between(1, 6, integer=True)), "default": 3,
                             "help": "transformer block whose output is stored (1-6; default 3)"}),
                ("--tokens", {"type": options.number(int, options.positive_int.upto(10_000_000_000)), "default": 500_000,
                              "help": "word-piece tokens to store, at least (default 500000)"}),
                ("--text", {"help": "your own UTF-8 text file (default: offline Wikipedia extracts)"}),
                ("--out", {"required": True, "help": "activation folder (an interrupted collection resumes there)"}),
                ("--quiet", {"action": "store_true", "help": "no progress bar"})]


def sample(argv: list[str]) -> str:
    import numpy as np

    run, ns, flags = _verb("sample", "sample", "draw samples from a trained generative run", SAMPLE_ARGS, argv)
    check_sample_size(run, ns.n)
    named = getattr(run.family.flags.get("sample"), "FILE_NAME", ())  # the flags that name the file
    name = "-".join(["samples"] + [str(flags[k]) for k in named if flags.get(k) is not None])
    out = Path(ns.out) if ns.out else run.dir / f"{name}.npy"
    if out.suffix != ".npy":
        raise ValueError(f"--out must be a .npy file, got {out}")
    if out.exists() and not ns.force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    result = run.family.sample(run, n=ns.n, seed=ns.seed, **flags)
    note = result.pop("note", None)  # the family's words on the samples, printed after the files
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
    return f"{ns.n} samples: {out}" + "".join(f", {p}" for p in files if p != out) + (f"\n{note}" if note else "")


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
    c = sub.add_parser("collect", help="store MiniLM activations of one layer as memory-mapped shards")
    for flag, kwargs in COLLECT_ARGS:
        c.add_argument(flag, **kwargs)
    args = p.parse_args(argv)
    if args.action == "collect":
        from ..data.activations import collect

        with folder.lock(Path(args.out), "data collect"):
            cur = collect(args.out, layer=args.layer, tokens=args.tokens, text_file=args.text, progress=not args.quiet)
        return f"{cur['tokens']:,} activations of layer {args.layer} in {len(cur['shards'])} shards in {args.out}"
    from ..data import DATASETS, available

    lines = []
    for name, text in DATASETS.items():
        ok, how = available(name)
        lines.append(f"{name:<16} {'available' if ok else f'missing: {how}':<12} {text}")
    lines.append(f"{'PATH':<16} {'':<12} your own array: .npy, .npz (key x, optional y) or .csv, shape [N, D] or [N, H, W]")
    return "\n".join(lines)
