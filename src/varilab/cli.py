"""The `varilab` command: parses arguments, looks up the run's family, calls it, prints. Heavy imports
happen per command, so `varilab --help` starts at once."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError,
               ModuleNotFoundError)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="varilab", description="Train, evaluate and diagnose variational latent-variable models.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (("train", "train a model and write a run folder (`varilab train --model M --help`)"),
                       ("solve", "recover images from degraded observations, a diffusion run the prior (--help)"),
                       ("attack", "the posterior collapse attack on a run's encoder, beside random noise (--help)"),
                       ("robustness", "a purifier run against FGSM, PGD and BPDA on a classifier run (--help)"),
                       ("predict", "follow new sequences by error regression and predict ahead (--help)"),
                       ("compress", "images to a .vlc bitstream with a codec run (--help)"),
                       ("decompress", "a .vlc bitstream back to images with the run that wrote it (--help)")):
        sub.add_parser(name, add_help=False, help=text)  # their options depend on the model or method
    e = sub.add_parser("eval", help="test-split metrics of a run")
    e.add_argument("run", help="run folder")
    e.add_argument("--data", help="evaluate on another data set or file with the same number of features")
    e.add_argument("--nll", action="store_true", help="add the importance-sampled negative log-likelihood")
    e.add_argument("--k", default="1000", help="importance samples for --nll; a list (1,10,100,1000) prints the sweep")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    g = sub.add_parser("diagnose", help="posterior-collapse diagnostics of a run")
    g.add_argument("run", help="run folder")
    g.add_argument("--data", help="diagnose on another data set or file with the same number of features")
    g.add_argument("--threshold", type=float, default=0.01, help="activity threshold of an active unit (default 0.01)")
    g.add_argument("--sae-lens-window", type=int, metavar="BATCHES",
                   help="SAE: also count dead latents as sae-lens does (more than BATCHES training batches since "
                        "the batch in which they last fired; its dead_feature_window)")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    r = sub.add_parser("report", help="write the run's self-contained HTML report")
    r.add_argument("run", help="run folder")
    r.add_argument("--out", help="report path (default RUN/report.html)")
    r.add_argument("--data", help="report on another data set or file with the same number of features")
    r.add_argument("--force", action="store_true", help="overwrite an existing report")
    s = sub.add_parser("sample", help="draw samples from a trained generative run")
    s.add_argument("run", help="run folder")
    s.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--steps", type=int, help="diffusion: sampler steps (default 50)")
    s.add_argument("--length", type=int, help="sequences: steps per sequence (default: the training length)")
    s.add_argument("--sampler", help="diffusion: ddpm (ancestral), ddim, euler-maruyama, pf-euler or pf-heun "
                                     "(probability-flow ODE) (default ddim)")
    s.add_argument("--prior", choices=["normal", "expost"],
                   help="diffusevae: draw z from N(0, I) or the fitted mixture (default: the mixture if fitted)")
    s.add_argument("--out", help=".npy file (default RUN/samples-....npy; DiffuseVAE adds ...-vae.npy)")
    s.add_argument("--force", action="store_true", help="overwrite existing .npy files")
    d = sub.add_parser("data", help="data sets: list them, or collect transformer activations")
    dsub = d.add_subparsers(dest="action", required=True, metavar="ACTION")
    dsub.add_parser("list", help="the data sets and whether each is available here")
    c = dsub.add_parser("collect", help="store MiniLM activations of one layer as memory-mapped shards (varilab[sae])")
    c.add_argument("--layer", type=int, default=3, help="transformer block whose output is stored (1-6; default 3)")
    c.add_argument("--tokens", type=int, default=500_000, help="word-piece tokens to store, at least (default 500000)")
    c.add_argument("--text", help="your own UTF-8 text file (default: offline Wikipedia extracts)")
    c.add_argument("--out", required=True, help="activation folder (an interrupted collection resumes there)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def cmd_eval(args) -> int:
    from . import families

    run = families.load(args.run, args.data)
    result = run.family.verb("evaluate")(run, nll_k=_int_list(args.k, "--k") if args.nll else None)
    if args.json:
        print(json.dumps(families.json_ready(result), allow_nan=False))
        return 0
    for k, v in result.items():
        if k != "nll_sweep":
            print(f"{k:>10}  {v:.4f}" if isinstance(v, float) else f"{k:>10}  {v}")
    if "nll_sweep" in result:
        print("\n         K        NLL     +- SE   IWAE - ELBO")
        for row in result["nll_sweep"]:
            print(f"{row['k']:>10} {row['nll']:>10.4f} {row['nll_se']:>9.4f} {row['elbo_gap']:>13.4f}")
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"{flag} takes positive integers separated by commas, got {text!r}")
    return values


def cmd_diagnose(args) -> int:
    from . import families

    run = families.load(args.run, args.data)
    verb = run.family.verb("diagnose")
    result, lines = verb(run, threshold=args.threshold, **families.own_flags(run, verb, sae_lens_window=args.sae_lens_window))
    print(json.dumps(families.json_ready(result), allow_nan=False) if args.json else "\n".join(lines))
    return 0


def cmd_report(args) -> int:
    from . import families
    from .report import write_report

    run = families.load(args.run, args.data)
    with families.folder.lock(run.dir, "report"):
        print(write_report(run, families.report_page(run), args.out, args.force))
    return 0


def cmd_sample(args) -> int:
    import numpy as np

    from . import families

    run = families.load(args.run)
    families.check_sample_size(run, args.n)
    name = "-".join(["samples"] + [str(v) for v in (args.sampler, args.steps) if v])
    out = Path(args.out) if args.out else run.dir / f"{name}.npy"
    if out.suffix != ".npy":
        raise ValueError(f"--out must be a .npy file, got {out}")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    verb = run.family.verb("sample")
    result = verb(run, n=args.n, seed=args.seed, steps=args.steps, sampler=args.sampler, prior=args.prior,
                  **families.own_flags(run, verb, length=args.length))
    out.parent.mkdir(parents=True, exist_ok=True)
    shape = getattr(run.data, "image_shape", None)
    arrays = {k: (v.reshape(len(v), *shape) if shape else v).numpy() for k, v in result.items() if k != "chain"}
    files = {out if k == "samples" else out.with_name(f"{out.stem}-{k}.npy"): v for k, v in arrays.items()}
    taken = [str(p) for p in files if p.exists()]
    if taken and not args.force:
        raise FileExistsError(f"{taken[0]} exists; pass --force to overwrite it")
    with families.folder.lock(run.dir, "sample"):
        for path, array in files.items():  # e.g. a DiffuseVAE's VAE outputs beside their refinements
            np.save(path, array)
    extra = [p for p in files if p != out]
    print(f"{args.n} samples: {out}" + "".join(f", {p}" for p in extra))
    return 0


def cmd_data(args) -> int:
    if args.action == "collect":
        from .data.activations import collect
        from .families.folder import lock

        with lock(Path(args.out), "data collect"):
            cur = collect(args.out, layer=args.layer, tokens=args.tokens, text_file=args.text, progress=not args.quiet)
        print(f"{cur['tokens']:,} activations of layer {args.layer} in {len(cur['shards'])} shards in {args.out}")
        return 0
    from .data import DATASETS, available

    for name, text in DATASETS.items():
        ok, how = available(name)
        print(f"{name:<16} {'available' if ok else f'missing: {how}':<12} {text}")
    print(f"{'PATH':<16} {'':<12} your own array: .npy, .npz (key x, optional y) or .csv, shape [N, D] or [N, H, W]")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, rest = _parser().parse_known_args(argv)
    try:
        if args.command in ("train", "solve", "attack", "robustness", "predict", "compress", "decompress"):
            from . import families

            print(getattr(families, args.command)(rest))
            return 0
        if rest:
            raise ValueError(f"unrecognized arguments: {' '.join(rest)}")
        return {"eval": cmd_eval, "diagnose": cmd_diagnose, "report": cmd_report, "data": cmd_data,
                "sample": cmd_sample}[args.command](args)
    except USER_ERRORS as e:
        if os.environ.get("VARILAB_DEBUG"):
            raise
        msg = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.filename}: {e.strerror}"
        print(f"varilab {args.command}: error: {msg or type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"varilab {args.command}: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as e:
        from .train import TrainingDiverged

        if isinstance(e, TrainingDiverged):
            print(f"varilab {args.command}: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
