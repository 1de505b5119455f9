"""PHG-MAE's pieces: modality dropout's subset frequencies, the ensemble's log-loss (Jensen), the task never an input,
mIoU by hand, the procedural scenes, a user's .npz refused in one line, and the command line end to end."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from pages import says_each_thing_once
from varilab.cli import main
from varilab.data.scenes import CLASSES, MODALITIES, read_modalities, scenes
from varilab.families.multimodal.scores import miou
from varilab.models.multimodal.mae import MultiModalConfig, MultiModalMAE, mm_loss
from varilab.models.multimodal.masking import sample_subsets, subset_probabilities


@pytest.mark.parametrize("m, p_mask", [(3, 0.5), (4, 0.7), (2, 0.2)])
def test_subset_frequencies_match_the_renormalised_bernoulli_product(m, p_mask):
    n = 40_000
    keep = sample_subsets(n, m, p_mask, torch.Generator().manual_seed(m))
    assert keep.any(1).all()
    probs = subset_probabilities(m, p_mask)
    assert sum(probs.values()) == pytest.approx(1.0) and len(probs) == 2 ** m - 1
    codes = (keep.long() * (2 ** torch.arange(m))).sum(1)
    observed = torch.bincount(codes, minlength=2 ** m)[1:].numpy()  # code 0 (nothing kept) never occurs
    expected = [n * probs[tuple(bool(c >> i & 1) for i in range(m))] for c in range(1, 2 ** m)]
    assert stats.chisquare(observed, expected).pvalue > 0.001
    # a near miss is rejected at this size: an empty draw replaced by one modality at random (more singletons)
    alt = [n * ((1 - p_mask) ** bin(c).count("1") * p_mask ** (m - bin(c).count("1"))
                + (p_mask ** m / m if bin(c).count("1") == 1 else 0.0)) for c in range(1, 2 ** m)]
    if p_mask ** m > 0.05:
        assert stats.chisquare(observed, alt).pvalue < 1e-6


def _rows(n: int = 8, seed: int = 0):
    s = scenes(n, seed=seed)
    return torch.from_numpy(np.concatenate([s[k].reshape(n, -1) for k in MODALITIES], 1)), s


def _model(seed: int = 0, width: int = 4):
    torch.manual_seed(seed)
    return MultiModalMAE(MultiModalConfig(tuple(MODALITIES.items()), "semantic", len(CLASSES), (32, 32), width))


def test_the_ensembles_log_loss_is_at_most_its_members_mean_log_loss():
    """Jensen: -log mean_e p_e(y) <= mean_e -log p_e(y) at every pixel, so also on average."""
    model, (rows, s) = _model(width=8), _rows()
    with torch.no_grad():  # weights that make what a member sees change what it predicts
        for p in model.parameters():
            p.normal_(0.0, 0.3) if p.dim() > 1 else p.zero_()
    y = torch.from_numpy(s["semantic"][:, 0]).long()
    g = torch.Generator().manual_seed(0)
    x = model.split(rows)
    with torch.no_grad():
        members = torch.stack([model(x, sample_subsets(len(rows), 3, 0.5, g))["semantic"].log_softmax(1)
                               for _ in range(8)])  # log p_e, [E, B, K, H, W]
        p_hat, _ = model.ensemble(rows, 8, torch.Generator().manual_seed(0))
    log_at_y = members.gather(2, y[None, :, None].expand(8, -1, 1, -1, -1)).squeeze(2)  # log p_e(y) [E, B, H, W]
    ensemble_loss = -(log_at_y.logsumexp(0) - math.log(8))  # -log mean_e p_e(y)
    members_loss = -log_at_y.mean(0)
    assert (ensemble_loss <= members_loss + 1e-5).all()
    assert ensemble_loss.mean() < members_loss.mean() - 0.01  # strictly, where the members disagree
    # model.ensemble averages the same members (the same generator draws the same subsets)
    assert torch.allclose(p_hat, members.exp().mean(0), atol=1e-6)


def test_the_task_is_never_an_input_of_the_network():
    """The tensors the first convolution receives hold the kept inputs and their indicator planes only: changing
    the task's pixels changes nothing the network sees or predicts, in evaluation and in training."""
    model, (rows, _) = _model(), _rows()
    seen = []
    model.down[0][0].register_forward_hook(lambda mod, args, out: seen.append(args[0].clone()))
    other = rows.clone()
    h, w = 32, 32
    other[:, -h * w:] = torch.randint(0, 4, (len(rows), h * w)).float()  # the task's channel: last in a row
    with torch.no_grad():
        a, b = model.task_probabilities(rows), model.task_probabilities(other)
        p, _ = model.ensemble(rows, 4, torch.Generator().manual_seed(1))
        q, _ = model.ensemble(other, 4, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and torch.equal(p, q)
    assert all(t.shape[1] == 3 + 1 + 1 + 3 for t in seen)  # rgb, depth, edges and an indicator plane each
    assert torch.equal(seen[0], seen[1])
    torch.manual_seed(3)
    mm_loss(model, rows)
    torch.manual_seed(3)
    mm_loss(model, other)
    assert torch.equal(seen[-2], seen[-1])


def test_miou_equals_a_hand_computation():
    target = torch.tensor([[[0, 0, 1], [1, 2, 2]]])
    pred = torch.tensor([[[0, 1, 1], [1, 2, 0]]])
    probs = torch.nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float()
    # class 0: |{(0,0)}| / |{(0,0), (0,1), (1,2)}| = 1/3; class 1: 2/3; class 2: 1/2; class 3 in neither: left out
    assert miou(probs, target, 4) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_scenes_are_seeded_and_their_modalities_agree():
    a, b, c = scenes(20, seed=1), scenes(20, seed=1), scenes(20, seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in MODALITIES) and not np.array_equal(a["rgb"], c["rgb"])
    sem, depth = a["semantic"][:, 0], a["depth"][:, 0]
    assert set(np.unique(sem)) <= set(range(len(CLASSES))) and (sem > 0).any()
    assert np.array_equal(depth < 1, sem > 0)  # a shape's pixels have its depth, the background depth 1
    assert np.all(a["edges"][:, 0][:, 1:][sem[:, 1:] != sem[:, :-1]] == 1)  # a class boundary is an edge


def test_noisy_scenes_are_the_clean_scenes_with_expert_like_inputs_and_an_exact_task():
    clean, noisy = scenes(40, seed=3), scenes(40, seed=3, noise=0.2)
    assert np.array_equal(clean["semantic"], noisy["semantic"])
    for name in ("rgb", "depth"):  # Gaussian noise of the scale asked for (rgb's own 0.02 and its clipping aside)
        assert np.std(noisy[name] - clean[name]) == pytest.approx(0.2, rel=0.05)
    flipped = np.mean(noisy["edges"] != clean["edges"])
    assert flipped == pytest.approx(0.1, abs=0.01) and set(np.unique(noisy["edges"])) == {0.0, 1.0}


def test_a_users_npz_is_refused_in_one_line_each(tmp_path):
    good = {"image": np.zeros((4, 3, 8, 8)), "label": np.zeros((4, 8, 8))}
    cases = {"missing": ({"image": good["image"]}, "task modality 'label' is missing"),
             "size": ({**good, "depth": np.zeros((4, 1, 9, 8))}, "modality 'depth' is 4 x 9 x 8"),
             "nan": ({**good, "image": np.full((4, 3, 8, 8), np.nan)}, "NaN"),
             "classes": ({**good, "label": np.full((4, 8, 8), 0.5)}, "class indices")}
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(ValueError, match=message):
            read_modalities(tmp_path / f"{name}.npz", "label")
    np.savez(tmp_path / "good.npz", **good)
    assert read_modalities(tmp_path / "good.npz", "label")["label"].shape == (4, 1, 8, 8)


def test_train_and_eval_on_scenes_and_on_a_users_npz(tmp_path, capsys):
    import json

    assert main(["train", "--model", "mm-mae", "--scenes", "60", "--epochs", "1", "--width", "4", "--out",
                 str(tmp_path / "mm"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "mm"), "--ensemble", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["scenes"] == 12 and r["ensemble"] == 3 and 0 <= r["miou_ensemble_3"] <= 1
    subsets = [s for s in itertools.product((0, 1), repeat=3) if any(s)]
    assert len(r["miou_by_subset"]) == len(subsets) and "rgb+depth+edges" in r["miou_by_subset"]
    assert r["miou_by_subset"]["rgb+depth+edges"] == r["miou_all_inputs"]
    s = scenes(30, seed=5)
    np.savez(tmp_path / "mine.npz", photo=s["rgb"], label=s["semantic"][:, 0])
    assert main(["train", "--model", "mm-mae", "--data", str(tmp_path / "mine.npz"), "--task", "label", "--epochs",
                 "1", "--width", "4", "--out", str(tmp_path / "mine"), "--quiet"]) == 0
    assert main(["train", "--model", "mm-mae", "--data", str(tmp_path / "mine.npz"), "--task", "depth", "--out",
                 str(tmp_path / "bad"), "--quiet"]) == 2
    assert "task modality 'depth' is missing" in capsys.readouterr().err
    assert math.isfinite(r["member_variance"])


def test_distillation_loss_is_the_cross_entropy_to_the_soft_targets():
    from varilab.models.multimodal.student import distill_loss

    model, (rows, _) = _model(), _rows(2)
    target = torch.softmax(torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0)), 1)
    with torch.no_grad():
        t = distill_loss(model, torch.cat([rows, target.reshape(2, -1)], 1))
        logp = model(model.split(rows), model.all_inputs(2))["semantic"].log_softmax(1)
    by_hand = sum(-(target[b, :, i, j] * logp[b, :, i, j]).sum() for b in range(2) for i in range(32)
                  for j in range(32)) / (2 * 32 * 32)
    assert t["loss"].item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_a_student_learns_from_an_mm_mae_run_and_refuses_anything_else(tmp_path, capsys):
    import json

    assert main(["train", "--model", "mm-mae", "--scenes", "40", "--epochs", "1", "--width", "4", "--out",
                 str(tmp_path / "teacher"), "--quiet"]) == 0
    assert main(["train", "--model", "mm-student", "--teacher", str(tmp_path / "teacher"), "--ensemble", "2",
                 "--epochs", "1", "--width", "2", "--out", str(tmp_path / "student"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "student"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["teacher"] == str(tmp_path / "teacher") and r["scenes"] == 8 and 0 <= r["miou_all_inputs"] <= 1
    assert r["parameters"] < 5_000 and not any(k.startswith("squared_error") for k in r)
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["scenes"] == 40  # the teacher's data, whatever the student's own options said
    assert main(["train", "--model", "mm-student", "--teacher", str(tmp_path / "student"), "--out",
                 str(tmp_path / "s2"), "--quiet"]) == 2
    assert "not an mm-mae" in capsys.readouterr().err


def test_predict_writes_probabilities_never_feeds_the_task_and_refuses_a_file_without_an_input(tmp_path, capsys):
    import json

    assert main(["train", "--model", "mm-mae", "--scenes", "30", "--epochs", "1", "--width", "4", "--out",
                 str(tmp_path / "mm"), "--quiet"]) == 0
    s = scenes(6, seed=3)
    np.savez(tmp_path / "with.npz", **s)
    np.savez(tmp_path / "without.npz", rgb=s["rgb"], depth=s["depth"], edges=s["edges"])
    np.savez(tmp_path / "short.npz", rgb=s["rgb"], depth=s["depth"])
    outs = []
    for name in ("with", "without"):
        capsys.readouterr()
        assert main(["predict", str(tmp_path / "mm"), "--input", str(tmp_path / f"{name}.npz"), "--ensemble", "3",
                     "--out", str(tmp_path / f"p-{name}.npz"), "--json"]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert "miou" in outs[0] and "miou" not in outs[1] and outs[0]["scenes"] == 6
    with np.load(tmp_path / "p-with.npz") as a, np.load(tmp_path / "p-without.npz") as b:
        assert a["probabilities"].shape == (6, 4, 32, 32) and a["classes"].shape == a["variance"].shape == (6, 32, 32)
        np.testing.assert_allclose(a["probabilities"].sum(1), 1.0, rtol=1e-5)
        assert np.array_equal(a["probabilities"], b["probabilities"])  # the task's pixels changed nothing
    assert main(["predict", str(tmp_path / "mm"), "--input", str(tmp_path / "short.npz")]) == 2
    assert "input modality 'edges' is missing" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "mm"), "--input", str(tmp_path / "with.npz"), "--out",
                 str(tmp_path / "p-with.npz")]) == 2
    assert "--force" in capsys.readouterr().err


def test_the_report_shows_subsets_the_ensemble_size_and_scenes(tmp_path):
    assert main(["train", "--model", "mm-mae", "--scenes", "30", "--epochs", "1", "--width", "2", "--out",
                 str(tmp_path / "mm"), "--quiet"]) == 0
    assert main(["report", str(tmp_path / "mm")]) == 0
    text = (tmp_path / "mm" / "report.html").read_text()
    says_each_thing_once(text)
    for title in ("By subset of the inputs", "Ensemble size", "Test scenes", "mIoU, rgb+depth+edges"):
        assert title in text
    assert text.count("data:image/png;base64,") >= 4  # the bars, the curve, the scenes and a training curve
    assert main(["train", "--model", "mm-student", "--teacher", str(tmp_path / "mm"), "--ensemble", "2", "--epochs",
                 "1", "--width", "2", "--out", str(tmp_path / "student"), "--quiet"]) == 0
    assert main(["report", str(tmp_path / "student")]) == 0
    assert "distilled from" in (tmp_path / "student" / "report.html").read_text()
    says_each_thing_once((tmp_path / "student" / "report.html").read_text())
