"""PV-RNN's meta-prior (Ahmadi & Tani, 2019): what w does to generation and to generalisation, and which convention
of public PV-RNN code decides the direction of sigma_p.

Data: the switching process (`varilab.data.sequences.switching`): 2-D sequences of 10-step cycles, each a circle
with probability 0.7 or a figure-eight; 16 training and 8 test sequences of 100 steps. Model: `varilab train
--model pvrnn` with 2 layers, d = (20, 8), z = (2, 1), tau = (2, 8), one meta-prior w for both layers, Adam at 1e-2
for 1,000 epochs of one batch. For each w in the sweep {1e-4, 1e-3, 1e-2, 1e-1, 1}:

- sigma_p: the prior's mean standard deviation over 20 generated sequences of 1,000 steps (both layers, t > 1);
- |P(circle) - 0.7|: over the same generations, the share of circle cycles estimated as mean(x) / 0.4 (a circle
  cycle averages 0.4 in x, a figure-eight 0);
- P(circle) with the noise off (z_t the prior's mean): deterministic chaos that imitates the switching shows here
  as a share between 0 and 1; a network that needs the noise to switch stays on one pattern (0 or 1);
- the squared error of the prediction 1 to 10 steps ahead on the 8 test sequences (summed over the 2 dimensions,
  mean over sequences, steps and k), with error regression (window 20, 30 Adam steps per time step) and without.

Why sigma_p rises with w here, by experiment: every convention in which public PV-RNN code differs from the
defaults, each on its own and all together, at w in {1e-4, 1e-2, 1} (sigma_p and the KL per layer); a training
set small enough to memorise (4 sequences); and sigma_p against training length (100 to 3,000 epochs) for the
three w of the sweep's defaults. Every run is a job of this script (`python repro/pvrnn_meta_prior.py JOB`), two at
a time, one thread each.

The finding holds here when sigma_p falls as w rises (1e-4 > 1e-2 > 1), an intermediate w (neither end of the
sweep) is best on both generalisation metrics (|P(circle) - 0.7| and the error-regression prediction error), and
error regression beats no error regression at every w.
"""
from __future__ import annotations

import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _jobs import run_all  # noqa: E402

WS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
THREE = (1e-4, 1e-2, 1.0)  # the issue's three values; --quick runs only these
CURVE = (100, 300, 1000, 3000)  # epochs at which the three w's runs are measured on their way
PAPER = "robot imitation: high w gives deterministic chaos imitating randomness, low w a random process, " \
        "intermediate w generalises best; error regression beats a VB-RNN"
PAPER_SIGMA = "high w: q close to p with small sigma_p (deterministic chaos); low w: large sigma_p (a random process)"
# name: options of `varilab train --model pvrnn` changed from the defaults. The squared error per output dimension
# (--recon per-dim) alone is not run: under Adam it is the sum's run at w and w1 times dim(x), step for step
# (tests/test_pvrnn_conventions.py), i.e. the sweep's w = 2e-4, 2e-2, 2, whose neighbours the sweep measures.
VARIANTS = {
    "biases N(0, 10), fixed": {"bias_variance": 10.0},
    "half of each layer's units 2x slower": {"slow_share": 0.5},
    "q = p before training": {"posterior_init": "prior"},
    "all four (with --recon per-dim)": {"bias_variance": 10.0, "slow_share": 0.5, "recon": "per-dim",
                                        "posterior_init": "prior"},
    "4 training sequences (memorisable)": {"n": 6},
}


