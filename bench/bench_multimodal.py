"""PHG-MAE (CPU): scenes per second of an mm-mae's one pass with every input, of its ensemble of 8 subsets and of a
student (width 10, under 50,000 parameters), on procedural 32 x 32 scenes in batches of 256; and one training step of
`varilab.models.multimodal.mae.mm_loss` (modality dropout, every modality's loss, Adam) against the same step written
out by hand in plain PyTorch around the same network. Before timing, from the same weights and random numbers, the two
steps must give the same losses. Contenders alternate (ABBA) after a warm-up. --quick: fewer scenes and steps. Run
alone: `python bench/bench_multimodal.py [--quick]`."""
from __future__ import annotations

import copy
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import timing  # bench/timing.py

FULL = {"scenes": 1024, "rounds": 6, "steps": 40}
QUICK = {"scenes": 64, "rounds": 2, "steps": 4}


def _models():
    from varilab.data.scenes import CLASSES, MODALITIES
    from varilab.models.multimodal.mae import MultiModalConfig, MultiModalMAE

    torch.manual_seed(0)
    layout = tuple(MODALITIES.items())
    mae = MultiModalMAE(MultiModalConfig(layout, "semantic", len(CLASSES), (32, 32), 24))
    student = MultiModalMAE(MultiModalConfig(layout, "semantic", len(CLASSES), (32, 32), 10, 0.0))
    return mae.eval(), student.eval()


def _rows(n: int, seed: int = 0) -> torch.Tensor:
    from varilab.data.scenes import MODALITIES, scenes

    s = scenes(n, seed=seed)
    return torch.from_numpy(np.concatenate([s[k].reshape(n, -1) for k in MODALITIES], 1))


def _hand_loss(model, rows):
    """mm_loss written out: split the row, keep each input with probability 1 - p (a draw of none drawn again),
    squared error per input pixel plus cross-entropy per task pixel."""
    b, hw = len(rows), 32 * 32
    rgb, depth, edges, sem = rows[:, :3 * hw], rows[:, 3 * hw:4 * hw], rows[:, 4 * hw:5 * hw], rows[:, 5 * hw:]
    x = {"rgb": rgb.reshape(b, 3, 32, 32), "depth": depth.reshape(b, 1, 32, 32), "edges": edges.reshape(b, 1, 32, 32)}
    keep = torch.rand(b, 3) >= 0.5
    empty = ~keep.any(1)
    while empty.any():
        keep[empty] = torch.rand(int(empty.sum()), 3) >= 0.5
        empty = ~keep.any(1)
    out = model({**x, "semantic": sem.reshape(b, 1, 32, 32)}, keep)
    target = sem.reshape(b, 32, 32).long()
    loss = sum(F.mse_loss(out[k], v) for k, v in x.items()) + F.cross_entropy(out["semantic"], target)
    return loss


def _lib_loss(model, rows):
    from varilab.models.multimodal.mae import mm_loss

    return mm_loss(model, rows)["loss"]


def _stepper(model, loss_fn, rows):
    model = copy.deepcopy(model).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def step(n: int):
        out = []
        for _ in range(n):
            loss = loss_fn(model, rows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            out.append(loss.item())
        return out
    return step


def run(quick: bool) -> dict:
    plan = QUICK if quick else FULL
    t_start, threads = time.perf_counter(), torch.get_num_threads()
    mae, student = _models()
    rows = _rows(plan["scenes"])
    n = len(rows)

    def passes(fn):
        def call(_):
            with torch.no_grad():
                for b in rows.split(256):
                    fn(b)
        return call
    g = torch.Generator().manual_seed(0)
    fns = {("predict", "one pass"): passes(lambda b: mae.task_probabilities(b)),
           ("predict", "ensemble of 8"): passes(lambda b: mae.ensemble(b, 8, g)),
           ("predict", "student"): passes(lambda b: student.task_probabilities(b))}
    (times, other_busy) = timing.other_cpu_busy(lambda: timing.abba(fns, None, None, plan["rounds"], n))
    rows_p, ratios = timing.per_group(times, ("predict",), baseline="one pass")
    batch = _rows(64, seed=1)
    checks = []
    for fn in (_lib_loss, _hand_loss):
        torch.manual_seed(3)
        checks.append(_stepper(mae, fn, batch)(3))
    same = all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(*checks))
    lib, hand = _stepper(mae, _lib_loss, batch), _stepper(mae, _hand_loss, batch)
    step_times = timing.abba({("training step", "varilab"): lambda k: lib(k),
                              ("training step", "plain PyTorch"): lambda k: hand(k)},
                             plan["steps"], 1, plan["rounds"], plan["steps"])
    rows_s, step_ratios = timing.per_group(step_times, ("training step",))
    per_s = {r["name"]: 1.0 / r["median_s"] for r in rows_p}
    print(f"[bench] multimodal: scenes/s one pass {per_s['predict / one pass']:.0f}, E=8 "
          f"{per_s['predict / ensemble of 8']:.0f}, student {per_s['predict / student']:.0f}; step varilab / plain "
          f"{step_ratios['training step / varilab']:.3f}", file=sys.stderr)
    return {
        "title": "PHG-MAE: scenes per second of one pass, an ensemble of 8 and a student; a training step (CPU)",
        "description": " ".join(__doc__.split("\n\n")[0].split()),
        "unit": "s",
        "baseline": "predict / one pass, and training step / plain PyTorch",
        "baselines": ["predict / one pass", "training step / plain PyTorch"],
        "contenders": rows_p + rows_s,
        "notes": [f"Seconds per scene for prediction ({n:,} scenes, batches of 256): "
                  + ", ".join(f"{k.split(' / ')[1]} {v:,.0f} scenes/s" for k, v in per_s.items())
                  + "; seconds per step for training (a batch of 64 scenes).",
                  "Equal work: from the same weights and random numbers the first three steps' losses are "
                  + ", ".join(f"{a:.6g}" for a in checks[0]) + " through varilab and "
                  + ", ".join(f"{b:.6g}" for b in checks[1]) + " by hand: "
                  + ("they agree (relative tolerance 1e-5)." if same else "**they do not agree**.")],
        "checks": {"other_cpu_busy_while_timing": other_busy,
                   "equal_work_steps": {"losses_varilab": checks[0], "losses_plain": checks[1], "ok": same}},
        "settings": {**plan, "threads": threads},
        "seconds": time.perf_counter() - t_start,
    }


if __name__ == "__main__":
    timing.main(__doc__, run)
