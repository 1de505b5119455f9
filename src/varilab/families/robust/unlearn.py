"""`varilab unlearn RUN --forget SPEC --method M --out DIR`: a classifier run made to forget some of its training
rows, written as a classifier run of its own (every command takes it), with what it forgot and how well in
unlearn.json. `--method all` writes one run per method in DIR/METHOD and a page comparing them (DIR/unlearn.html)."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .. import folder, registry
from ..options import any_seed, non_negative_int, option, positive, positive_int
from ..protocol import Command, Run
from .forget import FORMS, forget_rows
from .training import TRAIN_ROWS, fit_run, write_rows

METHODS = {"laf": "Label-Agnostic Forgetting: VAEs of the remaining and forgotten rows' representations steer the "
                  "feature extractor, InfoNCE keeps the remaining ones aligned; no labels (but --labels N)",
           "finetune": "fine-tune on the remaining rows with their labels",
           "ascent": "gradient ascent on the forgotten rows' cross-entropy",
           "random-labels": "train on the forgotten rows under random wrong labels beside the remaining rows",
           "retrain": "retrain from scratch on the remaining rows (the reference every method is scored against)",
           "all": "every method above, each a run in DIR/METHOD, and a page comparing them (DIR/unlearn.html)"}
ORDER = ("retrain", "laf", "finetune", "ascent", "random-labels")  # retrain first: the others' times are against it
UNLEARN, FORGET = "unlearn.json", "forget.npy"  # in an unlearned run: what it forgot and how; the rows (data as given)
VAES = ("vae-remaining", "vae-forgotten")  # LAF's representation VAEs, ordinary VAE runs inside its run
EPOCHS = {"finetune": 1, "ascent": 1, "random-labels": 1}  # LAF's own: LAFConfig.epochs
LR = {"finetune": 1e-3, "ascent": 1e-4, "random-labels": 1e-3}


@dataclass
class UnlearnOptions:
    AXIS = "method"
    method: str = option("laf", "the unlearning method", choices=METHODS)
    forget: str | None = option(None, f"the training rows to forget: {FORMS} (class: every row of a class; indices: "
                                "rows of the data as given, each one the run trained on; random: a share in (0, 1), "
                                "drawn with --seed)", check=lambda v: None if v else "must be given, e.g. --forget class:0")
    labels: int = option(0, "LAF's supervised repair: this many labelled remaining rows (0: none, label-free)",
                         check=non_negative_int.upto(10**7), models=("laf", "all"))
    epochs: int | None = option(None, "the method's epochs (laf: rounds over the forgotten rows, by default as "
                                "many as 80 steps need; finetune, ascent, random-labels: 1; retrain: the run's own)",
                                check=positive_int.upto(10_000))
    lr: float | None = option(None, "the method's step size (laf: its own; finetune, random-labels 1e-3; ascent "
                              "1e-4; retrain: the run's)", check=positive.upto(10))
    membership_rows: int = option(2000, "rows each membership-inference attack fits on and scores (0: no attack)",
                                  check=non_negative_int)
    seed: int = option(0, "seed of random:SHARE, of the method's batches and of the attacks", check=any_seed)


def unlearn(run: Run, opts: UnlearnOptions, out: Path, force: bool = False, quiet: bool = False):
    """Forget the rows, write the run(s); (the metrics, the lines to print)."""
    from ...models.unlearning.split import Split

    if run.options.model != "classifier":
        raise ValueError(f"{run.dir} is a {run.options.model} run; `varilab unlearn` takes a classifier run "
                         "(varilab train --model classifier)")
    ds = run.data
    if ds.y_train is None:
        raise ValueError(f"{ds.name} has no labels; a classifier run needs them")
    y = ds.y_train.long()
    rows_of = train_rows(run)
    forget, what, klass = forget_rows(opts.forget, y, ds.y_test.long(), rows_of, opts.seed)
    split = Split(ds.x_train, y, forget)
    methods = ORDER if opts.method == "all" else (opts.method,)
    results, retrain_seconds = {}, None
    for method in methods:
        where = out / method if opts.method == "all" else out
        with folder.new_run(where, run.family, force, "unlearn"):
            r = one(run, opts, method, split, where, quiet)
            r.update(forget=opts.forget, forgotten=what, rows_forgotten=len(forget), run=str(run.dir),
                     **scores(run, r.pop("model"), split, klass, opts))
            r["run_dir"] = str(where)
            retrain_seconds = r["seconds"] if method == "retrain" else retrain_seconds
            if retrain_seconds:
                r["time_vs_retrain"] = r["seconds"] / retrain_seconds
            _write(where, r, rows_of[forget])
        results[method] = r
    if opts.method != "all":
        return results[opts.method], lines_of(results, what)
    from .unlearn_page import page

    summary = {"forget": opts.forget, "forgotten": what, "run": str(run.dir), "methods": results}
    from ...checkpoint import atomic_write

    atomic_write(out / "comparison.json", json.dumps(summary, indent=1) + "\n")
    page(summary, out / "unlearn.html")
    return summary, lines_of(results, what) + [f"runs in {out}/METHOD; page {out / 'unlearn.html'}"]


def train_rows(run: Run):
    """Each training row's index in the data as given: the run's record, or (older runs) its data split again."""
    import numpy as np
    import torch

    path = run.dir / TRAIN_ROWS
    if path.is_file():
        rows = torch.as_tensor(np.load(path, allow_pickle=False))
        if len(rows) != len(run.data.x_train):
            raise ValueError(f"{path}: lists {len(rows):,} training rows but the run's data have "
                             f"{len(run.data.x_train):,}; the file belongs to another run")
        return rows
    return run.data.train_rows


def one(run: Run, opts: UnlearnOptions, method: str, split, out: Path, quiet: bool) -> dict:
    """Run one method into `out`: {"model", "method", "seconds", "history", ...}."""
    import torch

    started = time.perf_counter()
    if method == "retrain":
        model = _retrain(run, opts, split, out, quiet)
        return {"model": model, "method": method, "seconds": time.perf_counter() - started}
    folder.begin(out, run.family, run.options, resume=False)
    model = copy.deepcopy(run.model)
    extra = {}
    if method == "laf":
        history, extra = _laf(run, opts, model, split, out, quiet)
    else:
        from ...models.unlearning import baselines

        config = baselines.BaselineConfig(epochs=opts.epochs or EPOCHS[method], lr=opts.lr or LR[method],
                                          batch_size=run.options.batch_size)
        fn = {"finetune": baselines.finetune, "ascent": baselines.ascent,
              "random-labels": baselines.random_labels}[method]
        history = fn(model, split, config, seed=opts.seed)
    seconds = time.perf_counter() - started
    _save(run, model, out, history)
    torch.manual_seed(0)
    return {"model": model.eval(), "method": method, "seconds": seconds, "history": history, **extra}


def _retrain(run: Run, opts: UnlearnOptions, split, out: Path, quiet: bool):
    """A fresh classifier of the run's options trained on the remaining rows alone, as the run was trained."""
    ds = run.data
    keep = split.remain
    sub = replace(ds, x_train=ds.x_train[keep], y_train=ds.y_train[keep],
                  c_train=None if ds.c_train is None else ds.c_train[keep],
                  train_rows=None if ds.train_rows is None else ds.train_rows[keep])
    o = replace(run.options, epochs=opts.epochs or run.options.epochs, lr=opts.lr or run.options.lr)
    fit_run(o, sub, out, quiet=True, rows=train_rows(run)[keep])
    return folder.trained(out, copy.deepcopy(run.model), ds)