def job(spec: dict) -> dict:
    """Train one run, measuring generation at each of spec["checkpoints"] epochs (resumed, exact), and predict with
    and without error regression at spec["predict_at"] if given."""
    import torch

    from varilab.data.sequences import p_circle_estimate
    from varilab.families import registry
    from varilab.families import sequence as S

    torch.set_num_threads(1)
    quick, w, root = spec["quick"], spec["w"], Path(tempfile.mkdtemp(prefix="varilab-repro-pvrnn-"))
    data = dict(n=12, length=30) if quick else dict(n=24, length=100)
    data.update({k: v for k, v in spec["options"].items() if k in ("n",)})
    options = {k: v for k, v in spec["options"].items() if k != "n"}
    gen_n, gen_len = (5, 200) if quick else (20, 1000)
    er = dict(window=5, iterations=3) if quick else dict(window=20, iterations=30)
    rows, out = [], {}
    try:
        for i, epochs in enumerate(spec["checkpoints"]):
            opts = S.SequenceOptions(meta_prior=[w], epochs=epochs, lr=spec["lr"], batch_size=16, **data, **options)
            S.train(opts, root / "run", resume=i > 0, quiet=True)
            r = registry.load(root / "run")
            gen = S.generation(r, gen_n, gen_len, seed=1)
            with torch.no_grad():
                mean_only = r.model.run(None, steps=gen_len, batch=gen_n, sample=False, sigma=False)["x_hat"].cpu()
            rows.append({"epochs": epochs, "sigma_p": float(gen["sigma_p"][:, :, 1:].mean()),
                         "sigma_p_layers": gen["sigma_p"][:, :, 1:].mean((0, 2)).tolist(),
                         "noise": float(gen["noise"][:, :, 1:].mean()),
                         "noise_layers": gen["noise"][:, :, 1:].mean((0, 2)).tolist(),
                         "p_circle": p_circle_estimate(gen["x"].numpy()),
                         "p_circle_noise_off": p_circle_estimate(mean_only.numpy()),
                         **{k: v for k, v in S.evaluate(r).items() if k.startswith("kl_") or k == "train_recon"}})
            if epochs == spec.get("predict_at"):
                pred, _ = S.predict(r, S.PredictOptions(ahead=10, **er))
                out = {"error_er": sum(pred["error_regression_error"]) / 10, "error_free": sum(pred["free_error"]) / 10}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"curve": rows, **out}


def run(quick: bool = False) -> dict:
    return summarise(collect(quick), quick)


def collect(quick: bool = False) -> dict:
    """Every run of the reproduction, two at a time: {"results": {w: sweep row}, "why": {variant: {w: row}},
    "training_length": {w: [row per epochs of CURVE]}} (w as "%g" strings), as the result's JSON keeps them."""
    epochs, lr = (40, 0.03) if quick else (1000, 1e-2)
    curve = (10, 40) if quick else CURVE
    ws = THREE if quick else WS

    def line(w, options=None, checkpoints=(epochs,), predict_at=None):
        spec = {"w": w, "options": options or {}, "checkpoints": list(checkpoints), "predict_at": predict_at,
                "lr": lr, "quick": quick}
        return " ".join(map(shlex.quote, [sys.executable, __file__, json.dumps(spec)]))

    lines = {("sweep", w): line(w, checkpoints=curve if w in THREE else (epochs,), predict_at=epochs) for w in ws}
    lines.update({(name, w): line(w, options) for name, options in VARIANTS.items() for w in THREE})
    done = run_all(lines)
    results = {}
    for w in ws:
        r = done[("sweep", w)]
        at = next(c for c in r["curve"] if c["epochs"] == epochs)
        results[f"{w:g}"] = {**at, "error_er": r["error_er"], "error_free": r["error_free"],
                             "p_circle_gap": abs(at["p_circle"] - 0.7)}
    why = {"as built (the defaults)": {f"{w:g}": results[f"{w:g}"] for w in THREE}}
    why.update({name: {f"{w:g}": done[(name, w)]["curve"][-1] for w in THREE} for name in VARIANTS})
    return {"results": results, "why": why, "training_length": {f"{w:g}": done[("sweep", w)]["curve"] for w in THREE}}


