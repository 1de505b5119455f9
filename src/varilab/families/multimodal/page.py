"""A multi-modal run's page: mIoU by subset of the inputs beside the ensemble's, mIoU against the ensemble's size,
test scenes with the truth, the ensemble's prediction and the members' variance, and the metrics."""
from __future__ import annotations

SHOWN = 4  # test scenes in the figure
SIZES = (1, 2, 4, 8, 16)  # ensemble sizes of the curve
CURVE_SCENES = 200  # test scenes the curve is measured on
TEST = {"scenes": "test scenes"}  # eval's count of the scenes it scored, not --scenes (every scene made)


def scenes_figure(rgb, truth, prediction, variance, classes: int) -> bytes:
    """A column per scene: its rgb, the task's truth, the prediction and the members' variance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...report.plots import png

    rows = (("rgb", None), ("truth", "tab10"), ("prediction", "tab10"), ("members' variance", "magma"))
    fig, axes = plt.subplots(len(rows), len(rgb), figsize=(1.7 * len(rgb), 1.75 * len(rows)), squeeze=False)
    for j in range(len(rgb)):
        shown = (rgb[j].transpose(1, 2, 0).clip(0, 1), truth[j], prediction[j], variance[j])
        for i, ((label, cmap), image) in enumerate(zip(rows, shown)):
            ax = axes[i, j]
            ax.imshow(image, cmap=cmap, vmin=0 if cmap == "tab10" else None,
                      vmax=9 if cmap == "tab10" else None, interpolation="nearest")
            ax.set(xticks=[], yticks=[])
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return png(fig)


def size_curve(model, rows, seed: int) -> dict[int, float]:
    """mIoU of the ensemble of each size in SIZES on the first CURVE_SCENES rows."""
    import torch

    from .scores import miou

    rows = rows[:CURVE_SCENES].to(next(model.parameters()).device)
    target = model.split(rows)[model.config.task][:, 0].long()
    out = {}
    with torch.no_grad():
        for e in SIZES:
            p, _ = model.ensemble(rows, e, torch.Generator().manual_seed(seed))
            out[e] = miou(p, target, model.config.classes)
    return out


def page(run, e: dict):
    import torch

    from ...report import Page, Section, img, metrics_table
    from ...report.plots import grouped_bars, xy_curves

    model, c = run.model.eval(), run.model.config
    rows = run.data.x_test[:SHOWN].to(next(model.parameters()).device)
    x = model.split(rows)
    student = run.options.model == "mm-student"
    with torch.no_grad():
        if student:
            p, v = model.task_probabilities(rows), torch.zeros(len(rows), *c.size)
        else:
            p, v = model.ensemble(rows, e["ensemble"], torch.Generator().manual_seed(run.options.seed))
    rgb = x[c.inputs[0][0]][:, :3].cpu().numpy() if c.inputs[0][1] >= 3 else x[c.inputs[0][0]][:, :1].repeat(
        1, 3, 1, 1).cpu().numpy()
    figure = scenes_figure(rgb, x[c.task][:, 0].cpu().numpy(), p.argmax(1).cpu().numpy(), v.cpu().numpy(), c.classes)
    metrics = [(k, v) for k, v in e.items() if not isinstance(v, dict)]
    if student:
        verdict = (f"A student of {e['parameters']:,} parameters distilled from {run.options.teacher}: mIoU "
                   f"{e['miou_all_inputs']:.4f} on {e['scenes']} test scenes of {run.data.name}, from every input.")
        sections = [Section("Test scenes", img(figure, "scenes, truth and prediction"), "the student's prediction")]
        return Page(f"mm-student on {run.data.name}", verdict, sections + [Section("Final metrics", metrics_table(metrics, run.settings, TEST))],
                    ["loss", "agreement"])
    E = e["ensemble"]
    verdict = (f"On {e['scenes']} test scenes ({run.data.name}): mIoU {e['miou_all_inputs']:.4f} from one pass with "
               f"every input, {e[f'miou_ensemble_{E}']:.4f} from an ensemble of {E} subsets of the inputs; the members' "
               f"variance {e['member_variance']:.5f}.")
    subsets = e["miou_by_subset"]
    bars = grouped_bars([("mIoU of one pass from each subset of the inputs (dashed: the ensemble)", list(subsets),
                          {"mIoU": list(subsets.values())}, e[f"miou_ensemble_{E}"])])
    curve = size_curve(model, run.data.x_test, run.options.seed)
    sizes = xy_curves([("mIoU against the ensemble's size", "members E", "mIoU",
                        {"ensemble": (list(curve), list(curve.values())),
                         "every input, one pass": ([1], [e["miou_all_inputs"]])})])
    sections = [Section("By subset of the inputs", img(bars, "mIoU by subset"),
                        "a gain from the ensemble means little if the subsets without some modality are ignored"),
                Section("Ensemble size", img(sizes, "mIoU against E"), f"on the first {CURVE_SCENES} test scenes"),
                Section("Test scenes", img(figure, "scenes, truth, prediction and variance"),
                        f"the ensemble of {E}; the variance of the members' class probabilities, averaged over classes"),
                Section("Final metrics", metrics_table(metrics + [(f"mIoU, {k}", v) for k, v in subsets.items()],
                                                      run.settings, TEST))]
    return Page(f"mm-mae on {run.data.name}", verdict, sections, ["loss", "pixel_accuracy", "loss_semantic"]
                if c.task == "semantic" else ["loss", "pixel_accuracy"])