def _save(run: Run, model, out: Path, history: list[dict]) -> None:
    """The unlearned classifier as a run of the original's options (config.json written when it began): its
    training rows, a metrics line an epoch, the weights."""
    from ...checkpoint import atomic_write, save_weights

    write_rows(out / TRAIN_ROWS, train_rows(run))
    atomic_write(out / folder.METRICS, "".join(json.dumps(m) + "\n" for m in history))
    save_weights(out / folder.WEIGHTS, model)


def _laf(run: Run, opts: UnlearnOptions, model, split, out: Path, quiet: bool):
    """Stage 1: a VAE of the remaining rows' representations and one of the forgotten rows', each an ordinary VAE
    run in out/vae-remaining and out/vae-forgotten; then LAF's stages on the model."""
    import torch

    from ...models.unlearning.laf import LAFConfig, laf

    if len(split.forget) == 0:
        return [], {}
    g = torch.Generator().manual_seed(opts.seed)
    vaes = [representation_vae(model, split.x[_at_most(rows, REPRESENTATION_ROWS, g)], out / name, opts.seed, quiet)
            for name, rows in zip(VAES, (split.remain, split.forget))]
    labelled = None
    if opts.labels:
        g = torch.Generator().manual_seed(opts.seed)
        labelled = split.remain[torch.randperm(len(split.remain), generator=g)[:opts.labels]]
    config = LAFConfig(**{k: v for k, v in (("epochs", opts.epochs), ("lr", opts.lr)) if v is not None})
    history = laf(model, split, vaes[0].model, vaes[1].model, config, labelled=labelled, seed=opts.seed)
    return history, {"vaes": {name: str(out / name) for name in VAES}, "labels": opts.labels}