def summarise(measured: dict, quick: bool = False) -> dict:
    """The result (checks, tables, the cause in words) from `collect`'s measurements."""
    epochs, lr = (40, 0.03) if quick else (1000, 1e-2)
    ws = tuple(sorted(float(w) for w in measured["results"]))
    rows = {w: measured["results"][f"{w:g}"] for w in ws}
    for w in ws:
        r = rows[w]
        print(f"[pvrnn_meta_prior] w {w:g}: sigma_p {r['sigma_p']:.4f}, P(circle) {r['p_circle']:.3f}, prediction "
              f"error {r['error_er']:.4f} with error regression, {r['error_free']:.4f} without", flush=True)
    lo, mid, hi = rows[1e-4], rows[1e-2], rows[1.0]
    best_gap, best_er = (min(ws, key=lambda w: rows[w][k]) for k in ("p_circle_gap", "error_er"))
    checks = {"sigma_p_falls_as_w_rises": lo["sigma_p"] > mid["sigma_p"] > hi["sigma_p"],
              "intermediate_w_best_p_circle": best_gap not in (ws[0], ws[-1]),
              "intermediate_w_best_prediction": best_er not in (ws[0], ws[-1]),
              "error_regression_beats_free_at_every_w": all(r["error_er"] < r["error_free"] for r in rows.values())}

    def trend(s):  # from w = 1e-4 through 1e-2 to 1
        way = "falls" if s[2] < s[0] else "rises"
        return way if (s[0] > s[1] > s[2]) or (s[0] < s[1] < s[2]) else f"{way} (not monotone)"

    why = {name: [by_w[f"{w:g}"] for w in THREE] for name, by_w in measured["why"].items()}
    length = {w: measured["training_length"][f"{w:g}"] for w in THREE}
    curve = [c["epochs"] for c in length[1.0]]
    table = ["| w | sigma_p in generation (layer 1, 2) | noise reaching the units (layer 1, 2) | P(circle) (truth 0.7) | "
             "P(circle), noise off | prediction error, error regression | without | training error per step and dim "
             "| KL layer 1, 2 |", "|---|---|---|---|---|---|---|---|---|"]
    for w, r in rows.items():
        table.append(f"| {w:g} | {r['sigma_p']:.4f} ({r['sigma_p_layers'][0]:.4f}, {r['sigma_p_layers'][1]:.4f}) | "
                     f"{r['noise']:.4f} ({r['noise_layers'][0]:.4f}, {r['noise_layers'][1]:.4f}) | "
                     f"{r['p_circle']:.3f} | {r['p_circle_noise_off']:.3f} | {r['error_er']:.4f} | {r['error_free']:.4f} | "
                     f"{r['train_recon']:.4f} | {r['kl_layer1']:.2f}, {r['kl_layer2']:.2f} |")
    table += ["", f"Why: generation at w = 1e-4 / 1e-2 / 1 under each convention of public PV-RNN code ({epochs} "
              f"epochs; KL per latent unit and training sequence, layer 1 / layer 2; paper: {PAPER_SIGMA}).", "",
              "| variant | sigma_p at w = 1e-4 / 1e-2 / 1 | sigma_p as w rises | noise reaching the units at w = 1e-4 / "
              "1e-2 / 1 | noise as w rises | KL at w = 1, layer 1 / 2 | P(circle), noise off, at w = 1 | training "
              "error at w = 1e-4 / 1 |", "|---|---|---|---|---|---|---|---|"]
    for name, (a, b, c) in why.items():
        s, n = [a["sigma_p"], b["sigma_p"], c["sigma_p"]], [a["noise"], b["noise"], c["noise"]]
        table.append(f"| {name} | {s[0]:.3f} / {s[1]:.3f} / {s[2]:.3f} | {trend(s)} | {n[0]:.3f} / {n[1]:.3f} / "
                     f"{n[2]:.3f} | {trend(n)} | {c['kl_layer1']:.2f} / {c['kl_layer2']:.2f} | "
                     f"{c['p_circle_noise_off']:.3f} | {a['train_recon']:.4f} / {c['train_recon']:.4f} |")
    table += ["", "Training length: sigma_p (and the noise reaching the units) in generation, the defaults, after each "
              "number of epochs.", "",
              "| epochs | " + " | ".join(f"w = {w:g}" for w in THREE) + " | sigma_p as w rises | noise as w rises |",
              "|---|---|---|---|---|---|"]
    for i, e in enumerate(curve):
        s = [length[w][i]["sigma_p"] for w in THREE]
        n = [length[w][i]["noise"] for w in THREE]
        table.append(f"| {e:,} | " + " | ".join(f"{a:.3f} ({b:.3f})" for a, b in zip(s, n))
                     + f" | {trend(s)} | {trend(n)} |")
    notes = (f"`varilab train --model pvrnn --n 24 --length 100 --meta-prior W --epochs {epochs} --lr {lr:g} "
             f"--batch-size 16` (test fraction 1/3: 16 training and 8 test sequences). Generation: 20 sequences of "
             f"1,000 steps from the prior. Prediction: `varilab predict RUN --window 20 --iterations 30 --ahead 10` on "
             f"the test sequences; errors are means over k = 1 .. 10. Variants: --bias-variance 10, --slow-share 0.5, "
             f"--posterior-init prior, all these with --recon per-dim, and --n 6 (4 training sequences); --recon "
             f"per-dim alone is the run at w times dim(x) = 2 (exactly, under Adam), so the sweep covers it. Noise "
             f"reaching the units: sqrt(mean_i sum_j W_dz,ij^2 sigma_p,j^2), the spread a draw from the prior adds "
             f"to the units' input (sigma_p's scale can be traded against W_dz's; this cannot). Paper: {PAPER}.")
    notes = cause(why, length, curve) + "\n\n" + notes
    return {"title": "PV-RNN: the meta-prior w and error regression (switching circle / figure-eight sequences)",
            "finding": "sigma_p falls as w rises; an intermediate w generalises best (the probability of the "
                       "patterns in generation and the prediction of new sequences); error regression predicts "
                       "better than running free at every w.",
            "held": all(checks.values()), "checks": checks, "table": "\n".join(table), "notes": notes,
            **measured}


