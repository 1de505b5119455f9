"""Health of a sparse autoencoder: sparsity, reconstruction and dead latents, with pinned definitions.

For codes z [N, F], activations x [N, d] and reconstructions x_hat [N, d]:
    L0 = (1/N) sum_n #{j : z_nj != 0}
    FVU = sum_n ||x_n - x_hat_n||^2 / sum_n ||x_n - x_bar||^2,  x_bar = (1/N) sum_n x_n
    explained variance = 1 - FVU
    density_j = (1/N) #{n : z_nj != 0}
    a latent is alive when it fired within the last `window` tokens: tokens since its last firing < window
        (0 when it fired on the last token; a latent that never fired counts every token of the pass).
    sae-lens's definition, for matching its numbers: dead when more than W batches (steps) have passed
        since the last batch in which it fired: batches_since > W, the counter +1 per batch, 0 when it fired.
    relative reconstruction bias gamma = argmin_g sum_n ||x_hat_n / g - x_n||^2 = sum ||x_hat||^2 / sum x_hat . x
        (Rajamanoharan et al., 2024): 1 when unbiased, below 1 when the codes are shrunk toward zero.
The model only needs `encode(x) -> z [B, F]` and `decode(z) -> x_hat [B, d]`: varilab's SAE, sae-lens's, or yours.

>>> import torch
>>> x = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
>>> fraction_of_variance_unexplained(x, x.mean(0).expand_as(x)).item(), fraction_of_variance_unexplained(x, x).item()
(1.0, 0.0)
"""
from __future__ import annotations

import torch

FVU_WARNING = "FVU > 1: the SAE explains less than the mean does; likely the wrong layer or unnormalised input"


def l0(z: torch.Tensor) -> torch.Tensor:
    """Mean number of non-zero codes per token, (1/N) sum_n #{j : z_nj != 0}, a scalar."""
    return (z != 0).sum(-1).float().mean()