def _at_most(rows, n: int, g):
    """The rows, or a random n of them (sorted) where there are more."""
    import torch

    return rows if len(rows) <= n else rows[torch.randperm(len(rows), generator=g)[:n]].sort().values


REPRESENTATION_ROWS = 10_000  # each representation VAE fits on at most this many rows, a random subset
REPRESENTATION_STEPS = 1500  # and for at least this many steps (a VAE of a few hundred rows needs many epochs)
REPRESENTATION_VAE = dict(model="vae", latent_dim=16, hidden=[256], likelihood="gaussian", obs_var=1.0, epochs=20,
                          batch_size=128, lr=1e-3, test_fraction=0.1)  # stage 1 of LAF: the same for both VAEs


def representation_vae(model, x, out: Path, seed: int, quiet: bool) -> Run:
    """An ordinary VAE run on phi(x), the classifier's representations of rows x (saved beside it as
    representations.npy, its data): `varilab diagnose out` shows its collapse like any VAE's."""
    import numpy as np
    import torch

    from ...checkpoint import atomic_write

    with torch.no_grad():
        h = torch.cat([model.represent(xb) for xb in x.split(256)]).cpu().numpy()  # (faster on a CPU than 1024)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "representations.npy"
    buffer = io.BytesIO()
    np.save(buffer, h)
    atomic_write(path, buffer.getvalue())
    family = registry.family_of("vae")
    size = dict(REPRESENTATION_VAE)
    if len(h) < 20:  # a handful of forgotten rows: a split still needs a test row
        size["test_fraction"] = 0.5
    batches = math.ceil(len(h) * (1 - size["test_fraction"]) / size["batch_size"])
    size["epochs"] = max(size["epochs"], math.ceil(REPRESENTATION_STEPS / batches))  # few rows: more epochs
    opts = family.options(data=str(path.resolve()), seed=seed, **size)
    with contextlib.redirect_stderr(io.StringIO()):  # its data line: the unlearn command prints its own
        family.train(opts, out, resume=False, quiet=True)
    return family.load(out, opts)


def scores(run: Run, model, split, klass: int | None, opts: UnlearnOptions) -> dict:
    """Accuracy on the remaining, forgotten and test rows (for a class: the test rows of the other classes and of
    it); membership-inference AUCs of the forgotten rows against test rows (ART's attacks)."""
    import torch

    from ...models.robust.robustness import accuracy

    ds = run.data
    dev = next(model.parameters()).device
    x, y = split.x.to(dev), split.y.to(dev)
    xt, yt = ds.x_test.to(dev), ds.y_test.long().to(dev)
    model.eval()
    with torch.no_grad():
        r = {"accuracy_remaining": accuracy(model, x[split.remain], y[split.remain]),
             "accuracy_forgotten": accuracy(model, x[split.forget], y[split.forget]) if len(split.forget) else None,
             "accuracy_test": accuracy(model, xt, yt)}
        if klass is not None:
            other = yt != klass
            r["accuracy_test_other_classes"] = accuracy(model, xt[other], yt[other])
            r["accuracy_test_forgotten_class"] = accuracy(model, xt[~other], yt[~other]) if (~other).any() else None
    if opts.membership_rows and len(split.forget):
        r.update(membership(model, split, xt, yt, klass, opts))
    return r


