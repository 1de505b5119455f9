"""The robustness family: a small CNN classifier (the target of classifier attacks) and the quantised-latent
purifier that stands in front of any classifier; `varilab robustness` scores a purifier against FGSM, PGD and
BPDA, and `varilab attack` attacks its encoder like any VAE's."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import folder, registry
from ..attack import ATTACK, fraction
from ..collapse import ActivityFlags, encoder_diagnosis
from ..options import (Range, TrainOptions, any_seed, between, ints, non_negative, option, positive, positive_int,
                      positive_ints)
from ..protocol import Command, Family, Run
from .training import TRAIN_ROWS, fit_run, make_model
from .unlearn import FORGET, UNLEARN, UNLEARN_COMMAND, VAES

MODELS = {"classifier": "a small CNN image classifier (two convolutions, one hidden layer), trained by cross-entropy",
          "purifier": "a VAE with a spectrally normalised encoder and a quantised latent mean: purify(x) before any "
                      "classifier"}
PURIFIER, CLASSIFIER = ("purifier",), ("classifier",)


@dataclass
class RobustOptions(TrainOptions):
    DEFAULTS = {"data": "digits", "epochs": 20}
    HELP = {"data": "image data set name or a .npy/.npz path (labels needed by the classifier)"}
    model: str = option("purifier", "the model", choices=MODELS)
    latent_dim: int = option(32, "number of latent dimensions", check=positive_int.upto(65_536),
                            models=PURIFIER)
    hidden: list[int] = option([512, 256], "the encoder's hidden sizes (the decoder mirrors them)", parse=ints,
                               check=positive_ints.upto(65_536), models=PURIFIER)
    levels: int = option(5, "code values per latent dimension", check=Range(2, 1024, integer=True, below="at least 2"),
                         models=PURIFIER)
    radius: float = option(2.0, "the code values are evenly spaced on [-radius, radius]", check=positive.upto(1e3),
                           models=PURIFIER)
    lipschitz: float = option(16.0, "the target Lipschitz bound (L2 to L2) of the encoder mean: spectral normalisation "
                              "scales each of its k layers to norm lipschitz^(1/k) as power iteration estimates it; "
                              "`varilab eval` reports the exact bound", check=positive.upto(1e6),
                              models=PURIFIER)
    input_noise: float = option(0.2, "std of the Gaussian noise added to the encoder's input in training (the "
                                "reconstruction target stays clean)", check=non_negative.upto(100),
                                models=PURIFIER)
    beta: float = option(0.5, "weight of the KL term (below 1 the code keeps more of the image: on MNIST, 16 latents "
                         "at beta 1 cost 7 points of clean accuracy through the purifier, 32 at 0.5 about 4)",
                         check=non_negative.upto(1e4), models=PURIFIER)
    width: int = option(32, "channels of the first convolution (the second has twice as many)",
                        check=positive_int.upto(512),
                        models=CLASSIFIER)


@dataclass
class RobustnessOptions:
    AXIS = "attack"
    attack: str = option("pgd", "the attack (see varilab.models.robust.robustness.ATTACKS)",
                         choices=("fgsm", "pgd", "bpda"))
    classifier: str | None = option(None, "the classifier run folder (varilab train --model classifier)",
                                    check=lambda v: None if v else "must be given as --classifier RUN2")
    eps: float = option(0.2, "the L-infinity radius on the images' [0, 1] range: a number or a fraction (8/255)",
                        parse=fraction, check=between(0, 1, open_lo=True))
    steps: int = option(20, "PGD steps", check=positive_int.upto(100_000), models=("pgd", "bpda"))
    n: int = option(1000, "attack the first n test images", check=positive_int)
    sample: bool = option(False, "make the purifier stochastic (z drawn from q, not its mean): attacked by "
                          "expectation over --draws draws and scored by the mean accuracy over them")
    draws: int = option(8, "draws per image with --sample", check=positive_int.upto(10_000))
    seed: int = option(0, "random seed of the draws", check=any_seed)


def load_data(opts: RobustOptions, spec: str | None = None):
    from ... import data as vdata

    ds = vdata.load(spec or opts.data, test_fraction=opts.test_fraction, seed=opts.seed,
                    condition="label" if opts.model == "classifier" else "none")
    if ds.image_shape is None:
        raise ValueError(f"the {opts.model} works on images ([N, H, W]); {ds.name} holds vectors of {ds.x_dim}")
    lo, hi = float(ds.x_train.min()), float(ds.x_train.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"the {opts.model} works on images in [0, 1], but {ds.name} ranges over [{lo:.4g}, {hi:.4g}]; "
                         "divide 0-255 pixels by 255")
    return ds


def train(opts: RobustOptions, out: Path, resume: bool = False, quiet: bool = False) -> list[dict]:
    ds = load_data(opts)
    folder.check_fits(lambda: make_model(opts, ds), f"a {opts.model} of these sizes")
    return fit_run(opts, ds, out, resume, quiet)


def load(run_dir: Path, opts: RobustOptions, data: str | None = None, raw: dict | None = None) -> Run:
    ds = load_data(opts, data)
    return Run(run_dir, FAMILY, opts, folder.trained(run_dir, make_model(opts, ds), ds), ds)


def _test(run: Run, n: int | None = None):
    device = next(run.model.parameters()).device
    x = run.data.x_test[:n].to(device)
    y = None if run.data.y_test is None else run.data.y_test[:n].long().to(device)
    return x, y


def evaluate(run: Run) -> dict:
    """The classifier's test accuracy; the purifier's test ELBO, its Lipschitz bound, the share of codes a
    perturbation of L2 norm 0.1 could change, and how many code values each latent uses."""
    import torch

    from ...core import elbo_terms
    from ...models.robust.robustness import accuracy
    from ...train import evaluate as mean_over

    x, y = _test(run)
    result = {"data": run.data.name, "n_test": len(x)}
    if run.options.model == "classifier":
        from .unlearn import unlearned

        return {**result, "accuracy": accuracy(run.model, x, y), **unlearned(run)}
    torch.manual_seed(0)
    m = mean_over(run.model, x, lambda mdl, xb: elbo_terms(mdl, xb, estimator="score"))
    bound = run.model.lipschitz_bound()
    with torch.no_grad():
        margin, codes = run.model.margin(x), run.model.code(x)
    used = [len(torch.unique(codes[:, i])) for i in range(codes.shape[1])]
    result.update({k: m[k] for k in ("elbo", "recon", "kl")})
    result.update({"lipschitz_bound": bound, "median_margin": float(margin.median()),
                   "certified_radius_median": float(margin.median()) / bound,
                   "code_values_used_mean": sum(used) / len(used)})
    if y is not None:
        result["distinct_codes"] = len(torch.unique(codes, dim=0))
    return result


def diagnose(run: Run, threshold: float = 0.01) -> tuple[dict, list[str]]:
    if run.options.model == "classifier":
        raise ValueError("a classifier has no latent posterior to diagnose; diagnose a purifier run")
    return encoder_diagnosis(run.model, _test_inputs(run), None, threshold)


def _test_inputs(run: Run):
    """The test split as the purifier's encoder reads it, on the model's device."""
    from ...train import test_inputs

    return test_inputs(run.data.x_test.to(next(run.model.parameters()).device), run.data)


# LAF's logged stages (models.unlearning.laf): stage 2's unlearning loss and its parts, stage 3's alignment
UNLEARN_CURVES = [("ue", "L_UE, the unlearning loss", False, None, "loss"),
                  ("forget", "its forget term", False, None, "loss"),
                  ("keep", "its keep term (unweighted)", False, None, "loss"),
                  ("ra", "L_RA, the representation alignment", False, None, "loss"),
                  ("loss", "training loss", False)]  # a baseline's (fine-tuning, gradient ascent)


def report(run: Run):
    from ...report import Page, Section, img, metrics_table
    from ...report import plots

    e = evaluate(run)
    x, _ = _test(run, 10)
    if run.options.model == "classifier" and "unlearn_method" in e:  # a run `varilab unlearn` wrote
        verdict = (f"{e['unlearn_method']} made this classifier forget {e['forget']} ({e['rows_forgotten']:,} training "
                   f"rows): accuracy {e['accuracy_forgotten']:.4f} on them against {e['accuracy_remaining']:.4f} on the "
                   f"remaining training rows, {e['accuracy']:.4f} on the {e['n_test']:,} test images. Beside retraining "
                   f"and the other baselines: `varilab unlearn RUN --forget {e['forget']} --method all`.")
        return Page(f"classifier on {run.data.name}, after unlearning ({e['forget']})", verdict,
                    [Section("Final metrics", metrics_table(e, run.settings))], UNLEARN_CURVES)
    if run.options.model == "classifier":
        verdict = f"Test accuracy {e['accuracy']:.4f} on {e['n_test']:,} held-out images of {run.data.name}."
        return Page(f"classifier on {run.data.name}", verdict, [Section("Final metrics", metrics_table(e, run.settings))],
                    ["loss", "accuracy"])
    import torch

    with torch.no_grad():
        shown = [("input", x.cpu().numpy()), ("purified", run.model.purify(x).cpu().numpy())]
    from ...checkpoint import read_jsonl
    from ...report.latents import diagnostics_section
    from ...run_files import METRICS

    verdict = (f"Test ELBO {e['elbo']:.2f} nats per image; the encoder mean's Lipschitz bound is "
               f"{e['lipschitz_bound']:.3f}, so half the test images keep their code under any change of L2 norm below "
               f"{e['certified_radius_median']:.4f}.")
    test = _test_inputs(run)
    return Page(f"purifier on {run.data.name}", verdict,
                [Section("Purified test images", img(plots.image_rows(shown, run.data.image_shape), "purified images")),
                 diagnostics_section(run.model, test, None, run.data.image_shape, read_jsonl(run.dir / METRICS)),
                 Section("Robustness", "", "Clean and attacked accuracy of a classifier with and without this purifier: "
                         f"`varilab robustness {run.dir} --classifier CLASSIFIER_RUN` (FGSM, PGD or the adaptive "
                         "BPDA); it warns when purifying costs more than 5 points of clean accuracy."),
                 Section("Final metrics", metrics_table(e, run.settings))], ["loss", "recon", "kl"])


def robustness(run: Run, opts: RobustnessOptions) -> tuple[dict, list[str]]:
    """Clean and robust accuracy of a classifier run with and without this purifier."""
    from ...models.robust.robustness import robustness as score

    if run.options.model != "purifier":
        raise ValueError(f"{run.dir} is a {run.options.model} run; `varilab robustness` takes the purifier run first "
                         "and the classifier as --classifier")
    clf = registry.load(opts.classifier)
    if clf.options.model != "classifier":
        raise ValueError(f"--classifier {opts.classifier} is a {clf.options.model} run, not a classifier")
    if clf.data.x_dim != run.data.x_dim:
        raise ValueError(f"--classifier {opts.classifier} takes {clf.data.x_dim} pixels per image; the purifier "
                         f"{run.dir} makes {run.data.x_dim}")
    x, y = _test(run, opts.n)
    if y is None:
        raise ValueError(f"{run.data.name} has no labels to score a classifier on")
    draws = opts.draws if opts.sample else 1
    folder.check_memory(4 * 64 * len(x) * draws * x.shape[1], f"{len(x):,} images of {x.shape[1]:,} pixels, "
                        f"{draws:,} draws each", "choose fewer --draws or fewer images (--n)")
    r = score(run.model, clf.model.to(x.device), x, y, opts.attack, opts.eps, opts.steps, opts.draws, opts.sample,
              opts.seed)
    kind = "adaptive (BPDA)" if opts.attack == "bpda" else "gray-box"
    lines = [f"{opts.attack} at eps {opts.eps:.4g} ({kind}) on {r['n']} test images of {run.data.name}"
             + (f", the purifier stochastic: {r['draws']} draws per image" if opts.sample else ""),
             f"{'':<22}{'clean':>8}{'attacked':>10}",
             f"{'classifier alone':<22}{r['clean_accuracy']:>8.4f}"
             + (f"{r['robust_accuracy']:>10.4f}" if r["robust_accuracy"] is not None else f"{'-':>10}"),
             f"{'purifier, classifier':<22}{r['clean_accuracy_purified']:>8.4f}{r['robust_accuracy_purified']:>10.4f}",
             f"unchanged codes: {r['unchanged_codes']:.4f} of latent coordinates, {r['unchanged_points']:.4f} of images"]
    cost = purification_cost(r["clean_accuracy"], r["clean_accuracy_purified"])
    r["purification_warning"] = cost
    return r, lines + ([f"warning: {cost}"] if cost else [])


COST_BOUND = 0.05  # clean accuracy a purifier may take before a run says so


def purification_cost(clean: float, purified: float) -> str:
    """A sentence when purifying costs the classifier more than 5 points of clean accuracy, else ''."""
    drop = clean - purified
    if drop <= COST_BOUND:
        return ""
    return (f"the purifier costs {100 * drop:.1f} points of clean accuracy ({clean:.4f} -> {purified:.4f}): its "
            "reconstructions lose what the classifier reads; a lower --beta or more --latent-dim keeps more of it")


ROBUSTNESS = Command("a purifier run against FGSM, PGD and BPDA on a classifier run", RobustnessOptions, robustness,
                     about_run="the purifier run (the classifier is --classifier)")
FAMILY = registry.register(Family("robust", MODELS, RobustOptions, train=train, load=load, evaluate=evaluate,
                                  diagnose=diagnose, report=report, flags={"diagnose": ActivityFlags},
                                  commands={"attack": ATTACK, "robustness": ROBUSTNESS, "unlearn": UNLEARN_COMMAND},
                                  files=(TRAIN_ROWS, UNLEARN, FORGET, *VAES)))
