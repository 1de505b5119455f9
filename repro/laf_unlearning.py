"""Label-Agnostic Forgetting on Fashion-MNIST: forget class 0, and forget a random 10%, against retraining.

Per seed, the CNN classifier (`varilab train --model classifier --data fashion-mnist --width 16 --epochs 2`, the
paper's CPU plan) is trained on the 60,000 training images; then `varilab unlearn RUN --forget class:0|random:0.1
--method all` runs every method on it, and LAF once more with 1,000 labelled remaining rows (`--labels 1000`). Each
row of the table is a mean over 3 seeds with its spread (the standard deviation).

The finding holds here when, on the means: for class removal LAF's accuracy on the forgotten class is below 10% and
its test accuracy on the other classes is within 3 points of retraining's; for random removal LAF's accuracy on the
forgotten rows is within 3 points of retraining's; and for both, the loss-threshold attack's AUC after LAF is closer
to retraining's than the original model's is.
"""
from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

from varilab.families import registry
from varilab.families import robust as R
from varilab.families.robust.forget import forget_rows
from varilab.families.robust.unlearn import UnlearnOptions, scores, train_rows, unlearn

TASKS = ("class:0", "random:0.1")
ROWS = ("original", "retrain", "laf", "laf+labels", "finetune", "ascent", "random-labels")
COLUMNS = (("accuracy_remaining", "remaining"), ("accuracy_forgotten", "forgotten"), ("accuracy_test", "test"),
           ("accuracy_test_other_classes", "test, other classes"),
           ("membership_loss_threshold_auc", "MIA AUC, loss threshold"),
           ("membership_black_box_auc", "MIA AUC, black box"), ("time_vs_retrain", "time / retrain"))
PAPER = ("label-free LAF matches supervised state of the art on data, class and noisy-label removal; with few labels "
         "it beats supervised baselines")


