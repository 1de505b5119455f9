"""The codec run's page: test images beside their reconstructions decoded from a real file and beside JPEG and WebP at
the file's rate, the rate and distortion (PSNR, SSIM) of each, and how the codes are used (vq-codec: each codebook's usage;
factorized: each channel's code probabilities; recombiner, combiner: the KL of each coded block)."""
from __future__ import annotations

SHOWN = 8  # test images in the figure
NAMES = {"jpeg": "JPEG", "webp": "WebP"}
QUALITIES = (5, 10, 20, 35, 50, 75, 95)  # JPEG's and WebP's curves


def unreached(limit: str) -> str:
    """Where the format's end of reach lies against the run's rate: its lowest rate is above it, its highest below."""
    return "above" if limit == "lowest" else "below"


def reach_sentence(name: str, bpp: float, hit: dict) -> str:
    """The plain statement for a format whose qualities 1..100 cannot reach the run's rate `bpp`."""
    return (f"{name} cannot reach {bpp:.2f} bpp on these images: its {hit['limit']} rate is {hit['bpp']:.2f} bpp "
            f"(quality {hit['quality']}); the comparison is at its {hit['limit']}.")


def page(run):
    import numpy as np

    from ...codec import classic
    from ...report import Page, Section, img, metrics_table, plots, table
    from .files import images
    from .metrics import evaluated

    e, decoded = evaluated(run)  # the whole test split's file, written and read once
    grey = images(run.data, "test")[:, 0].numpy()
    rows = [("original", grey[:SHOWN]), (f"{run.options.model}\n{e['bpp_file']:.2f} bpp", decoded[:SHOWN, 0].numpy())]
    small = e["ms_ssim"] is None  # MS-SSIM's three scales need sides above 16 pixels
    rates = [(run.options.model, e["bpp_file"], e["psnr"], e["ssim"], e["ms_ssim"])]
    out_of_reach = []  # a sentence for each format that cannot reach this run's rate on these images
    for fmt in classic.FORMATS:  # the classic codecs at the rate this run's files reach
        hit = classic.at_rate(grey, fmt, e["bpp_file"])
        rows.append((f"{fmt} q{hit['quality']}\n{hit['bpp']:.2f} bpp", hit["images"][:SHOWN]))
        mark = f", its {hit['limit']} rate: {unreached(hit['limit'])} this run's" if hit["limit"] else ""
        rates.append((f"{fmt} (quality {hit['quality']}{mark})", hit["bpp"], hit["psnr"],
                      classic.ssim(hit["images"], grey), None if small else classic.ms_ssim(hit["images"], grey)))
        if hit["limit"]:
            out_of_reach.append(reach_sentence(NAMES[fmt], e["bpp_file"], hit))
    reach = " ".join(out_of_reach)
    curves = {"PSNR (dB)": {run.options.model: ([e["bpp_file"]], [e["psnr"]])}}
    if not small:
        curves["MS-SSIM"] = {run.options.model: ([e["bpp_file"]], [e["ms_ssim"]])}
    for fmt in classic.FORMATS:
        points = [classic.code(grey, fmt, q) for q in QUALITIES]
        rates_q = [8 * size / grey.size for _, size in points]
        curves["PSNR (dB)"][fmt.upper()] = (rates_q, [-10 * np.log10(max(float(((d - grey) ** 2).mean()), 1e-12))
                                                      for d, _ in points])
        if not small:
            curves["MS-SSIM"][fmt.upper()] = (rates_q, [classic.ms_ssim(d, grey) for d, _ in points])
    rd = plots.xy_curves([(name, "bits per pixel (file)", name, series) for name, series in curves.items()])
    m = run.model
    if hasattr(m, "perplexity"):
        usage = m.usage.reshape(-1, m.config.codes).cpu().numpy()
        panels = [(f"codebook {i + 1}: perplexity {p:.1f} of {m.config.codes}", "code (by usage)",
                   {"share": sorted(u / u.sum(), reverse=True)}) for i, (u, p) in
                  enumerate(zip(usage, m.perplexity().flatten().tolist()))]
        usage_text = ("How often each code is picked (exponential average over training), sorted; perplexity "
                      "exp(entropy) is K when all codes are used equally.")
    elif hasattr(m, "blocks"):
        kl = np.bincount(m.blocks.cpu().numpy(), m.kl_mean.double().cpu().numpy())
        panels = [(f"{len(kl)} blocks of kappa = {m.config.kappa} bits", "block",
                   {"mean KL of the training posteriors (bits)": list(kl), "kappa": [m.config.kappa] * len(kl)})]
        usage_text = (f"Each block is sent as one index among 2^{m.config.kappa} shared-seed candidates: "
                      f"{m.config.kappa} bits. The blocks are cut so the training posteriors' mean KL of each stays "
                      "at or below kappa; coding an image tunes each block's lambda so its posterior spends kappa "
                      f"bits there (this run's test files: {e['coded_over_kl']:.3f} x their posteriors' KL).")
    else:
        side = hasattr(m, "z_density")  # hyperprior: the hyper latent's tables; the latents' come from its scales
        t = (m.z_density.tables if side else m.tables).cpu().numpy()
        panels = [(f"{'hyper latent ' if side else ''}channel {i + 1}", "code k + L", {"P(k)": list(row / row.sum())})
                  for i, row in enumerate(t[:4])]
        usage_text = "The integer tables the coder uses, as probabilities of each code, for the first channels." + (
            " Each latent is coded under the Gaussian table its decoded scale picks (64 scales from 0.11 to 256), the "
            "hyper latent under these learned tables." if side else "")
    sections = [
        Section("Reconstructions", img(plots.image_rows(rows, run.data.image_shape), "test images and decodings"),
                "Test images, their decoding from a .vlc file this run wrote, and JPEG and WebP (Pillow) at the "
                "quality whose file rate is closest to it. Rates count every byte written, headers included."
                + (" " + reach if reach else "")),
        Section("Rate-distortion", img(rd, "rate-distortion"),
                f"This run's files among JPEG's and WebP's curves (Pillow, qualities {', '.join(map(str, QUALITIES))}) "
                f"on the same {len(grey)} test images, every byte counted. One run is one point; the curves of several "
                "runs, with each learned curve's BD-rate against WebP, are `make repro`'s "
                "(docs/repro/vq_codec_rate_distortion.md, docs/repro/learned_codec_vs_webp.md)."),
        Section("Rate and distortion at this rate", table([(f"{name}: bits per pixel, PSNR (dB), SSIM, MS-SSIM",
                                               f"{bpp:.3f}, {psnr:.2f}, {s:.4f}, " + ("-" if ms is None else f"{ms:.4f}"))
                                              for name, bpp, psnr, s, ms in rates]),
                (reach + " " if reach else "") +
                "SSIM from scikit-image (7-pixel window, or the largest the image allows); MS-SSIM from torchmetrics "
                "over three scales (the standard five need image sides of 161 pixels; three need sides above 16)."),
        Section("Code usage" if not hasattr(m, "blocks") else "Coded blocks", img(plots.lines(panels[:4]), "code usage"),
                usage_text),
        Section("Final metrics", metrics_table({k: v for k, v in e.items() if k != "worse_than_trivial"},
                                                run.settings)),  # worse_than_trivial: the page's warning
    ]
    gap = e["bpp_file"] / max(e["bpp_estimated"], 1e-12)
    verdict = (f"{e['bpp_file']:.3f} bits per pixel in the file ({gap:.3f}x the model's estimate), PSNR "
               f"{e['psnr']:.2f} dB on {e['test_images']} test images; the decoded codes "
               f"{'equal' if e['codes_round_trip'] else 'DIFFER FROM'} the encoder's.")
    worse = e["worse_than_trivial"]
    curves = ["loss", "mse", "bpp"]
    if hasattr(m, "blocks"):  # INR codecs: a test image has no posterior in training, only the prior mean's image
        curves = [("loss", "training loss", False), ("mse", "training posteriors' squared error", False),
                  ("test_mse", "test images from the prior mean, unfitted (eval fits each)")]
    return Page(f"{run.options.model} on {run.data.name}", verdict, sections, curves,
                warning=f"This run's file is no use on these images: {worse}." if worse else None)
