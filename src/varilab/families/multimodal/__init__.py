"""The multi-modal family: PHG-MAE's masked autoencoder over modalities (`mm-mae`, papers.md section 11), trained on
procedural scenes (rgb, depth, edges and a semantic mask as the task) or a user's `.npz` of named modalities.

    varilab train --model mm-mae --out runs/mm
    varilab eval runs/mm --ensemble 8 --json     # mIoU of one all-inputs pass, of an ensemble of 8 subsets, by subset
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import folder
from ..options import TrainOptions, option, positive_int
from ..ranges import between
from ..protocol import Family, Run
from ..registry import register

MODELS = {"mm-mae": "a convolutional masked autoencoder over modalities: each training pass keeps a random subset of "
                    "the input modalities and predicts them all and the task; at inference an ensemble over subsets"}


@dataclass
class MultiModalOptions(TrainOptions):
    DEFAULTS = {"data": "scenes", "epochs": 40, "batch_size": 64, "lr": 1e-3, "test_fraction": 0.2}
    HELP = {"data": "scenes (procedural 32 x 32 scenes: rgb, depth, edges, and a semantic mask as the task) or a .npz "
                    "of named modalities [N, C, H, W] of one spatial size"}
    model: str = option("mm-mae", "the model", choices=MODELS)
    scenes: int = option(3000, "procedural scenes made (with --data scenes)", check=positive_int.upto(1_000_000))
    task: str = option("semantic", "the modality to predict: one channel of class indices, never an input")
    p_mask: float = option(0.5, "probability that an input modality is dropped in a training pass (at least one is "
                           "kept)", check=between(0, 1, open_hi=True))
    width: int = option(24, "channels of the network's first block (then 2x and 4x)", check=positive_int.upto(1024))


@dataclass
class EnsembleFlags:
    """`varilab eval`'s flags of a multi-modal run."""
    ensemble: int = option(8, "members of the inference ensemble: subsets of the inputs drawn per scene",
                           check=positive_int.upto(1024))
    aggregate: str = option("mean", "how members' class probabilities are combined", choices=("mean", "median"))


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
        arrays, classes = sc.scenes(opts.scenes, seed=opts.seed), len(sc.CLASSES)
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
    return MultiModalMAE(MultiModalConfig(layout, opts.task, classes, size, opts.width, opts.p_mask))


def train(opts: MultiModalOptions, out: Path, resume: bool = False, quiet: bool = False) -> list[dict]:
    import sys

    from ...models.multimodal.mae import mm_loss
    from ...train import fit

    ds, layout, classes, size = load_scenes(opts)
    model = make_model(opts, layout, classes, size)
    print(f"{ds.summary()}; modalities {', '.join(f'{n} ({c})' for n, c in layout)}, task {opts.task} "
          f"({classes} classes)", file=sys.stderr)
    folder.begin(out, FAMILY, opts, resume)
    return fit(model, ds, out=out, epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed,
               resume=resume, quiet=quiet, objective=mm_loss)


def load(run_dir: Path, opts: MultiModalOptions, data: str | None = None, raw: dict | None = None) -> Run:
    ds, layout, classes, size = load_scenes(opts, data)
    return Run(run_dir, FAMILY, opts, folder.trained(run_dir, make_model(opts, layout, classes, size), ds), ds)


def evaluate(run: Run, ensemble: int = 8, aggregate: str = "mean") -> dict:
    """mIoU of the task on the test scenes: one pass with every input, an ensemble of `ensemble` subsets a scene,
    and one pass with each fixed subset; the members' variance; each input modality's squared error (all inputs)."""
    from .scores import scores

    return {"data": run.data.name, **scores(run.model, run.data.x_test, ensemble, aggregate, seed=run.options.seed)}


FAMILY = register(Family("multimodal", MODELS, MultiModalOptions, train=train, load=load, evaluate=evaluate,
                         flags={"evaluate": EnsembleFlags}))