def membership(model, split, xt, yt, klass, opts: UnlearnOptions) -> dict:
    """The attacks fit on remaining rows (members) against half the test rows (non-members), then score the forgotten
    rows against the other half (for a class: that half's rows of the class)."""
    import torch

    from ...models.unlearning.membership import membership_aucs

    g = torch.Generator().manual_seed(opts.seed)
    order = torch.randperm(len(xt), generator=g)
    fit_out, score_out = order[: len(order) // 2], order[len(order) // 2:]
    if klass is not None:
        score_out = score_out[yt[score_out] == klass]
    dev = xt.device
    members = split.remain[torch.randperm(len(split.remain), generator=g)[:opts.membership_rows]]
    m = membership_aucs(model, (split.x[members].to(dev), split.y[members].to(dev)), (xt[fit_out], yt[fit_out]),
                        (split.x[split.forget].to(dev), split.y[split.forget].to(dev)),
                        (xt[score_out], yt[score_out]), seed=opts.seed, max_rows=opts.membership_rows)
    return {f"membership_{k}": v for k, v in m.items() if k.endswith("auc")}


def _write(out: Path, result: dict, forgotten_rows) -> None:
    from ...checkpoint import atomic_write

    write_rows(out / FORGET, forgotten_rows)
    atomic_write(out / UNLEARN, json.dumps({k: v for k, v in result.items()}, indent=1) + "\n")


def unlearned(run: Run) -> dict:
    """For a run `varilab unlearn` wrote: its method, what it forgot, and its accuracy on the remaining and forgotten
    training rows now ({} for any other run)."""
    import numpy as np
    import torch

    from ...models.robust.robustness import accuracy

    if not (run.dir / UNLEARN).is_file():
        return {}
    told = json.loads((run.dir / UNLEARN).read_text())
    rows = train_rows(run)
    wanted = torch.as_tensor(np.load(run.dir / FORGET, allow_pickle=False))
    forgotten = torch.isin(rows, wanted)
    dev = next(run.model.parameters()).device
    x, y = run.data.x_train.to(dev), run.data.y_train.long().to(dev)
    with torch.no_grad():
        return {"unlearn_method": told.get("method"), "forget": told.get("forget"),
                "rows_forgotten": int(forgotten.sum()), "accuracy_remaining": accuracy(run.model, x[~forgotten],
                                                                                       y[~forgotten]),
                "accuracy_forgotten": accuracy(run.model, x[forgotten], y[forgotten]) if forgotten.any() else None}


def lines_of(results: dict, what: str) -> list[str]:
    head = f"{'method':<15}{'remaining':>10}{'forgotten':>10}{'test':>8}{'MIA loss':>10}{'MIA bb':>8}{'seconds':>9}"
    lines = [f"forgot {what}", head]
    for method, r in results.items():
        cell = lambda k, w: f"{r[k]:>{w}.4f}" if r.get(k) is not None else f"{'-':>{w}}"  # noqa: E731
        lines.append(f"{method:<15}{cell('accuracy_remaining', 10)}{cell('accuracy_forgotten', 10)}"
                     f"{cell('accuracy_test', 8)}{cell('membership_loss_threshold_auc', 10)}"
                     f"{cell('membership_black_box_auc', 8)}{r['seconds']:>9.1f}")
    return lines


UNLEARN_COMMAND = Command("make a classifier run forget some of its training rows (LAF and its baselines)",
                          UnlearnOptions, unlearn, choices=METHODS, about_run="the classifier run",
                          writes_run=True)