def cause(why: dict, length: dict, curve: list) -> str:
    """The cause in words, every figure and direction read from the measurements."""
    name = "as built (the defaults)"
    base = why[name]
    rises = [k for k in why if why[k][2]["sigma_p"] > why[k][0]["sigma_p"]]
    turned = [k for k in why if k != name and k not in rises]
    noise_falls = [k for k in why if why[k][2]["noise"] < why[k][0]["noise"]]
    off = max(why[k][2]["kl_layer2"] for k in why)
    gap = [length[1.0][i]["sigma_p"] - length[1e-4][i]["sigma_p"] for i in range(len(curve))]
    if name in rises and not turned:
        verdict = ("no convention of public PV-RNN code turns its direction, nor does a training set small enough "
                   "to memorise")
    else:
        verdict = f"it falls under {', '.join(turned) or 'the defaults'}"
    longer = (f"training longer widens the gap (sigma_p at w = 1 minus at 1e-4: {gap[-2]:+.3f} after {curve[-2]:,} "
              f"epochs, {gap[-1]:+.3f} after {curve[-1]:,})" if gap[-1] > gap[-2] > 0 else
              f"after {curve[-1]:,} epochs sigma_p at w = 1 minus at 1e-4 is {gap[-1]:+.3f} ({gap[-2]:+.3f} after "
              f"{curve[-2]:,})")
    return (f"Cause. sigma_p rises from w = 1e-4 to w = 1 in {len(rises)} of the {len(why)} settings of the Why table; "
            f"{verdict}; {longer}. At w = 1 the network switches the top layer's latent off (its KL at most "
            f"{off:.2f} per sequence in every setting) instead of matching a narrow posterior with a narrow prior, "
            f"the paper's high-w regime. A latent the network does not listen to keeps the broad prior it started "
            f"from (sigma_p {base[2]['sigma_p']:.3f} at w = 1 against {base[0]['sigma_p']:.3f} at 1e-4), while the "
            f"weights that carry it into the units shrink: the noise reaching the units goes from "
            f"{base[0]['noise']:.3f} at w = 1e-4 to {base[2]['noise']:.3f} at w = 1 with the defaults, and falls in "
            f"{len(noise_falls)} of the {len(why)} settings. By that quantity, which decides whether the network runs "
            f"as a random process, high w makes it more deterministic, as the paper says; by sigma_p, whose scale "
            f"trades against W_dz's, it does not; and the paper's deterministic chaos imitating the switching does not "
            f"appear (P(circle) with the noise off at w = 1: {base[2]['p_circle_noise_off']:.3f}). The defaults are "
            f"unchanged: no convention reproduces the paper here. Paper, for comparison: {PAPER_SIGMA}, and the "
            f"best generalisation at an intermediate w.")


if __name__ == "__main__":
    if sys.argv[1] == "--render":  # the page again from a result's measurements: --render docs/repro/NAME.json
        from run import write

        kept = json.loads(Path(sys.argv[2]).read_text())
        result = summarise({k: kept[k] for k in ("results", "why", "training_length")}, quick=len(kept["results"]) == 3)
        write({**result, "seconds": kept["seconds"]}, "pvrnn_meta_prior", Path(sys.argv[2]).parent,
              "python repro/run.py --only pvrnn_meta_prior")
    else:  # one job: python repro/pvrnn_meta_prior.py '{"w": ..., ...}' prints its JSON last
        print(json.dumps(job(json.loads(sys.argv[1]))))
