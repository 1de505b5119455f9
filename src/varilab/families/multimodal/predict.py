"""`varilab predict RUN --ensemble E [--input SCENES.npz] [--out P.npz]`: the task's class probabilities of new
scenes from a multi-modal run, as an ensemble over E subsets of the inputs (a student: one pass with every input).
The input names the run's input modalities; a task modality in it is never fed to the network, only scored."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from ..options import any_seed, option, positive_int
from ..protocol import Command, Run


@dataclass
class EnsembleFlags:
    """`varilab eval`'s flags of a multi-modal run (and `varilab predict`'s, which adds its own)."""
    ensemble: int = option(8, "members of the inference ensemble: subsets of the inputs drawn per scene (a student: "
                           "one pass)", check=positive_int.upto(1024))
    aggregate: str = option("mean", "how members' class probabilities are combined", choices=("mean", "median"))


@dataclass
class PredictOptions(EnsembleFlags):
    input: str | None = option(None, "scenes to predict: a .npz with the run's input modalities by name, [N, C, H, W] "
                               "(a task modality in it is only scored); default: the run's test scenes")
    out: str | None = option(None, "save probabilities [N, classes, H, W], classes [N, H, W] and the members' "
                             "variance [N, H, W] to this .npz")
    seed: int = option(0, "random seed of the subsets", check=any_seed)


def rows_of(run: Run, path: str):
    """The scenes of a .npz as the run's rows (the task's channels zero when the file lacks them), and whether the
    file held the task."""
    import numpy as np
    import torch

    from ...data.scenes import check_modalities

    c = run.model.config
    if not Path(path).is_file():
        raise FileNotFoundError(f"--input {path}: no such file")
    with np.load(path, allow_pickle=False) as f:
        arrays = {name: np.asarray(f[name], np.float32) for name in f.files}
    arrays = check_modalities(arrays, f"--input {path}")
    n = len(next(iter(arrays.values())))
    parts, has_task = [], c.task in arrays
    for name, ch in c.modalities:
        a = arrays.get(name)
        if a is None and name != c.task:
            raise ValueError(f"--input {path}: the run's input modality {name!r} is missing; it holds "
                             f"{', '.join(sorted(arrays))}")
        a = np.zeros((n, ch, *c.size), np.float32) if a is None else a
        if a.shape[1:] != (ch, *c.size):
            raise ValueError(f"--input {path}: modality {name!r} is {a.shape[1]} x {a.shape[2]} x {a.shape[3]} "
                             f"(C x H x W); the run's is {ch} x {c.size[0]} x {c.size[1]}")
        parts.append(a.reshape(n, -1))
    return torch.from_numpy(np.concatenate(parts, 1)), has_task


def predict(run: Run, opts: PredictOptions) -> tuple[dict, list[str]]:
    import numpy as np
    import torch

    from ...checkpoint import atomic_write
    from .scores import miou

    model, c = run.model.eval(), run.model.config
    if opts.out is not None and Path(opts.out).suffix != ".npz":
        raise ValueError(f"--out must be a .npz file, got {opts.out}")
    rows, has_task = (run.data.x_test, True) if opts.input is None else rows_of(run, opts.input)
    members = 1 if run.options.model == "mm-student" else opts.ensemble
    g = torch.Generator().manual_seed(opts.seed)
    dev = next(model.parameters()).device
    probs, var = [], []
    with torch.no_grad():
        for b in rows.split(256):
            b = b.to(dev)
            if members == 1:
                p, v = model.task_probabilities(b), torch.zeros(len(b), *c.size, device=dev)
            else:
                p, v = model.ensemble(b, members, g, opts.aggregate)
            probs.append(p.cpu())
            var.append(v.cpu())
    p, v = torch.cat(probs), torch.cat(var)
    result = {"scenes": len(rows), "ensemble": members, "aggregate": opts.aggregate,
              "member_variance": float(v.mean())}
    if has_task:
        target = model.split(rows)[c.task][:, 0].long()
        result["miou"] = miou(p, target, c.classes)
    if opts.out is not None:
        buffer = io.BytesIO()
        np.savez(buffer, probabilities=p.numpy(), classes=p.argmax(1).numpy(), variance=v.numpy())
        atomic_write(Path(opts.out), buffer.getvalue())
        result["out"] = opts.out
    lines = [f"{len(rows)} scenes, {'one pass' if members == 1 else f'an ensemble of {members} subsets'}"
             + (f": mIoU {result['miou']:.4f}" if has_task else "") + f", members' variance {result['member_variance']:.5f}"]
    if opts.out is not None:
        lines.append(f"wrote {opts.out}")
    return result, lines


PREDICT = Command("predict the task of new scenes by an ensemble over subsets of their modalities", PredictOptions,
                  predict, about_run="the multi-modal run (varilab train --model mm-mae or mm-student)",
                  writes_file=True)
