"""`varilab diagnose` of any run whose model has an encoder q(z|x): KL per latent dimension, activity and the
posterior's mean variance, each dimension called active, passive or mixed (varilab.diagnostics). The families
whose runs have such an encoder (vae, robust's purifier) list it."""
from __future__ import annotations

from dataclasses import dataclass

from .options import non_negative, option


@dataclass
class ActivityFlags:
    """`varilab diagnose`'s flags of a run with an encoder."""
    threshold: float = option(0.01, "activity threshold of an active unit: Var_x E[z|x] above it",
                              check=non_negative)


def encoder_diagnosis(model, x, cond=None, threshold: float = 0.01) -> tuple[dict, list[str]]:
    """(the diagnostics as numbers, their table as lines) of `model`'s encoder on the inputs x [N, D]."""
    from ..diagnostics import diagnose as collapse

    d = collapse(model, x, threshold=threshold, cond=cond)
    result = d.to_dict()
    kind = {**{i: "sharp" for i in d.active}, **{i: "passive" for i in d.passive}, **{i: "mixed" for i in d.mixed}}
    lines = [d.verdict(), d.RELATION, f"{'dim':>4} {'KL (nats)':>10} {'activity':>10} {'E var q':>9}  unit  variable"]
    lines += [f"{i:>4} {result['kl_per_dim'][i]:>10.4f} {result['activity'][i]:>10.4f} "
              f"{result['mean_posterior_var'][i]:>9.4f}  {'AU' if result['activity'][i] > threshold else '- ':>4}  "
              f"{kind[i]}" for i in range(len(result["kl_per_dim"]))]
    if "mutual_information" in result:
        lines.append(f"I(x; z) = {result['mutual_information']:.4f} nats, "
                     f"KL(q(z) || p(z)) = {result['marginal_kl']:.4f} nats")
    return result, lines