def run(quick: bool = False) -> dict:
    root = Path(tempfile.mkdtemp(prefix="varilab-repro-laf-"))
    if quick:
        data, epochs, seeds, labels = "digits", 15, (0,), 50
    else:
        data, epochs, seeds, labels = "fashion-mnist", 2, (0, 1, 2), 1000
    per = {task: {name: [] for name in ROWS} for task in TASKS}
    try:
        for seed in seeds:
            opts = R.RobustOptions(model="classifier", data=data, epochs=epochs, width=16, seed=seed)
            R.train(opts, root / f"original-{seed}", quiet=True)
            original = registry.load(root / f"original-{seed}")
            for task in TASKS:
                out = root / f"{task.replace(':', '-')}-{seed}"
                u = UnlearnOptions(method="all", forget=task, seed=seed)
                summary, _ = unlearn(original, u, out, quiet=True)
                for method, r in summary["methods"].items():
                    per[task][method].append(r)
                r, _ = unlearn(original, UnlearnOptions(method="laf", forget=task, seed=seed, labels=labels),
                               out / "laf+labels", quiet=True)
                r["time_vs_retrain"] = r["seconds"] / summary["methods"]["retrain"]["seconds"]
                per[task]["laf+labels"].append(r)
                per[task]["original"].append(_original(original, u))
                if seed == seeds[0] and task == "class:0":
                    by_class = {name: _per_class(registry.load(d)) for name, d in
                                (("original", root / f"original-{seed}"), ("retrain", out / "retrain"),
                                 ("laf", out / "laf"), ("laf+labels", out / "laf+labels"))}
                laf, rt = per[task]["laf"][-1], per[task]["retrain"][-1]
                print(f"[laf_unlearning] seed {seed} {task}: forgotten {laf['accuracy_forgotten']:.3f} (retrain "
                      f"{rt['accuracy_forgotten']:.3f}), test {laf['accuracy_test']:.3f} ({rt['accuracy_test']:.3f}), "
                      f"time / retrain {laf['time_vs_retrain']:.2f}", flush=True)
        sweep = _sweep(registry.load(root / f"original-{seeds[0]}"), root / "sweep", seeds[0], quick)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    means = {task: {name: _mean(rs) for name, rs in rows.items()} for task, rows in per.items()}
    checks, labelled = _checks(means, "laf"), _checks(means, "laf+labels")
    tables = []
    for task in TASKS:
        tables += [f"**Forget {task}** (mean ± spread over {len(seeds)} seed{'s' if len(seeds) > 1 else ''})", "",
                   "| method | " + " | ".join(title for _, title in COLUMNS) + " |",
                   "|---|" + "---|" * len(COLUMNS)]
        for name in ROWS:
            rs = per[task][name]
            tables.append(f"| {name} | " + " | ".join(_cell([r.get(k) for r in rs]) for k, _ in COLUMNS) + " |")
        tables.append("")
    classes = len(by_class["original"])
    tables += [f"**Test accuracy by class** (forget class:0, seed {seeds[0]})", "",
               "| model | " + " | ".join(str(c) for c in range(classes)) + " |", "|---|" + "---|" * classes]
    tables += [f"| {name} | " + " | ".join(f"{a:.3f}" for a in accs) + " |" for name, accs in by_class.items()]
    tables.append("")
    retrained = per["class:0"]["retrain"][0]["accuracy_test_other_classes"]
    tables += [f"**LAF's trade-off** (forget class:0, seed {seeds[0]}, rounds over the forgotten rows set by `--epochs`; "
               f"retraining's test accuracy on the other classes: {retrained:.3f})", "",
               "| rounds | steps | forgotten | test, other classes | seconds |", "|---|---|---|---|---|"]
    tables += [f"| {r['rounds']} | {r['steps']} | {r['accuracy_forgotten']:.3f} | "
               f"{r['accuracy_test_other_classes']:.3f} | {r['seconds']:.1f} |" for r in sweep]
    notes = (f"Data: {'scikit-learn digits (quick form)' if quick else 'Fashion-MNIST, 60,000 training and 10,000 test images'}"
             f"; the classifier (width 16: 207k parameters) trained {epochs} epochs. LAF: `LAFConfig`'s defaults (80 "
             f"steps in whole rounds over the forgotten rows, Adam 1e-3 on the extractor; the representation VAEs 16 "
             f"latents on at most 10,000 rows, at least 1,500 steps); its time includes training both VAEs. "
             f"laf+labels: the same, then 5 epochs of cross-entropy (Adam 1e-3) on {labels:,} labelled remaining rows. "
             f"Baselines: an epoch each (fine-tune 1e-3, ascent 1e-4, random labels 1e-3); retrain: the original's "
             f"options on the remaining rows. Membership inference (ART): the attacks fit on 2,000 remaining rows "
             f"against half the test rows and score the forgotten rows against the other half (for class removal, "
             f"that half's rows of the class); AUC 0.5 is no signal. The held/not-held rule gates on the "
             f"loss-threshold attack, the one the paper's evaluation names; the black-box attack is reported beside it. "
             f"Paper: {PAPER}. The same checks for laf+labels: "
             + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in labelled.items()) + ".")
    notes += _why(means, by_class, sweep, checks)
    return {"title": "Label-Agnostic Forgetting against retraining (Fashion-MNIST)",
            "finding": "Without labels, LAF forgets a class (forgotten accuracy below 10%, the other classes within 3 "
                       "points of retraining) and a random 10% (forgotten accuracy within 3 points of retraining), and "
                       "leaves a membership attack's AUC closer to retraining's than the original model's.",
            "held": all(checks.values()), "checks": checks, "table": "\n".join(tables), "notes": notes,
            "results": means, "by_class": by_class, "sweep": [{k: v for k, v in r.items() if k in ("rounds", "steps", "seconds",
                "accuracy_forgotten", "accuracy_test_other_classes")} for r in sweep]}


