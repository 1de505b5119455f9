"""The SAE family: sparse autoencoders (TopK, BatchTopK, ReLU with L1, the variational vSAE) trained on
stored activations, and their health: L0, explained variance, fraction alive, feature density and, for
MiniLM activations, embedding recovered. The run folder also holds `health.json` after training."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from . import folder
from .options import TrainOptions, non_negative, non_negative_int, option, positive, positive_int
from .protocol import Family, Run
from .registry import register

MODELS = {"topk": "sparse autoencoder keeping the k largest codes per token, with AuxK on dead latents",
          "batchtopk": "sparse autoencoder keeping the batch's k * B largest codes",
          "relu": "ReLU sparse autoencoder with an L1 penalty weighted by decoder norms",
          "vsae": "variational SAE: Gaussian posterior around the encoder output, KL to N(0, I), TopK after sampling"}
HEALTH = "health.json"
K_MODELS = ("topk", "batchtopk", "vsae")


@dataclass
class SAEOptions(TrainOptions):
    DEFAULTS = {"epochs": 2, "batch_size": 512, "lr": 4e-4, "test_fraction": 0.05}
    HELP = {"data": "the activations: a folder from `varilab data collect`, or a .npy file [N, d]",
            "epochs": "passes over the training tokens (with --resume, the new total)", "batch_size": "tokens per step",
            "seed": "random seed for initialisation and batches", "test_fraction": "the last share of the tokens, held out"}
    model: str = option("topk", "the model", choices=MODELS)
    features: int = option(3072, "dictionary size F", check=positive_int.upto(4_194_304))
    k: int = option(32, "active latents per token", check=positive_int.upto(65_536), models=K_MODELS)
    kl_coef: float = option(1.0, "kappa, the KL weight reached after the warm-up", check=non_negative.upto(1e4), models=("vsae",))
    kl_warmup_steps: int | None = option(None, "steps of linear warm-up of kappa from 0 (default: a tenth of the run)",
                                         check=non_negative_int.upto(100_000_000), models=("vsae",))
    vsae_variance: str = option("fixed", "fixed (z = mu) or learned (z = mu + sigma eps)", choices=("fixed", "learned"),
                                models=("vsae",))
    vsae_encoder: str = option("relu", "relu (mu = ReLU(W_enc x + b_enc)) or linear (mu unconstrained)",
                               choices=("relu", "linear"), models=("vsae",))
    decoder_norm: str = option("unit", "unit (decoder columns renormalised after each step) or free",
                               choices=("unit", "free"))
    l1_coef: float = option(5.0, "L1 weight", check=non_negative.upto(1e4), models=("relu",))
    aux_coef: float = option(1 / 32, "AuxK weight (0: off)", check=non_negative.upto(1e4), models=("topk", "batchtopk"))
    dead_window_tokens: int = option(100_000, "a latent is dead after this many tokens without firing",
                                     check=positive_int.upto(10_000_000_000))
    input_norm: str = option("d", "scale the activations so that E||x||^2 = d (d), = 1 (unit), or not (none)",
                             choices=("d", "unit", "none"))
    init_norm: float = option(1.0, "norm of the decoder columns and encoder rows at initialisation",
                             check=positive.upto(1e4))
    grad_clip: float | None = option(None, "clip the global gradient norm to this (default off)",
                                     check=positive.upto(1e6))
    precision: str = option("auto", "bf16 runs the forward pass under bfloat16 autocast; auto chooses it where the "
                            "device has native bfloat16, else fp32", choices=("auto", "fp32", "bf16"))
    embedding: bool = option(True, "measure embedding recovered after training (MiniLM activations only)")
    embedding_sequences: int = option(256, "held-out 128-token sequences for embedding recovered",
                                      check=positive_int.upto(100_000))


def split(x, test_fraction: float):
    """The first tokens train, the last `test_fraction` of them test (they come from later texts)."""
    n_test = max(1, int(round(len(x) * test_fraction)))
    return x[:-n_test], x[-n_test:]


def sae_config(opts: SAEOptions, d: int, total_steps: int):
    from ..models.sae import SAEConfig

    k = opts.k if opts.model in K_MODELS else min(opts.k, opts.features)  # a ReLU SAE has no k
    return SAEConfig(d=d, features=opts.features, k=k, kind=opts.model, l1_coef=opts.l1_coef,
                     aux_coef=opts.aux_coef, dead_window_tokens=opts.dead_window_tokens, kl_coef=opts.kl_coef,
                     kl_warmup_steps=opts.kl_warmup_steps, vsae_variance=opts.vsae_variance,
                     vsae_encoder=opts.vsae_encoder, decoder_norm=opts.decoder_norm, input_norm=opts.input_norm,
                     init_norm=opts.init_norm, grad_clip=opts.grad_clip, total_steps=total_steps)


def _objective(model, x, **_):
    return model.loss(x)  # the model counts its own steps (kappa warm-up) and dead latents


def _activations(opts: SAEOptions):
    from ..data.activations import load_activations

    if opts.data is None:
        raise ValueError("an SAE trains on stored activations: pass --data FOLDER (from `varilab data collect`) or "
                         "--data x.npy [N, d]")
    return load_activations(opts.data)


def train(opts: SAEOptions, out: Path, resume: bool = False, quiet: bool = False) -> list[dict]:
    import torch

    from ..data import Dataset
    from ..models.sae import SAE
    from ..train import fit

    x = _activations(opts)
    x_train, x_test = split(x, opts.test_fraction)
    steps = opts.epochs * math.ceil(len(x_train) / opts.batch_size)
    folder.check_fits(lambda: SAE(sae_config(opts, x.shape[1], steps)), f"an SAE with {opts.features:,} features",
                      extra_bytes=3 * 4 * opts.batch_size * (opts.features + x.shape[1]))
    torch.manual_seed(opts.seed)
    model = SAE(sae_config(opts, x.shape[1], steps))
    if not resume:
        g = torch.Generator().manual_seed(opts.seed)
        model.init_from_data(x_train[torch.randperm(len(x_train), generator=g)[:20_000]])  # b_dec, input scale
    folder.begin(out, FAMILY, opts, resume, d=x.shape[1], total_steps=steps)
    history = fit(model, Dataset("activations", x_train, x_test), out=out, epochs=opts.epochs,
                  batch_size=opts.batch_size, lr=opts.lr, objective=_objective, seed=opts.seed, resume=resume,
                  quiet=quiet, precision=opts.precision)
    h = health(load(out, opts, raw=folder.read_config(out)))
    history[-1] = {**history[-1], "summary": _line(h)}  # for the final line
    return history


def load(run_dir: Path, opts: SAEOptions, data: str | None = None, raw: dict | None = None) -> Run:
    from ..checkpoint import load_weights
    from ..models.sae import SAE
    from ..train import WEIGHTS

    if data is not None:
        raise ValueError("an SAE run is measured on the held-out share of its own activations; --data does not apply")
    model = SAE(sae_config(opts, raw["d"], raw["total_steps"]))
    load_weights(run_dir / WEIGHTS, model)
    return Run(run_dir, FAMILY, opts, model.eval())


def health(run: Run, window_tokens: int | None = None, embedding: bool | None = None) -> dict:
    """The run's health on its held-out tokens, plus "alive_in_training" (fired within the last
    dead_window_tokens training tokens) and, for MiniLM activations, "embedding recovered". Writes health.json."""
    import torch

    from ..checkpoint import atomic_write
    from ..diagnostics.sae import sae_health

    opts, model = run.options, run.model
    _, x_test = split(_activations(opts), opts.test_fraction)
    h = sae_health(model, x_test, window_tokens=window_tokens or opts.dead_window_tokens)
    out = {k: (v.tolist() if torch.is_tensor(v) else v) for k, v in h.items()}
    dead = model.dead_latents()  # tokens since the last firing >= dead_window_tokens, as training's AuxK uses
    out.update(kind=opts.model, k=opts.k, features=opts.features, test_tokens=len(x_test),
               dead_window_tokens=opts.dead_window_tokens, dead_in_training=int(dead.sum()),
               alive_in_training=float((~dead).float().mean()))
    measure = opts.embedding if embedding is None else embedding
    out["embedding"] = _embedding(opts, model) if measure else {"skipped": "not asked for"}
    atomic_write(run.dir / HEALTH, json.dumps(out) + "\n")
    return out


def _embedding(opts: SAEOptions, model) -> dict:
    from ..data.activations import manifest, read_cursor

    meta = manifest(opts.data)
    if meta is None or "MiniLM" not in meta.get("model", ""):
        return {"skipped": "the activations are not from `varilab data collect`, so there is no model to patch"}
    from ..data import minilm
    from ..diagnostics.embedding import embedding_recovered

    texts = minilm.file_texts(meta["source"]) if Path(meta["source"]).exists() else minilm.wiki_texts()
    held_out = texts[read_cursor(opts.data)["text"]:]  # texts the collection never reached
    return embedding_recovered(model, held_out, meta["layer"], sequences=opts.embedding_sequences)


def _saved_health(run: Run) -> dict:
    """health.json, written after training; measured again when it is missing or damaged (it is a cache)."""
    saved = run.dir / HEALTH
    try:
        h = json.loads(saved.read_text())
        if isinstance(h, dict) and {"explained_variance", "l0", "embedding", "dead_in_training"} <= h.keys():
            return h
    except (OSError, ValueError):
        pass
    return health(run)


def _line(h: dict) -> str:
    emb = h["embedding"].get("embedding_recovered")
    return (f"explained variance {h['explained_variance']:.4f}, L0 {h['l0']:.1f}, fraction alive "
            f"{h['alive_in_training']:.3f} (last {h['dead_window_tokens']:,} training tokens)"
            + (f", embedding recovered {emb:.4f}" if emb is not None else ""))


def evaluate(run: Run) -> dict:
    """The held-out reconstruction: explained variance, FVU, L0, fraction alive, shrinkage (no embedding)."""
    h = health(run, embedding=False) if not (run.dir / HEALTH).exists() else _saved_health(run)
    keys = ("explained_variance", "fvu", "l0", "alive_in_training", "fraction_alive", "dead",
            "relative_reconstruction_bias", "test_tokens")
    return {k: h[k] for k in keys if k in h}


def dead_line(h: dict) -> str:
    return (f"dead in training: {h['dead_in_training']:,} of {h['features']:,} latents (no firing in the last "
            f"{h['dead_window_tokens']:,} training tokens: tokens since the last firing >= {h['dead_window_tokens']:,})")


def sae_lens_dead(run: Run, window_batches: int) -> dict:
    """sae-lens's count of dead latents: more than `window_batches` training batches since the batch in which each
    last fired (its `dead_feature_window`, in steps), from the batch counter kept during training."""
    if window_batches < 0:
        raise ValueError(f"--sae-lens-window must be a number of batches >= 0, got {window_batches}")
    dead = run.model.dead_latents_sae_lens(window_batches)
    if dead is None:
        raise ValueError(f"{run.dir} was trained before varilab kept sae-lens's batch counter; train it again "
                         "(or resume it: the counter starts then) to count dead latents as sae-lens does")
    return {"dead_sae_lens": int(dead.sum()), "sae_lens_window_batches": window_batches,
            "batch_tokens": run.options.batch_size}


@dataclass
class SAELensFlags:
    """`varilab diagnose`'s flags of an SAE run."""
    sae_lens_window: int | None = option(None, "also count dead latents as sae-lens does: more than this many "
                                         "training batches since the batch in which they last fired (its "
                                         "dead_feature_window)", check=non_negative_int.upto(1_000_000_000))


