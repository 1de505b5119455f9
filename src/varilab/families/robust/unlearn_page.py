"""The page `varilab unlearn --method all` writes: every method beside retraining from scratch (accuracy on the
remaining, forgotten and test rows, the membership-inference AUCs, the time against retraining's)."""
from __future__ import annotations

import html
from pathlib import Path

from ...checkpoint import atomic_write
from ...report import Page, Section, html_page, img, plots, table

COLUMNS = (("accuracy_remaining", "remaining"), ("accuracy_forgotten", "forgotten"), ("accuracy_test", "test"),
           ("accuracy_test_other_classes", "test, other classes"),
           ("membership_loss_threshold_auc", "MIA AUC, loss threshold"),
           ("membership_black_box_auc", "MIA AUC, black box"), ("time_vs_retrain", "time / retrain"),
           ("seconds", "seconds"))


def page(summary: dict, path: Path) -> Path:
    methods = summary["methods"]
    names = list(methods)
    cols = [(k, t) for k, t in COLUMNS if any(r.get(k) is not None for r in methods.values())]
    rows = [(m, *[("-" if r.get(k) is None else r[k]) for k, _ in cols]) for m, r in methods.items()]
    acc = {t: [methods[m].get(k) for m in names] for k, t in COLUMNS[:4] if any(methods[m].get(k) is not None
                                                                                  for m in names)}
    mia = {t: [methods[m].get(k) for m in names] for k, t in COLUMNS[4:6] if any(methods[m].get(k) is not None
                                                                                 for m in names)}
    panels = [("accuracy", names, acc, None)]
    if mia:
        panels.append(("membership-inference AUC, forgotten vs test rows (0.5: chance)", names, mia, 0.5))
    retrain = methods.get("retrain", {})
    verdict = _verdict(methods, retrain, summary["forgotten"])
    sections = [Section("Methods side by side", img(plots.grouped_bars(panels), "accuracy and attack AUC by method"),
                        "The reference is retraining from scratch on the remaining rows: a method forgets well when "
                        "its figures match retraining's, not when they reach zero."),
                Section("Figures", table(rows, ("method", *[t for _, t in cols])),
                        "Accuracy: share of rows classified right. MIA AUC: ART's membership-inference attacks, fit on "
                        "remaining rows against half the test rows, scoring the forgotten rows against the other half. "
                        "Time: the method's wall time over retraining's."),
                Section("Runs", table([(m, r.get("run_dir", "")) for m, r in methods.items()]))]
    atomic_write(path, html_page(Page(f"Unlearning: {summary['forget']}", verdict, sections),
                                 f"from run <code>{html.escape(summary['run'])}</code>", path.parent.name))
    return path


def _verdict(methods: dict, retrain: dict, what: str) -> str:
    parts = [f"Forgetting {what}."]
    if retrain.get("accuracy_forgotten") is not None:
        parts.append(f"Retraining from scratch classifies {retrain['accuracy_forgotten']:.1%} of the forgotten rows "
                     f"right and {retrain['accuracy_test']:.1%} of the test rows.")
        for m, r in methods.items():
            if m == "retrain" or r.get("accuracy_forgotten") is None:
                continue
            parts.append(f"{m}: forgotten {r['accuracy_forgotten']:.1%} "
                         f"({r['accuracy_forgotten'] - retrain['accuracy_forgotten']:+.1%} against retraining), test "
                         f"{r['accuracy_test']:.1%}, in {r.get('time_vs_retrain', float('nan')):.2f} of its time.")
    return " ".join(parts)