def _sweep(original, root: Path, seed: int, quick: bool) -> list[dict]:
    """LAF on class 0 with more and more rounds: how much it forgets against what the other classes lose."""
    from varilab.models.unlearning.laf import LAFConfig, forget_batch

    rows = []
    for rounds in ((1, 4) if quick else (1, 2, 4, 8)):
        u = UnlearnOptions(method="laf", forget="class:0", seed=seed, epochs=rounds, membership_rows=0)
        r, _ = unlearn(original, u, root / str(rounds), quiet=True)
        f = r["rows_forgotten"]
        rows.append({"rounds": rounds, "steps": rounds * -(-f // forget_batch(f, LAFConfig())), **r})
    return rows


def _why(means: dict, by_class: dict, sweep: list[dict], checks: dict) -> str:
    """What the by-class table and the sweep say about a class-removal check that failed ("" when none did)."""
    if all(v for k, v in checks.items() if k.startswith("class: ") and "MIA" not in k):
        return ""
    retrained = means["class:0"]["retrain"]["accuracy_test_other_classes"]
    both = [r for r in sweep if r["accuracy_forgotten"] < 0.10 and retrained - r["accuracy_test_other_classes"] <= 0.03]
    gains = {c: by_class["retrain"][c] - by_class["laf"][c] for c in range(1, len(by_class["laf"]))}
    worst = max(gains, key=gains.get)
    sweep_says = (f"on seed {sweep[0].get('seed', 0)} the sweep's rounds {', '.join(str(r['rounds']) for r in both)} do "
                  "both, so the miss is the default's number of steps" if both else
                  "no number of rounds in the sweep gets the forgotten class below 10% with the other classes within 3 "
                  "points of retraining: more rounds forget more and cost the other classes more")
    return (f" Why it missed: {sweep_says}. By class, the gap is class {worst}, {by_class['laf'][worst]:.3f} after LAF against "
            f"retraining's {by_class['retrain'][worst]:.3f} (the original: {by_class['original'][worst]:.3f}): "
            f"retraining gains there because the forgotten class no longer competes for its images, while LAF keeps "
            f"the last layer and its class-0 output and can only move representations; with labels the repair stage "
            f"retrains that layer and gets {by_class['laf+labels'][worst]:.3f}.")


def _per_class(run) -> list[float]:
    """A classifier run's accuracy on the test rows of each class."""
    import torch

    x, y = run.data.x_test, run.data.y_test.long()
    with torch.no_grad():
        hit = run.model.eval()(x).argmax(-1) == y
    return [hit[y == c].float().mean().item() for c in range(int(y.max()) + 1)]


def _original(run, u: UnlearnOptions) -> dict:
    """The original model's row: its scores on the rows the task forgets, as if it were a method."""
    from varilab.models.unlearning.split import Split

    ds = run.data
    y = ds.y_train.long()
    forget, _, klass = forget_rows(u.forget, y, ds.y_test.long(), train_rows(run), u.seed)
    return {"method": "original", **scores(run, run.model, Split(ds.x_train, y, forget), klass, u)}


def _mean(rs: list[dict]) -> dict:
    keys = {k for r in rs for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {k: statistics.fmean(r[k] for r in rs if r.get(k) is not None) for k in keys
            if any(r.get(k) is not None for r in rs)}


def _cell(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {spread:.3f}"


def _checks(m: dict, method: str) -> dict:
    """The finding's checks on the means, for `method` (laf, or laf+labels)."""
    c, r = m["class:0"], m["random:0.1"]
    auc = "membership_loss_threshold_auc"
    checks = {
        "class: forgotten accuracy below 10%": c[method]["accuracy_forgotten"] < 0.10,
        "class: other classes within 3 points of retraining": abs(c[method]["accuracy_test_other_classes"]
                                                                  - c["retrain"]["accuracy_test_other_classes"]) <= 0.03,
        "random: forgotten accuracy within 3 points of retraining": abs(r[method]["accuracy_forgotten"]
                                                                        - r["retrain"]["accuracy_forgotten"]) <= 0.03}
    for task, t in m.items():
        if auc in t[method]:
            checks[f"{task.split(':')[0]}: MIA AUC closer to retraining's than the original's"] = (
                abs(t[method][auc] - t["retrain"][auc]) < abs(t["original"][auc] - t["retrain"][auc]))
    return checks