def diagnose(run: Run, sae_lens_window: int | None = None) -> tuple[dict, list[str]]:
    h = dict(_saved_health(run))
    lines = [_line(h), dead_line(h),
             f"held-out tokens {h['test_tokens']:,}: FVU {h['fvu']:.4f}, {h['dead']} of {h['features']} latents did "
             "not fire on them"]
    if sae_lens_window is not None:
        h.update(sae_lens_dead(run, sae_lens_window))
        lines.append(f"sae-lens definition: {h['dead_sae_lens']:,} of {h['features']:,} latents dead (more than "
                     f"{sae_lens_window:,} training batches of {h['batch_tokens']:,} tokens since the batch in which "
                     f"they last fired; sae-lens's dead_feature_window = {sae_lens_window:,})")
    return h, lines + ([h["warning"]] if h.get("warning") else [])


DEFINITIONS = (
    "L0 = mean number of non-zero codes per token. FVU = sum_n ||x_n - x_hat_n||^2 / sum_n ||x_n - x_bar||^2 over the "
    "held-out tokens (x_bar their mean); explained variance = 1 - FVU. A latent is dead when it has not fired in the "
    "last {window:,} training tokens: tokens since its last firing >= {window:,}, counted to the token (0 when it "
    "fired on the last token; from the start of training for one that never fired). Training's AuxK, `varilab "
    "diagnose` and this page use this one count. `varilab diagnose RUN --sae-lens-window W` also counts as sae-lens "
    "does: more than W training batches since the batch in which it last fired. Embedding recovered "
    "= 1 - D(SAE) / D(zero ablation), D the mean cosine distance between MiniLM's sentence embedding with the layer's "
    "word-piece activations replaced and the clean one, on held-out text.")


