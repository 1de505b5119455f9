"""Gradient estimators, chosen where a latent is sampled.

- reparam: z = g(eps, phi), gradients flow through the sample (Kingma & Welling, 2014).
- score: REINFORCE, grad E_q[f] = E_q[(f - b) grad log q(z)] (Williams, 1992), with a baseline b.
- gumbel: the concrete / Gumbel-softmax relaxation of a discrete latent (Maddison et al.; Jang et al., 2017).
- straight-through: a hard one-hot (or 0/1) sample forward, the relaxed gradient backward (Bengio et al., 2013).

A score-function term enters an objective through `score_term`, whose value is zero and whose
gradient is (f - b) grad log q(z): the objective's value stays the plain estimate.
"""
from __future__ import annotations

import torch
from torch.distributions import (Bernoulli, Categorical, Distribution, Independent, OneHotCategorical,
                                 RelaxedBernoulli, RelaxedOneHotCategorical)

ESTIMATORS = ("reparam", "score", "gumbel", "straight-through")


def _relaxed(q: Distribution, temperature: float) -> Distribution:
    """The concrete relaxation of a Bernoulli or one-hot categorical q (Independent wrappers kept)."""
    if isinstance(q, Independent):
        return Independent(_relaxed(q.base_dist, temperature), q.reinterpreted_batch_ndims)
    # in float32 even under bfloat16 autocast: a bfloat16 softmax misses the simplex check by its rounding
    logits = q.logits.float() if hasattr(q, "logits") else None
    t = torch.as_tensor(temperature, dtype=torch.float32, device=q.logits.device) if logits is not None else None
    if isinstance(q, Bernoulli):
        return RelaxedBernoulli(t, logits=logits)
    if isinstance(q, OneHotCategorical):
        return RelaxedOneHotCategorical(t, logits=logits)
    raise TypeError(f"the gumbel and straight-through estimators need a Bernoulli or OneHotCategorical latent, "
                    f"got {type(q).__name__}; use 'score' for other discrete latents")


def _hard(soft: torch.Tensor, q: Distribution) -> torch.Tensor:
    base = q.base_dist if isinstance(q, Independent) else q
    if isinstance(base, Bernoulli):
        return (soft > 0.5).to(soft.dtype)
    return torch.nn.functional.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)


def draw(q: Distribution, estimator: str = "reparam", sample_shape: torch.Size | tuple = (),
         temperature: float = 0.5) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample z ~ q for `estimator`; returns (z, log q(z)) where log q(z) is given only for "score"."""
    if estimator == "reparam":
        if not q.has_rsample:
            raise ValueError(f"{type(q).__name__} has no reparameterised sampler; choose estimator 'score' "
                             "(or 'gumbel' / 'straight-through' for Bernoulli and one-hot categorical latents)")
        return q.rsample(sample_shape), None
    if estimator == "score":
        z = q.sample(sample_shape)
        return z, q.log_prob(z)
    if estimator in ("gumbel", "straight-through"):
        soft = _relaxed(q, temperature).rsample(sample_shape)
        if estimator == "gumbel":
            return soft, None
        return _hard(soft, q) + (soft - soft.detach()), None  # forward: hard sample; backward: relaxed gradient
    raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")


def score_term(log_q: torch.Tensor, signal: torch.Tensor, baseline: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Zero in value, (signal - b) * grad log q(z) in gradient (the REINFORCE surrogate)."""
    return (log_q - log_q.detach()) * (signal - baseline).detach()


def leave_one_out(signal: torch.Tensor) -> torch.Tensor:
    """Baseline for sample k from the other K - 1 samples of the same x: b_k = mean_{j != k} f_j. signal: [K, B]."""
    k = signal.shape[0]
    if k < 2:
        raise ValueError("the leave-one-out baseline needs at least 2 samples per data point (k >= 2)")
    return (signal.sum(0, keepdim=True) - signal) / (k - 1)


def vimco_signal(log_w: torch.Tensor) -> torch.Tensor:
    """VIMCO (Mnih & Rezende, 2016) learning signal per sample, [K, B]:
    L - log((sum_{j != k} w_j + w_hat_{-k}) / K), with log w_hat_{-k} = mean_{j != k} log w_j."""
    k = log_w.shape[0]
    if k < 2:
        raise ValueError("the VIMCO baseline needs at least 2 importance samples (k >= 2)")
    log_mean = torch.logsumexp(log_w, 0) - torch.log(torch.tensor(float(k)))  # L = log (1/K) sum_k w_k
    geo = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)  # log w_hat_{-k}
    swapped = log_w.unsqueeze(0).expand(k, *log_w.shape).clone()  # [k(replaced), K, B]
    idx = torch.arange(k)
    swapped[idx, idx] = geo
    return log_mean - (torch.logsumexp(swapped, 1) - torch.log(torch.tensor(float(k))))


class MovingAverage:
    """An exponential moving average of the learning signal, b <- decay * b + (1 - decay) * mean(f).

    Call it with the current signal: it returns the baseline from earlier batches, then updates.
    """

    def __init__(self, decay: float = 0.9):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay, self.value = decay, None

    def __call__(self, signal: torch.Tensor) -> torch.Tensor:
        mean = signal.detach().mean()
        b = torch.zeros_like(mean) if self.value is None else self.value  # never the current batch: unbiased
        self.value = mean if self.value is None else self.decay * self.value + (1 - self.decay) * mean
        return b

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The average so far (nothing before the first batch), for the trainer's checkpoint."""
        return {} if self.value is None else {"value": self.value}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.value = state.get("value")