def fraction_of_variance_unexplained(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """FVU = sum_n ||x_n - x_hat_n||^2 / sum_n ||x_n - x_bar||^2 with x_bar the mean over the N tokens, a scalar."""
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {list(x.shape)} and {list(x_hat.shape)}")
    return (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """1 - FVU, a scalar."""
    return 1.0 - fraction_of_variance_unexplained(x, x_hat)


def relative_reconstruction_bias(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """gamma = sum_n ||x_hat_n||^2 / sum_n x_hat_n . x_n: x_hat = c x gives c (shrinkage when below 1)."""
    return x_hat.pow(2).sum() / (x_hat * x).sum()


def feature_density(z: torch.Tensor) -> torch.Tensor:
    """Per-latent firing frequency density_j = (1/N) #{n : z_nj != 0}, [F]."""
    return (z != 0).float().mean(0)


def log10_density(density: torch.Tensor, floor: float = 1e-10) -> torch.Tensor:
    """log10 max(density_j, floor), [F], ready for a histogram: latents that never fired sit at log10(floor)."""
    return density.clamp_min(floor).log10()


def fraction_alive(tokens_since_fired: torch.Tensor, window: int) -> float:
    """Share of latents with tokens_since_fired < window (fired within the last `window` tokens)."""
    return float((tokens_since_fired < window).float().mean())


class Firing:
    """Streams codes batch by batch and counts, per latent, the tokens it fired on, the tokens since it last
    fired (a latent that never fired counts every token of the pass) and, as sae-lens does, the batches since
    the last batch in which it fired."""

    def __init__(self, features: int, device=None):
        self.tokens = 0
        self.counts = torch.zeros(features, dtype=torch.long, device=device)  # [F] tokens fired on
        self.since = torch.zeros(features, dtype=torch.long, device=device)  # [F] tokens since last fired
        self.batches_since = torch.zeros(features, dtype=torch.long, device=device)  # [F] sae-lens's counter

    def update(self, z: torch.Tensor) -> None:
        """Add a batch of codes z [B, F] (tokens in order)."""
        on = z != 0  # [B, F]
        n = len(z)
        self.counts += on.sum(0)
        # position of the last firing in this batch: tokens after it are n - 1 - last
        last = torch.where(on, torch.arange(n, device=z.device)[:, None], -1).amax(0)  # [F], -1 if silent
        self.since = torch.where(last >= 0, n - 1 - last, self.since + n)
        self.batches_since = torch.where(last >= 0, 0, self.batches_since + 1)  # sae-lens: +1, then 0 where it fired
        self.tokens += n

    @property
    def fired(self) -> torch.Tensor:
        """Bool [F]: latents that fired at least once in the pass."""
        return self.counts > 0

    @property
    def density(self) -> torch.Tensor:
        """Per-latent firing frequency over the pass, [F]."""
        return self.counts.float() / max(self.tokens, 1)

    def alive(self, window: int) -> torch.Tensor:
        """Bool [F]: latents that fired within the last min(window, tokens) tokens of the pass."""
        return self.fired & (self.since < window)

    def fraction_alive(self, window: int) -> float:
        """Share of latents alive over the last `window` tokens of the pass."""
        return float(self.alive(window).float().mean())

    def dead_sae_lens(self, window_batches: int) -> torch.Tensor:
        """Bool [F], sae-lens's dead mask: more than `window_batches` batches since the last batch with a firing
        (a latent that never fired is alive until the pass has more batches than the window)."""
        return self.batches_since > window_batches


def _batches(x, batch_size: int) -> list[torch.Tensor]:
    """Activations [N, d] split into batches of `batch_size` tokens, or a list of batches [B, d] kept as given."""
    if isinstance(x, (list, tuple)) and x and all(torch.is_tensor(b) and b.ndim == 2 for b in x):
        if len({b.shape[1] for b in x}) > 1:
            raise ValueError(f"the batches must share their width d, got widths {sorted({b.shape[1] for b in x})}")
        return list(x)
    if not torch.is_tensor(x) or x.ndim != 2 or len(x) < 2:
        got = (list(x.shape) if torch.is_tensor(x) else
               f"{type(x).__name__} of {len(x)} items" if isinstance(x, (list, tuple)) else type(x).__name__)
        raise ValueError(f"x must be a tensor of activations [N >= 2, d] or a list of batches [B, d], got {got}")
    return list(x.split(batch_size))


def _check_health_args(model, window_tokens: int, batch_size: int, sae_lens_window: int | None) -> None:
    for name in ("encode", "decode"):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"sae_health needs encode(x) and decode(z); {type(model).__name__} has no {name}")
    if window_tokens < 1 or batch_size < 1:
        raise ValueError(f"window_tokens and batch_size must be positive, got {window_tokens} and {batch_size}")
    if sae_lens_window is not None and (isinstance(sae_lens_window, bool) or not isinstance(sae_lens_window, int)
                                        or sae_lens_window < 0):
        raise ValueError(f"sae_lens_window must be a number of batches >= 0, got {sae_lens_window!r} (sae-lens's "
                         "dead_feature_window, counted in steps)")


@torch.no_grad()
def sae_health(model, x, window_tokens: int = 100_000, batch_size: int = 4096,
               sae_lens_window: int | None = None) -> dict:
    """Run `model` (any object with encode(x) -> codes [B, F] and decode(z) -> x_hat [B, d]: varilab's SAE, sae-lens's
    TopKSAE, your own) over activations x [N, d] in batches of `batch_size`, or over a list of batches [B, d] in
    order (eval mode, no gradients), and return {"l0", "fvu", "explained_variance", "fraction_alive", "dead",
    "window_tokens", "tokens", "relative_reconstruction_bias", "density" [F], "log10_density" [F], "warning"}.

    fraction_alive counts the latents that fired within the last `window_tokens` tokens of this pass
    (all of it when N <= window_tokens); "warning" is a sentence when FVU > 1, else None. With `sae_lens_window` W
    it adds sae-lens's count over these batches, as a varilab run's `diagnose --sae-lens-window W` gives it:
    "dead_sae_lens" (more than W batches since the batch in which the latent last fired), "dead_sae_lens_mask" [F],
    "sae_lens_window_batches" and "batch_tokens" (the first batch's size).
    """
    _check_health_args(model, window_tokens, batch_size, sae_lens_window)
    batches = _batches(x, batch_size)
    n = sum(len(b) for b in batches)
    if n < 2:
        raise ValueError(f"x must hold at least 2 tokens, got {n}")
    was_training = getattr(model, "training", None)
    if was_training is not None:
        model.eval()
    try:
        x_bar = sum(b.sum(0) for b in batches) / n  # the mean over all N tokens
        sq_err, total, nonzero, firing, hat_sq, hat_dot = 0.0, 0.0, 0, None, 0.0, 0.0
        for xb in batches:
            z = model.encode(xb)
            x_hat = model.decode(z)
            z = z.to_dense() if z.is_sparse else z  # sae-lens's sparse TopK activations
            if firing is None:
                firing = Firing(z.shape[-1], device=z.device)
            firing.update(z)
            sq_err += float((xb - x_hat).pow(2).sum())  # sum_n ||x_n - x_hat_n||^2
            total += float((xb - x_bar).pow(2).sum())  # sum_n ||x_n - x_bar||^2
            nonzero += int((z != 0).sum())
            hat_sq += float(x_hat.pow(2).sum())  # sum_n ||x_hat_n||^2
            hat_dot += float((x_hat * xb).sum())  # sum_n x_hat_n . x_n
    finally:
        if was_training is not None:
            model.train(was_training)
    fvu = sq_err / total if total > 0 else float("nan")
    alive = firing.alive(window_tokens)
    out = {
        "l0": nonzero / n, "fvu": fvu, "explained_variance": 1.0 - fvu, "fraction_alive": float(alive.float().mean()),
        "dead": int((~alive).sum()), "window_tokens": window_tokens, "tokens": n,
        "relative_reconstruction_bias": hat_sq / hat_dot if hat_dot else float("nan"),
        "density": firing.density, "log10_density": log10_density(firing.density),
        "warning": FVU_WARNING if fvu > 1 else None,
    }
    if sae_lens_window is not None:
        dead = firing.dead_sae_lens(sae_lens_window)
        out.update(dead_sae_lens=int(dead.sum()), dead_sae_lens_mask=dead, sae_lens_window_batches=sae_lens_window,
                   batch_tokens=len(batches[0]))
    return out
