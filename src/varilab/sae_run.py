"""An SAE run folder: its configuration, training on stored activations with the shared trainer, and
its health (L0, explained variance, fraction alive, feature density, embedding recovered).

The folder holds what every run holds (config.json, metrics.jsonl, model.safetensors,
checkpoint.safetensors) with `"family": "sae"` in the config, and `health.json` after training.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import atomic_write, load_weights
from .data import Dataset
from .data.activations import load_activations, manifest, read_cursor
from .diagnostics.sae import sae_health
from .models.sae import KINDS, SAE, SAEConfig
from .train import WEIGHTS, fit

HEALTH = "health.json"


@dataclass
class SAERunConfig:
    activations: str  # a folder made by `varilab sae collect`, or a .npy file [N, d]
    kind: str = "topk"  # topk, batchtopk, relu, vsae
    features: int = 3072
    k: int = 32
    epochs: int = 2
    batch_size: int = 512
    lr: float = 4e-4
    seed: int = 0
    test_fraction: float = 0.05  # the last share of the tokens, held out
    kl_coef: float = 1.0  # vsae: kappa
    vsae_variance: str = "fixed"  # vsae: fixed or learned
    vsae_encoder: str = "relu"  # vsae: relu (mu = ReLU(pre)) or linear (mu = pre)
    decoder_norm: str = "unit"  # unit (columns renormalised each step) or free
    l1_coef: float = 5.0  # relu
    aux_coef: float = 1 / 32  # topk, batchtopk: AuxK weight (0: off)
    dead_window_tokens: int = 100_000
    input_norm: str = "d"  # scale the activations so that E||x||^2 = d ("d"), 1 ("unit"), or not ("none")
    init_norm: float = 1.0  # norm of the decoder columns and encoder rows at initialisation
    grad_clip: float | None = None  # clip the global gradient norm (None: off)
    precision: str = "fp32"


def check(cfg: SAERunConfig) -> None:
    if cfg.kind not in KINDS:
        raise ValueError(f"unknown SAE model {cfg.kind!r}; choose one of {', '.join(KINDS)}")
    if cfg.epochs < 1 or cfg.batch_size < 1 or not cfg.lr > 0 or not 0 < cfg.test_fraction < 1:
        raise ValueError("epochs and batch_size must be positive, lr positive and test_fraction in (0, 1)")


def split(x: torch.Tensor, test_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The first tokens train, the last `test_fraction` of them test (they come from later texts)."""
    n_test = max(1, int(round(len(x) * test_fraction)))
    return x[:-n_test], x[-n_test:]


def sae_objective(model: SAE, x: torch.Tensor, **_) -> dict:
    return model.loss(x)  # the model counts its own steps (kappa warm-up) and dead latents


def train(cfg: SAERunConfig, out: str | Path, quiet: bool = False, resume: bool = False) -> list[dict]:
    check(cfg)
    out = Path(out)
    x = load_activations(cfg.activations)
    x_train, x_test = split(x, cfg.test_fraction)
    steps = cfg.epochs * math.ceil(len(x_train) / cfg.batch_size)
    torch.manual_seed(cfg.seed)
    model = SAE(sae_config(cfg, x.shape[1], steps))
    if not resume:
        g = torch.Generator().manual_seed(cfg.seed)
        sample = x_train[torch.randperm(len(x_train), generator=g)[:20_000]]
        model.init_from_data(sample)  # b_dec at the geometric median, the input scale
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.json", json.dumps({"family": "sae", **dataclasses.asdict(cfg),
                                                      "d": x.shape[1], "total_steps": steps}, indent=2) + "\n")
    ds = Dataset("activations", x_train, x_test)
    history = fit(model, ds, out=out, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                  objective=sae_objective, seed=cfg.seed, resume=resume, quiet=quiet, precision=cfg.precision)
    return history


def sae_config(cfg: SAERunConfig, d: int, total_steps: int) -> SAEConfig:
    return SAEConfig(d=d, features=cfg.features, k=cfg.k, kind=cfg.kind, l1_coef=cfg.l1_coef, aux_coef=cfg.aux_coef,
                     dead_window_tokens=cfg.dead_window_tokens, kl_coef=cfg.kl_coef, vsae_variance=cfg.vsae_variance,
                     vsae_encoder=cfg.vsae_encoder, decoder_norm=cfg.decoder_norm,
                     input_norm=cfg.input_norm, init_norm=cfg.init_norm, grad_clip=cfg.grad_clip,
                     total_steps=total_steps)


def is_sae_run(run_dir: str | Path) -> bool:
    p = Path(run_dir) / "config.json"
    return p.exists() and json.loads(p.read_text()).get("family") == "sae"


def load(run_dir: str | Path) -> tuple[SAERunConfig, SAE, dict]:
    """(config, model with its trained weights, the raw config dict) of an SAE run folder."""
    raw = json.loads((Path(run_dir) / "config.json").read_text())
    fields = {f.name for f in dataclasses.fields(SAERunConfig)}
    if raw.get("normalize_input") is False:  # runs written before input_norm replaced this switch
        raw["input_norm"] = "none"
    cfg = SAERunConfig(**{k: v for k, v in raw.items() if k in fields})
    model = SAE(sae_config(cfg, raw["d"], raw["total_steps"]))
    load_weights(Path(run_dir) / WEIGHTS, model)
    return cfg, model.eval(), raw


def health(run_dir: str | Path, window_tokens: int | None = None, embedding: bool = True,
           sequences: int = 256) -> dict:
    """The run's health on its held-out tokens, plus "alive_in_training" (fired within the last
    dead_window_tokens training tokens) and, for MiniLM activations, "embedding recovered". Writes health.json."""
    cfg, model, raw = load(run_dir)
    window = window_tokens or cfg.dead_window_tokens
    _, x_test = split(load_activations(cfg.activations), cfg.test_fraction)
    h = sae_health(model, x_test, window_tokens=window)
    out = {k: (v.tolist() if torch.is_tensor(v) else v) for k, v in h.items()}
    out["kind"], out["k"], out["features"], out["test_tokens"] = cfg.kind, cfg.k, cfg.features, len(x_test)
    out["alive_in_training"] = float((model.tokens_since_fired < cfg.dead_window_tokens).float().mean())
    out["dead_window_tokens"] = cfg.dead_window_tokens
    out["embedding"] = _embedding(cfg, model, sequences) if embedding else {"skipped": "not asked for"}
    atomic_write(Path(run_dir) / HEALTH, json.dumps(out) + "\n")
    return out


def _embedding(cfg: SAERunConfig, model: SAE, sequences: int) -> dict:
    meta = manifest(cfg.activations)
    if meta is None or "MiniLM" not in meta.get("model", ""):
        return {"skipped": "the activations are not from `varilab sae collect`, so there is no model to patch"}
    from .data import minilm
    from .diagnostics.embedding import embedding_recovered

    texts = minilm.file_texts(meta["source"]) if Path(meta["source"]).exists() else minilm.wiki_texts()
    held_out = texts[read_cursor(cfg.activations)["text"]:]  # texts the collection never reached
    return embedding_recovered(model, held_out, meta["layer"], sequences=sequences)
