"""A codec run's metrics on its test split, from one real file written and read back: distortion (MSE, PSNR, SSIM,
MS-SSIM), bits per pixel in the file beside the model's estimate, the round trip of the codes, and how the codes are
used."""
from __future__ import annotations

import math

from ..protocol import Run
from .files import decode, encoded, images


def evaluated(run: Run):
    """(`evaluate`'s metrics, the test images decoded from the file [N, 1, H, W]): one file written and read."""
    import torch

    from ...codec.classic import beaten_by_trivial, ms_ssim, ssim

    m, x = run.model, images(run.data, "test")
    data, meta, written = encoded(run, x)
    xhat, codes = decode(run, data)
    mse = float((xhat - x).pow(2).mean())
    pixels = x.shape[0] * x.shape[-1] * x.shape[-2]
    seen, truth = xhat[:, 0].clamp(0, 1).numpy(), x[:, 0].numpy()
    out = {"data": run.data.name, "test_images": int(x.shape[0]), "mse": mse,
           "psnr": -10 * math.log10(max(mse, 1e-12)), "ssim": ssim(seen, truth),
           "ms_ssim": ms_ssim(seen, truth) if min(x.shape[-2:]) > 16 else None,
           "bpp_file": 8 * len(data) / pixels, "bpp_estimated": meta["estimated_bits"] / pixels, "bytes": len(data),
           "codes_round_trip": bool(torch.equal(codes, written))}
    out["worse_than_trivial"] = beaten_by_trivial(out["bpp_file"], out["psnr"], truth)  # '' when it is not
    if hasattr(m, "perplexity"):
        out |= {"perplexity": m.perplexity().tolist(), "perplexity_codes": codes_perplexity(written, m.config.codes),
                "codes": m.config.codes, "groups": m.config.groups, "stages": m.config.stages}
    elif hasattr(m, "blocks"):  # relative entropy coding: blocks x kappa bits against the posteriors' KL
        coded = x.shape[0] * meta["grid"][1] * m.config.kappa
        out |= {"kl_bits": meta["estimated_bits"], "blocks": meta["grid"][1], "kappa": m.config.kappa,
                "coded_bits": coded, "coded_over_kl": coded / max(meta["estimated_bits"], 1e-12)}
    else:
        out |= {"support": m.config.support}
    return out, xhat


def codes_perplexity(rows, codes: int) -> list[float]:
    """exp(entropy) of each row's code frequencies: the perplexity of the codes actually coded, per codebook
    (`perplexity()` of the model is of its training usage average, which relaxed samples and re-seeding inflate)."""
    import torch

    p = torch.stack([torch.bincount(r, minlength=codes) for r in rows]).double()
    p = p / p.sum(-1, keepdim=True)
    return torch.exp(-(p * p.clamp_min(1e-300).log()).sum(-1)).tolist()
