"""What a multi-modal run is measured by: the task's mIoU (torchmetrics' multiclass Jaccard index, macro over the
classes) for one pass with every input, for an ensemble over subsets, and for each fixed subset of the inputs."""
from __future__ import annotations

import itertools

import torch


def miou(probabilities: torch.Tensor, target: torch.Tensor, classes: int) -> float:
    """Mean over classes of |pred = c and target = c| / |pred = c or target = c| for class maps [B, H, W]
    (predictions: the argmax of probabilities [B, classes, H, W]); a class in neither map is left out."""
    from torchmetrics.functional.classification import multiclass_jaccard_index

    pred = probabilities.argmax(1)
    per = multiclass_jaccard_index(pred, target, classes, average="none")  # IoU_c for every class c
    present = torch.stack([((pred == c) | (target == c)).any() for c in range(classes)])
    return float(per[present].mean())


def scores(model, rows: torch.Tensor, ensemble: int, aggregate: str = "mean", seed: int = 0,
           batch: int = 256) -> dict:
    """The task's mIoU with every input; with ensemble > 0 also of the ensemble, its members' variance and the mIoU
    of each fixed subset of the inputs; each input modality's squared error (every input)."""
    c = model.config
    model.eval()
    g = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    inputs = [n for n, _ in c.inputs]
    subsets = [s for s in itertools.product((False, True), repeat=len(inputs)) if any(s)]
    one, ens, var, per, err = [], [], [], {s: [] for s in subsets}, {n: 0.0 for n in inputs}
    targets = []
    with torch.no_grad():
        for b in rows.split(batch):
            b = b.to(dev)
            x = model.split(b)
            targets.append(x[c.task][:, 0].long().cpu())
            out = model(x, model.all_inputs(len(b), dev))
            one.append(out[c.task].softmax(1).cpu())
            for n in inputs:
                err[n] += float((out[n] - x[n]).pow(2).mean()) * len(b)
            if not ensemble:
                continue
            p, v = model.ensemble(b, ensemble, g, aggregate)
            ens.append(p.cpu())
            var.append(v.mean((1, 2)).cpu())
            for s in subsets:
                keep = torch.tensor(s, device=dev).expand(len(b), -1)
                per[s].append(model(x, keep)[c.task].softmax(1).argmax(1).cpu())
    target = torch.cat(targets)
    one_hot = lambda labels: torch.nn.functional.one_hot(labels, c.classes).permute(0, 3, 1, 2)  # noqa: E731
    errors = {f"squared_error_{n}": e / len(rows) for n, e in err.items()}
    if not ensemble:
        return {"scenes": len(rows), "miou_all_inputs": miou(torch.cat(one), target, c.classes), **errors}
    return {"scenes": len(rows), "miou_all_inputs": miou(torch.cat(one), target, c.classes),
            f"miou_ensemble_{ensemble}": miou(torch.cat(ens), target, c.classes), "ensemble": ensemble,
            "aggregate": aggregate, "member_variance": float(torch.cat(var).mean()),
            "miou_by_subset": {"+".join(n for n, k in zip(inputs, s) if k): miou(one_hot(torch.cat(per[s])), target,
                                                                                   c.classes) for s in subsets},
            **errors}
