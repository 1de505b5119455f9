"""The `varilab` command: parses arguments, calls the library, prints. Heavy imports happen per command."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError,
               ModuleNotFoundError)
TRAIN_KEYS = ("model", "data", "latent_dim", "hidden", "likelihood", "obs_var", "epochs", "batch_size", "lr", "beta",
              "seed", "binarize", "test_fraction", "objective", "samples", "estimator", "baseline", "temperature",
              "categories", "free_bits", "kl_warmup", "kl_cycle", "beta2", "latent_dim_2", "enc_var_1", "pseudo_inputs", "condition", "arch",
              "n", "spectrum", "dim", "size", "precision", "compile")
DIFFUSION_KEYS = ("loss", "timesteps", "channels", "mults", "depth", "downscale", "vae_epochs", "vae_hidden", "ema",
                 "expost_gmm")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="varilab", description="Train, evaluate and diagnose variational latent-variable models.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model and write a run folder")
    t.add_argument("--model", help="model family: vae, linear-vae, discrete-vae, vampprior, cvae, linear-cvae, hvae, linear-hvae, "
                                    "ard-vae; diffusion: ddpm, flow, diffusevae (default vae)")
    t.add_argument("--data", help="data set name or a .npy/.npz/.csv path; default digits")
    t.add_argument("--latent-dim", type=int, help="number of latent dimensions (default 16)")
    t.add_argument("--hidden", help="hidden layer sizes, comma-separated (default 512)")
    t.add_argument("--likelihood", help="bernoulli or gaussian (vae; default bernoulli)")
    t.add_argument("--obs-var", help="Gaussian observation variance: a number or 'learned' (default 1)")
    t.add_argument("--epochs", type=int, help="epochs to train (default 50; with --resume, the new total)")
    t.add_argument("--batch-size", type=int, help="batch size (default 128)")
    t.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    t.add_argument("--beta", type=float, help="weight of the KL term (default 1)")
    t.add_argument("--seed", type=int, help="random seed for split, initialisation and sampling (default 0)")
    t.add_argument("--binarize", help="none, fixed or dynamic (default none)")
    t.add_argument("--test-fraction", type=float, help="share of the data held out as the test split (default 0.2)")
    t.add_argument("--objective", help="elbo or iwae (default elbo)")
    t.add_argument("--samples", type=int, help="Monte-Carlo samples per point; the K of iwae (default 1)")
    t.add_argument("--estimator", help="reparam, score, gumbel or straight-through (default reparam)")
    t.add_argument("--baseline", help="score function baseline: none, moving-average, leave-one-out (default none)")
    t.add_argument("--temperature", type=float, help="gumbel / straight-through temperature (default 0.5)")
    t.add_argument("--categories", type=int, help="discrete-vae: classes per latent variable (default 10)")
    t.add_argument("--free-bits", type=float, help="free bits per latent dimension, in nats (default 0: off)")
    t.add_argument("--kl-warmup", type=int, help="epochs of linear KL warm-up to --beta (default 0: off)")
    t.add_argument("--kl-cycle", type=int, help="epochs per cycle of cyclical KL annealing (default 0: off)")
    t.add_argument("--beta2", type=float, help="hvae: weight of the second level's KL (default 1)")
    t.add_argument("--latent-dim-2", type=int, help="hvae: size of the second latent level (default 8)")
    t.add_argument("--enc-var-1", type=float, help="hvae: fix the first level's encoder variance (default: learned)")
    t.add_argument("--pseudo-inputs", type=int, help="vampprior: number of pseudo-inputs (default 100)")
    t.add_argument("--arch", help="vae family: mlp or conv (convolutional encoder and decoder; default mlp)")
    t.add_argument("--condition", help="cvae: label (one-hot class) or top-half (complete an image's bottom half)")
    t.add_argument("--n", type=int, help="generated data sets: number of samples (default 10000)")
    t.add_argument("--spectrum", help="linear-gaussian: covariance eigenvalues, e.g. 9,6,4,2.5")
    t.add_argument("--dim", type=int, help="linear-gaussian: data dimension (the last eigenvalue repeats)")
    t.add_argument("--size", type=int, help="shapes: image side in pixels (default 32)")
    t.add_argument("--precision", help="fp32, or bf16 for the forward pass under bfloat16 autocast (default fp32)")
    t.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the training step (eager, with a notice, when compiling fails)")
    t.add_argument("--loss", help="ddpm, diffusevae: eps (default) or dsm (denoising score matching); flow: flow")
    t.add_argument("--timesteps", type=int, help="ddpm, diffusevae: steps T of the noise schedule (default 1000)")
    t.add_argument("--channels", type=int, help="diffusion on images: U-Net width (default 32)")
    t.add_argument("--mults", help="diffusion on images: U-Net width multipliers per level, comma-separated (default 1,2)")
    t.add_argument("--depth", type=int, help="diffusion on vectors: hidden layers of the MLP (default 3; width: --hidden)")
    t.add_argument("--downscale", type=int, help="diffusion on images: average-pool by this factor (default 1)")
    t.add_argument("--vae-epochs", type=int, help="diffusevae: epochs of the VAE stage (default 50)")
    t.add_argument("--vae-hidden", help="diffusevae: the VAE's hidden sizes, comma-separated (default 512)")
    t.add_argument("--ema", type=float, help="diffusion: decay of a moving average of the weights that samples, "
                                             "e.g. 0.999 (default 0: off)")
    t.add_argument("--expost-gmm", type=int, help="diffusevae: sample z from a Gaussian mixture of this many "
                                                  "components fit to the VAE's codes of the training set (default 0: "
                                                  "z ~ N(0, I))")
    t.add_argument("--config", help="a .json or .toml file of these options; flags override it")
    t.add_argument("--out", help="run folder (default runs/MODEL-DATA)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--force", action="store_true", help="overwrite a run already in --out")
    t.add_argument("--quiet", action="store_true", help="print nothing but errors and the final line")
    t.add_argument("--diagnostics", action="store_true",
                   help="log KL per dimension, activity and active units of the test split every epoch")

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
    g.add_argument("--json", action="store_true", help="print one JSON object")

    r = sub.add_parser("report", help="write the run's self-contained HTML report")
    r.add_argument("run", help="run folder")
    r.add_argument("--out", help="report path (default RUN/report.html)")
    r.add_argument("--data", help="report on another data set or file with the same number of features")
    r.add_argument("--force", action="store_true", help="overwrite an existing report")

    s = sub.add_parser("sae", help="sparse autoencoders on transformer activations (needs varilab[sae] to collect)")
    ssub = s.add_subparsers(dest="sae_command", required=True, metavar="ACTION")
    c = ssub.add_parser("collect", help="store MiniLM activations of one layer as memory-mapped shards")
    c.add_argument("--layer", type=int, default=3, help="transformer block whose output is stored (1-6; default 3)")
    c.add_argument("--tokens", type=int, default=500_000, help="word-piece tokens to store, at least (it stops at the end of a text; default 500000)")
    c.add_argument("--text", help="your own UTF-8 text file (default: offline Wikipedia extracts)")
    c.add_argument("--out", required=True, help="activation folder (an interrupted collection resumes there)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    st = ssub.add_parser("train", help="train an SAE on stored activations and write a run folder")
    st.add_argument("--model", default="topk", help="topk, batchtopk, relu or vsae (default topk)")
    st.add_argument("--activations", required=True, help="a folder from `sae collect`, or a .npy file [N, d]")
    st.add_argument("--features", type=int, default=3072, help="dictionary size F (default 3072)")
    st.add_argument("--k", type=int, default=32, help="active latents per token (default 32)")
    st.add_argument("--epochs", type=int, default=2, help="passes over the training tokens (default 2)")
    st.add_argument("--batch-size", type=int, default=512, help="tokens per step (default 512)")
    st.add_argument("--lr", type=float, default=4e-4, help="Adam learning rate (default 4e-4)")
    st.add_argument("--kl-coef", type=float, default=1.0, help="vsae: kappa, reached after a 10%% warm-up (default 1)")
    st.add_argument("--vsae-variance", default="fixed", choices=["fixed", "learned"],
                    help="vsae: fixed (z = mu) or learned (default fixed)")
    st.add_argument("--vsae-encoder", default="relu", choices=["relu", "linear"],
                    help="vsae: relu (mu = ReLU(W_enc x + b_enc)) or linear (mu unconstrained) (default relu)")
    st.add_argument("--decoder-norm", default="unit", choices=["unit", "free"],
                    help="unit (decoder columns renormalised after each step) or free (default unit)")
    st.add_argument("--input-norm", default="d", choices=["d", "unit", "none"],
                    help="scale the activations so that E||x||^2 = d (d), = 1 (unit), or not at all (none) (default d)")
    st.add_argument("--init-norm", type=float, default=1.0, help="norm of the decoder columns and encoder rows at "
                                                                 "initialisation (default 1)")
    st.add_argument("--grad-clip", type=float, default=None, help="clip the global gradient norm to this (default off)")
    st.add_argument("--l1-coef", type=float, default=5.0, help="relu: L1 weight (default 5)")
    st.add_argument("--aux-coef", type=float, default=1 / 32, help="topk, batchtopk: AuxK weight, 0 turns it off (default 1/32)")
    st.add_argument("--dead-window", type=int, default=100_000, help="a latent is dead after this many tokens without firing")
    st.add_argument("--precision", default="fp32", help="fp32 or bf16")
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--no-embedding", action="store_true", help="skip the embedding-recovered measurement after training")
    st.add_argument("--embedding-sequences", type=int, default=256,
                    help="held-out 128-token sequences for embedding recovered (default 256)")
    st.add_argument("--out", required=True, help="run folder")
    st.add_argument("--force", action="store_true", help="overwrite a run already in --out")
    st.add_argument("--quiet", action="store_true")

    sm = sub.add_parser("sample", help="draw samples from a trained diffusion run (ddpm, flow, diffusevae)")
    sm.add_argument("run", help="run folder")
    sm.add_argument("--steps", type=int, default=50, help="sampler steps (default 50)")
    sm.add_argument("--sampler", default="ddim", help="ddpm (ancestral), ddim, euler-maruyama, pf-euler or pf-heun "
                                                     "(probability-flow ODE) (default ddim)")
    sm.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--prior", choices=["normal", "expost"],
                    help="diffusevae: draw z from N(0, I) or the fitted mixture (default: the mixture if fitted)")
    sm.add_argument("--out", help=".npy file (default RUN/samples-SAMPLER-STEPS.npy; DiffuseVAE adds ...-vae.npy)")

    d = sub.add_parser("data", help="data sets")
    d.add_argument("action", choices=["list"], help="list the data sets and whether each is available here")
    return p


def cmd_train(args) -> int:
    from . import run as R
    from .train import fit

    given = {k: getattr(args, k) for k in TRAIN_KEYS + DIFFUSION_KEYS if getattr(args, k) is not None}
    settings = R.read_config_file(args.config) if args.config else {}
    settings.update(given)
    from .diffusion_run import MODELS as DIFFUSION

    if settings.get("model") in DIFFUSION or (args.resume and args.out and _is_diffusion(args.out)):
        return _train_diffusion(args, settings)
    extra = [k for k in DIFFUSION_KEYS if k in settings]
    if extra:
        raise ValueError(f"--{extra[0].replace('_', '-')} applies to the diffusion models ({', '.join(DIFFUSION)}), "
                         f"not to {settings.get('model', 'vae')}")
    if args.resume:
        if not args.out:
            raise ValueError("--resume needs --out, the run folder to continue")
        saved = R.load_config(args.out)
        new = R.config_from_dict(settings, where="arguments")
        for key in settings:
            if key != "epochs" and getattr(new, key) != getattr(saved, key):
                raise ValueError(f"--{key.replace('_', '-')} is {getattr(new, key)!r} but the run was started with "
                                 f"{getattr(saved, key)!r}; a resumed run keeps its configuration (only --epochs may change)")
        cfg = saved if "epochs" not in settings else R.config_from_dict({**R.dataclasses.asdict(saved), "epochs": new.epochs})
    else:
        cfg = R.config_from_dict(settings, where=args.config or "arguments")
    out = Path(args.out or f"runs/{cfg.model}-{Path(cfg.data).stem}")
    R.check_out_dir(out, args.resume, args.force)
    ds = R.load_data(cfg)
    print(ds.summary(), file=sys.stderr)
    for w in R.preflight(cfg, ds):
        print(w, file=sys.stderr)
    model = R.make_model(cfg, ds.x_dim, R.cond_dim(ds), ds.image_shape)
    if not args.resume:
        R.clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
        R.save_config(out, cfg)
    objective, beta = R.make_objective(cfg, -(-len(ds.x_train) // cfg.batch_size))
    history = fit(model, ds, out=out, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, beta=beta,
                  objective=objective, seed=cfg.seed, resume=args.resume, quiet=args.quiet, diagnostics=args.diagnostics,
                  precision=cfg.precision, compile=cfg.compile)
    if history:
        m = history[-1]
        print(f"trained {cfg.model} for {m['epoch']} epochs: train loss {m['loss']:.4f}, "
              f"test loss {m.get('test_loss', float('nan')):.4f}; run in {out}")
    return 0


def _is_diffusion(run_dir) -> bool:
    from .diffusion_run import is_diffusion_run

    return is_diffusion_run(run_dir)


def _train_diffusion(args, settings: dict) -> int:
    from . import diffusion_run as D
    from .run import check_out_dir, clear_run

    if args.diagnostics:
        raise ValueError("--diagnostics applies to the VAE family, not to the diffusion models")
    if args.resume:
        if not args.out:
            raise ValueError("--resume needs --out, the run folder to continue")
        saved = D.load_config(args.out)
        keep = D.dataclasses.asdict(saved)
        for key, value in settings.items():
            if key not in ("epochs", "vae_epochs") and getattr(D.config_from_dict({**keep, key: value}), key) != keep[key]:
                raise ValueError(f"--{key.replace('_', '-')} differs from the run's configuration; a resumed run keeps it "
                                 "(only --epochs and --vae-epochs may change)")
        cfg = D.config_from_dict({**keep, **{k: v for k, v in settings.items() if k in ("epochs", "vae_epochs")}})
    else:
        cfg = D.config_from_dict(settings, where=args.config or "arguments")
    out = Path(args.out or f"runs/{cfg.model}-{Path(cfg.data).stem}")
    check_out_dir(out, args.resume, args.force)
    if not args.resume:
        clear_run(out)
        if (out / D.VAE_DIR).is_dir():
            import shutil

            shutil.rmtree(out / D.VAE_DIR)
    print(D.load_data(cfg).summary(), file=sys.stderr)
    history = D.train(cfg, out, quiet=args.quiet, resume=args.resume)
    m = history[-1] if history else {}
    print(f"trained {cfg.model} for {m.get('epoch', cfg.epochs)} epochs: train loss {m.get('loss', float('nan')):.4f}, "
          f"test loss {m.get('test_loss', float('nan')):.4f}; run in {out}")
    return 0


def cmd_sample(args) -> int:
    import numpy as np

    from . import diffusion_run as D

    run = D.load(args.run)
    result = D.sample(run, args.n, args.steps, args.sampler, seed=args.seed, prior=args.prior)
    out = Path(args.out) if args.out else run.dir / f"samples-{args.sampler}-{args.steps}.npy"
    if out.suffix != ".npy":
        raise ValueError(f"--out must be a .npy file, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    shape = run.data.image_shape
    arrays = {k: (v.reshape(len(v), *shape) if shape else v).numpy() for k, v in result.items()}
    np.save(out, arrays["samples"])
    line = f"{args.n} samples, {args.sampler} with {args.steps} steps: {out}"
    if "vae" in arrays:
        vae_out = out.with_name(out.stem + "-vae.npy")
        np.save(vae_out, arrays["vae"])
        line += f" (the VAE outputs they refine: {vae_out})"
    print(line)
    return 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate_run
    from .run import load_run

    ks = _int_list(args.k, "--k") if args.nll else None
    if _is_diffusion(args.run):
        from . import diffusion_run as D

        if args.data or args.nll:
            raise ValueError("--data and --nll apply to the VAE family; a DDPM's eval reports its bound in bits/dim")
        result = D.evaluate_run(D.load(args.run))
    else:
        result = evaluate_run(load_run(args.run, args.data), nll_k=ks)
    if args.json:
        print(json.dumps(result))
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
        raise ValueError(f"{flag} takes positive integers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{flag} takes positive integers separated by commas, got {text!r}")
    return values


def cmd_sae(args) -> int:
    from . import sae_run

    if args.sae_command == "collect":
        from .data.activations import collect

        cur = collect(args.out, layer=args.layer, tokens=args.tokens, text_file=args.text, progress=not args.quiet)
        print(f"{cur['tokens']:,} activations of layer {args.layer} in {len(cur['shards'])} shards in {args.out}")
        return 0
    from .run import check_out_dir, clear_run

    out = Path(args.out)
    check_out_dir(out, False, args.force)
    clear_run(out)
    cfg = sae_run.SAERunConfig(activations=args.activations, kind=args.model, features=args.features, k=args.k,
                               epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                               kl_coef=args.kl_coef, vsae_variance=args.vsae_variance,
                               vsae_encoder=args.vsae_encoder, decoder_norm=args.decoder_norm, l1_coef=args.l1_coef,
                               aux_coef=args.aux_coef, dead_window_tokens=args.dead_window, precision=args.precision,
                               input_norm=args.input_norm, init_norm=args.init_norm, grad_clip=args.grad_clip)
    history = sae_run.train(cfg, out, quiet=args.quiet)
    h = sae_run.health(out, embedding=not args.no_embedding, sequences=args.embedding_sequences)
    print(f"trained {cfg.kind} SAE for {history[-1]['epoch']} epochs: " + _sae_line(h) + f"; run in {out}")
    return 0


def _sae_line(h: dict) -> str:
    emb = h["embedding"].get("embedding_recovered")
    return (f"explained variance {h['explained_variance']:.4f}, L0 {h['l0']:.1f}, fraction alive "
            f"{h['alive_in_training']:.3f} (last {h['dead_window_tokens']:,} training tokens)"
            + (f", embedding recovered {emb:.4f}" if emb is not None else ""))


def _diagnose_sae(args) -> int:
    from . import sae_run

    saved = Path(args.run) / sae_run.HEALTH  # written after training; measured again when missing
    h = json.loads(saved.read_text()) if saved.exists() else sae_run.health(args.run)
    if args.json:
        print(json.dumps(h))
        return 0
    print(_sae_line(h))
    print(f"held-out tokens {h['test_tokens']:,}: FVU {h['fvu']:.4f}, {h['dead']} of {h['features']} latents did not "
          f"fire on them")
    if h["warning"]:
        print(h["warning"])
    return 0


def cmd_diagnose(args) -> int:
    from .diagnostics import diagnose
    from .run import load_run
    from .sae_run import is_sae_run
    from .train import test_inputs

    if is_sae_run(args.run):
        return _diagnose_sae(args)
    if _is_diffusion(args.run):
        raise ValueError(f"{args.run} is a diffusion run: its noise has no learned posterior to diagnose"
                         + (f"; diagnose its VAE with `varilab diagnose {Path(args.run) / 'vae'}`"
                            if (Path(args.run) / "vae").is_dir() else "; `varilab eval` gives its bound in bits/dim"))

    run = load_run(args.run, args.data)
    device = next(run.model.parameters()).device
    cond = None if run.data.c_test is None else run.data.c_test.to(device)
    d = diagnose(run.model, test_inputs(run.data.x_test.to(device), run.data), threshold=args.threshold, cond=cond)
    result = d.to_dict()
    if args.json:
        print(json.dumps(result))
        return 0
    print(d.verdict())
    print(f"{'dim':>4} {'KL (nats)':>10} {'activity':>10} {'E var q':>9}  variable")
    kind = {**{i: "active" for i in d.active}, **{i: "passive" for i in d.passive}, **{i: "mixed" for i in d.mixed}}
    for i in range(len(result["kl_per_dim"])):
        print(f"{i:>4} {result['kl_per_dim'][i]:>10.4f} {result['activity'][i]:>10.4f} "
              f"{result['mean_posterior_var'][i]:>9.4f}  {kind[i]}")
    if "mutual_information" in result:
        print(f"I(x; z) = {result['mutual_information']:.4f} nats, KL(q(z) || p(z)) = {result['marginal_kl']:.4f} nats")
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    print(write_report(args.run, args.out, args.force, args.data))
    return 0


def cmd_data(args) -> int:
    from .data import DATASETS, available

    for name, text in DATASETS.items():
        ok, how = available(name)
        status = "available" if ok else f"missing: {how}"
        print(f"{name:<16} {status:<12} {text}")
    print(f"{'PATH':<16} {'':<12} your own array: .npy, .npz (key x, optional y) or .csv, shape [N, D] or [N, H, W]")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"train": cmd_train, "eval": cmd_eval, "diagnose": cmd_diagnose, "report": cmd_report,
               "data": cmd_data, "sae": cmd_sae, "sample": cmd_sample}[args.command]
    try:
        return handler(args)
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
