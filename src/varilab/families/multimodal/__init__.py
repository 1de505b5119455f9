"""The multi-modal family: PHG-MAE's masked autoencoder over modalities (`mm-mae`, papers.md section 11), trained on
procedural scenes (rgb, depth, edges and a semantic mask as the task) or a user's `.npz` of named modalities.

    varilab train --model mm-mae --out runs/mm
    varilab eval runs/mm --ensemble 8 --json     # mIoU of one all-inputs pass, of an ensemble of 8 subsets, by subset
    varilab train --model mm-student --teacher runs/mm --ensemble 8 --out runs/student
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import folder
from ..options import TrainOptions, option, positive_int
from ..ranges import between
from ..protocol import Family, Run
from ..registry import register
from .predict import PREDICT, EnsembleFlags

MODELS = {"mm-mae": "a convolutional masked autoencoder over modalities: each training pass keeps a random subset of "
                    "the input modalities and predicts them all and the task; at inference an ensemble over subsets",
          "mm-student": "a small network of the same shape distilled from an mm-mae run's ensemble: it sees every "
                        "input and learns the ensemble's class probabilities"}
MAE, STUDENT = ("mm-mae",), ("mm-student",)


def _teacher_given(v):
    return None if v else "must be given: an mm-mae run folder"


@dataclass
class MultiModalOptions(TrainOptions):
    DEFAULTS = {"data": "scenes", "epochs": 40, "batch_size": 64, "lr": 1e-3, "test_fraction": 0.2}
    PER_MODEL = {"mm-student": {"width": 8, "lr": 3e-3}}  # a small network learns faster at a larger step
    HELP = {"data": "scenes (procedural 32 x 32 scenes: rgb, depth, edges, and a semantic mask as the task) or a .npz "
                    "of named modalities [N, C, H, W] of one spatial size"}
    model: str = option("mm-mae", "the model", choices=MODELS)
    scenes: int = option(3000, "procedural scenes made (with --data scenes)", check=positive_int.upto(1_000_000))
    scene_noise: float = option(0.0, "noise of the procedural scenes' inputs, as if experts made them: rgb and depth "
                                "gain Gaussian noise of this scale, an edge pixel flips with half this probability",
                                check=between(0, 1))
    task: str = option("semantic", "the modality to predict: one channel of class indices, never an input")
    p_mask: float = option(0.5, "probability that an input modality is dropped in a training pass (at least one is "
                           "kept)", check=between(0, 1, open_hi=True), models=MAE)
    width: int = option(24, "channels of the network's first block (then 2x and 4x)", check=positive_int.upto(1024))
    teacher: str | None = option(None, "the mm-mae run whose ensemble the student learns (its data too)",
                                 check=_teacher_given, models=STUDENT)
    ensemble: int = option(8, "members of the teacher's ensemble behind each soft target",
                           check=positive_int.upto(1024), models=STUDENT)


def load_scenes(opts: MultiModalOptions, spec: str | None = None):
    """(a `Dataset` of rows [N, D], every modality flattened in order; the layout ((name, channels), ...);
    the task's classes; H x W)."""
    import numpy as np

    from ...data import make_dataset
    from ...data import scenes as sc

    spec = spec or opts.data
    if spec == "scenes":
        if opts.task not in sc.MODALITIES:
            raise ValueError(f"--task {opts.task!r} is not a modality of the scenes ({', '.join(sc.MODALITIES)})")
        arrays, classes = sc.scenes(opts.scenes, seed=opts.seed, noise=opts.scene_noise), len(sc.CLASSES)
    else:
        arrays = sc.read_modalities(spec, opts.task)
        classes = int(arrays[opts.task].max()) + 1
    layout = tuple((name, a.shape[1]) for name, a in arrays.items())
    n = len(arrays[opts.task])
    rows = np.concatenate([a.reshape(n, -1) for a in arrays.values()], 1)
    size = tuple(arrays[opts.task].shape[2:])
    return make_dataset(Path(spec).stem, rows, test_fraction=opts.test_fraction, seed=opts.seed), layout, classes, size


def make_model(opts: MultiModalOptions, layout, classes: int, size):
    import torch

    from ...models.multimodal.mae import MultiModalConfig, MultiModalMAE

    torch.manual_seed(opts.seed)
    p_mask = opts.p_mask if opts.model in MAE else 0.0  # a student always sees every input
    return MultiModalMAE(MultiModalConfig(layout, opts.task, classes, size, opts.width, p_mask))


def train(opts: MultiModalOptions, out: Path, resume: bool = False, quiet: bool = False) -> list[dict]:
    import sys

    from ...models.multimodal.mae import mm_loss
    from ...train import fit

    objective = mm_loss
    if opts.model in STUDENT:
        opts, ds, objective = _distillation(opts)
        _, layout, classes, size = load_scenes(opts)
    else:
        ds, layout, classes, size = load_scenes(opts)
    model = make_model(opts, layout, classes, size)
    print(f"{ds.summary()}; modalities {', '.join(f'{n} ({c})' for n, c in layout)}, task {opts.task} "
          f"({classes} classes); {sum(p.numel() for p in model.parameters()):,} parameters", file=sys.stderr)
    folder.begin(out, FAMILY, opts, resume)
    return fit(model, ds, out=out, epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed,
               resume=resume, quiet=quiet, objective=objective)


def _distillation(opts: MultiModalOptions):
    """(the student's options with the teacher's data, its rows with the ensemble's soft targets after each scene,
    the distillation loss)."""
    from dataclasses import replace

    import torch

    from ...data import Dataset
    from ...models.multimodal.student import distill_loss, soft_targets
    from ..registry import load as load_run

    teacher = load_run(opts.teacher)
    if teacher.options.model not in MAE:
        raise ValueError(f"--teacher {opts.teacher} is a {teacher.options.model} run, not an mm-mae")
    t = teacher.options
    opts = replace(opts, data=t.data, scenes=t.scenes, scene_noise=t.scene_noise, task=t.task,
                   test_fraction=t.test_fraction, seed=t.seed)
    ds = teacher.data
    rows = [torch.cat([x, soft_targets(teacher.model, x, opts.ensemble, t.seed)], 1) for x in (ds.x_train, ds.x_test)]
    return opts, Dataset(f"{ds.name} with the ensemble of {opts.teacher}", *rows), distill_loss


def load(run_dir: Path, opts: MultiModalOptions, data: str | None = None, raw: dict | None = None) -> Run:
    ds, layout, classes, size = load_scenes(opts, data)
    return Run(run_dir, FAMILY, opts, folder.trained(run_dir, make_model(opts, layout, classes, size), ds), ds)


def evaluate(run: Run, ensemble: int = 8, aggregate: str = "mean") -> dict:
    """mIoU of the task on the test scenes: one pass with every input, an ensemble of `ensemble` subsets a scene,
    and one pass with each fixed subset; the members' variance; each input modality's squared error (all inputs)."""
    from .scores import scores

    size = {"parameters": sum(p.numel() for p in run.model.parameters())}
    if run.options.model in STUDENT:  # it sees every input: one pass
        one = scores(run.model, run.data.x_test, 0, seed=run.options.seed)
        return {"data": run.data.name, **size, "teacher": run.options.teacher,
                **{k: v for k, v in one.items() if not k.startswith("squared_error")}}  # it reconstructs nothing
    return {"data": run.data.name, **size, **scores(run.model, run.data.x_test, ensemble, aggregate,
                                                    seed=run.options.seed)}


def report(run: Run):
    from .page import page

    return page(run, evaluate(run))


FAMILY = register(Family("multimodal", MODELS, MultiModalOptions, train=train, load=load, evaluate=evaluate,
                         report=report, flags={"evaluate": EnsembleFlags}, commands={"predict": PREDICT}))
