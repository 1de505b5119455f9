"""Training a robust-family run on a given data set (the family's `train`, and `varilab unlearn --method retrain` on
the remaining rows), and the record of which rows of the data a classifier trained on."""
from __future__ import annotations

from pathlib import Path

from .. import folder, registry

TRAIN_ROWS = "train_rows.npy"  # a classifier run's training rows: indices into the data as given, in training order


def make_model(opts, ds):
    import torch

    from ...models.robust.classifier import Classifier
    from ...models.robust.purifier import Purifier, PurifierConfig

    torch.manual_seed(opts.seed)
    if opts.model == "classifier":
        return Classifier(ds.image_shape, ds.c_train.shape[1], opts.width)
    return Purifier(PurifierConfig(ds.x_dim, opts.latent_dim, tuple(opts.hidden), opts.levels, opts.radius,
                                   opts.input_noise, opts.lipschitz))


def fit_run(opts, ds, out: Path, resume: bool = False, quiet: bool = False, rows=None) -> list[dict]:
    """Train the run's model on ds into `out`; a classifier records which rows of the data it trained on
    (TRAIN_ROWS: `rows`, else the split's), so that `varilab unlearn` can name them."""
    import sys

    from ...models.robust.classifier import classifier_loss
    from ...train import fit

    if not quiet:
        print(ds.summary(), file=sys.stderr)
    model = make_model(opts, ds)
    folder.begin(out, registry.family_of(opts.model), opts, resume)
    if opts.model == "classifier" and not resume:
        write_rows(out / TRAIN_ROWS, ds.train_rows if rows is None else rows)
    return fit(model, ds, out=out, epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed,
               resume=resume, quiet=quiet, objective=classifier_loss if opts.model == "classifier" else None,
               beta=opts.beta if opts.model == "purifier" else 1.0)


def write_rows(path: Path, rows) -> None:
    """Row indices [N] as an int64 .npy file, written atomically."""
    import io

    import numpy as np

    from ...checkpoint import atomic_write

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(rows, dtype=np.int64))
    atomic_write(path, buffer.getvalue())