def report(run: Run):
    from ..report import Page, Section, img, table
    from ..report import plots

    h = _saved_health(run)
    emb = h["embedding"].get("embedding_recovered")
    verdict = (f"{h['kind']} SAE, F = {h['features']:,}, k = {h['k']}: explained variance {h['explained_variance']:.3f}, "
               f"L0 {h['l0']:.1f}, fraction alive {h['alive_in_training']:.3f}"
               + (f", embedding recovered {emb:.3f}" if emb is not None else "") + ".")
    if h.get("warning"):
        verdict += " " + h["warning"] + "."
    rows = [("explained variance (held-out)", h["explained_variance"]), ("FVU (held-out)", h["fvu"]), ("L0", h["l0"]),
            ("relative reconstruction bias (1: codes not shrunk)", h.get("relative_reconstruction_bias", "-")),
            (f"fraction alive (last {h['dead_window_tokens']:,} training tokens)", h["alive_in_training"]),
            ("dead latents (training)", f"{h['dead_in_training']:,} of {h['features']:,}"),
            ("fraction that fired on the held-out tokens", 1 - h["dead"] / h["features"]),
            ("held-out tokens", h["test_tokens"])]
    if emb is not None:
        rows += [("embedding recovered", emb), ("cosine distance, SAE patched", h["embedding"]["distance_sae"]),
                 ("cosine distance, zero-ablated", h["embedding"]["distance_zero"]),
                 ("held-out sequences", h["embedding"]["sequences"])]
    else:
        rows.append(("embedding recovered", h["embedding"].get("skipped", "-")))
    sections = [Section("Health", table(rows), DEFINITIONS.format(window=h["dead_window_tokens"])),
                Section("Feature density", img(plots.density_histogram(h["log10_density"]), "feature density"),
                        "Share of held-out tokens on which each latent fires, log10; latents that never fired sit at "
                        "the left edge.")]
    return Page(f"{h['kind']} sparse autoencoder", verdict, sections, ["loss", "recon", "aux", "kl", "l1", "l0", "dead"])


def upgrade(raw: dict) -> dict:
    """Format 1 SAE folders named the model `kind` and the activations `activations`."""
    raw = dict(raw)
    if "kind" in raw:
        raw["model"] = raw.pop("kind")
    if "activations" in raw:
        raw["data"] = raw.pop("activations")
    if raw.get("normalize_input") is False:  # before input_norm replaced this switch
        raw["input_norm"] = "none"
    return raw


FAMILY = register(Family("sae", MODELS, SAEOptions, train=train, load=load, evaluate=evaluate, diagnose=diagnose,
                         report=report, flags={"diagnose": SAELensFlags}, upgrade=upgrade, files=(HEALTH,),
                         facts=("d", "total_steps")))
