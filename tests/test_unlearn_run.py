"""`varilab unlearn`: what --forget may name (one line and exit 2 for anything else), the runs it writes (every
command takes them), retraining that reproduces the run when nothing is forgotten, and the rule that no forgotten
row enters a step on the remaining rows."""
import html
import json

import numpy as np
import pytest
import torch

from pages import says_each_thing_once
from varilab.cli import main
from varilab.families import registry
from varilab.families.robust.forget import forget_rows
from varilab.models.unlearning import baselines
from varilab.models.unlearning.split import Split

METHODS = ("retrain", "laf", "finetune", "ascent", "random-labels")


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    root = tmp_path_factory.mktemp("unlearn")
    assert main(["train", "--model", "classifier", "--data", "digits", "--width", "8", "--epochs", "3",
                 "--out", str(root / "clf"), "--quiet"]) == 0
    return root / "clf"


def refused(capsys, *argv) -> str:
    assert main(["unlearn", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_bad_forget_sets_are_one_line_and_exit_2(clf, tmp_path, capsys):
    out = tmp_path / "u"
    assert "no class 12" in refused(capsys, clf, "--forget", "class:12", "--out", out)
    assert "share must lie in (0, 1)" in refused(capsys, clf, "--forget", "random:1.5", "--out", out)
    assert "share must lie in (0, 1)" in refused(capsys, clf, "--forget", "random:0", "--out", out)
    assert "expected class:K" in refused(capsys, clf, "--forget", "rows:3", "--out", out)
    rows = np.load(clf / "train_rows.npy")
    np.save(tmp_path / "twice.npy", np.array([rows[0], rows[1], rows[0]]))
    assert f"row {rows[0]} is listed 2 times" in refused(capsys, clf, "--forget", f"indices:{tmp_path / 'twice.npy'}",
                                                        "--out", out)
    np.save(tmp_path / "far.npy", np.array([rows[0], 10**6]))
    assert "beyond the last training row" in refused(capsys, clf, "--forget", f"indices:{tmp_path / 'far.npy'}",
                                                    "--out", out)
    test_row = sorted(set(range(1797)) - set(rows.tolist()))[0]
    np.save(tmp_path / "test.npy", np.array([test_row]))
    assert "a test row" in refused(capsys, clf, "--forget", f"indices:{tmp_path / 'test.npy'}", "--out", out)
    np.save(tmp_path / "neg.npy", np.array([-1]))
    assert "negative" in refused(capsys, clf, "--forget", f"indices:{tmp_path / 'neg.npy'}", "--out", out)
    np.save(tmp_path / "float.npy", np.array([0.5]))
    assert "integer row indices" in refused(capsys, clf, "--forget", f"indices:{tmp_path / 'float.npy'}", "--out", out)
    assert "must be given" in refused(capsys, clf, "--out", out)
    assert "is the run that" in refused(capsys, clf, "--forget", "class:0", "--out", clf)
    assert not out.exists() or not any(out.iterdir())


def test_a_run_that_is_not_a_classifier_is_refused(tmp_path, capsys):
    assert main(["train", "--model", "purifier", "--data", "digits", "--epochs", "1", "--hidden", "16",
                 "--latent-dim", "2", "--out", str(tmp_path / "p"), "--quiet"]) == 0
    assert "takes a classifier run" in refused(capsys, tmp_path / "p", "--forget", "class:0", "--out", tmp_path / "u")


def test_forget_rows_name_training_positions():
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    rows = torch.tensor([9, 3, 5, 0, 7, 1, 4])  # each training row's index in the data as given
    pos, what, k = forget_rows("class:0", y, torch.tensor([1, 2]), rows, 0)
    assert pos.tolist() == [0, 3, 6] and k == 0 and "(3)" in what
    pos, _, k = forget_rows("random:0.3", y, y, rows, 0)
    assert len(pos) == 2 and k is None and torch.equal(pos, forget_rows("random:0.3", y, y, rows, 0)[0])
    assert pos.unique().numel() == 2 and pos.max() < 7
    many = torch.arange(1000) % 3
    a, b = (forget_rows("random:0.1", many, many, torch.arange(1000), seed)[0] for seed in (0, 1))
    assert len(a) == len(b) == 100 and not torch.equal(a, b)  # the seed draws the rows


def test_indices_are_rows_of_the_data_as_given(tmp_path):
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    rows = torch.tensor([9, 3, 5, 0, 7, 1, 4])
    np.save(tmp_path / "f.npy", np.array([7, 9]))
    pos, _, _ = forget_rows(f"indices:{tmp_path / 'f.npy'}", y, y, rows, 0)
    assert pos.tolist() == [0, 4]  # data rows 9 and 7 sit at training positions 0 and 4


@pytest.mark.parametrize("method", ["finetune", "ascent", "random-labels"])
def test_no_forgotten_row_enters_a_step_on_the_remaining_rows(method):
    torch.manual_seed(0)
    x, y = torch.rand(90, 64), torch.randint(0, 3, (90,))
    record = []
    split = Split(x, y, torch.arange(0, 90, 7), record=record)
    model = torch.nn.Sequential(torch.nn.Linear(64, 3))
    fn = {"finetune": baselines.finetune, "ascent": baselines.ascent, "random-labels": baselines.random_labels}[method]
    fn(model, split, baselines.BaselineConfig(epochs=2, batch_size=16))
    forgotten = set(split.forget.tolist())
    kinds = {kind for kind, _ in record}
    assert record and kinds == {"finetune": {"remaining"}, "ascent": {"forgotten"},
                                "random-labels": {"remaining", "forgotten"}}[method]
    for kind, rows in record:
        assert (set(rows.tolist()) <= forgotten) if kind == "forgotten" else not set(rows.tolist()) & forgotten
    if method == "finetune":  # every remaining row, each epoch once
        seen = torch.cat([r for _, r in record])
        assert sorted(seen.tolist()) == sorted(split.remain.tolist() * 2)


def test_random_labels_are_always_wrong_and_spread_over_the_other_classes():
    torch.manual_seed(0)
    x, y = torch.rand(40, 8), torch.randint(0, 4, (40,))
    split = Split(x, y, torch.arange(10))
    model = torch.nn.Linear(8, 4)
    seen = []
    real = torch.nn.functional.cross_entropy

    def spy(logits, target, **kw):
        seen.append(target.clone())
        return real(logits, target, **kw)
    torch.nn.functional.cross_entropy, saved = spy, real
    try:
        baselines.random_labels(model, split, baselines.BaselineConfig(epochs=30, batch_size=8), classes=4)
    finally:
        torch.nn.functional.cross_entropy = saved
    wrong = torch.cat(seen[1::2])  # each step: the remaining batch's labels, then the forgotten batch's
    assert len(wrong) > 100 and set(wrong.unique().tolist()) == {0, 1, 2, 3}


def test_with_nothing_to_forget_every_method_gives_the_original_predictions(clf, tmp_path, capsys):
    np.save(tmp_path / "none.npy", np.zeros(0, dtype=np.int64))
    assert main(["unlearn", str(clf), "--forget", f"indices:{tmp_path / 'none.npy'}", "--method", "all",
                 "--membership-rows", "0", "--out", str(tmp_path / "all"), "--quiet"]) == 0
    original = registry.load(clf)
    x = original.data.x_test
    with torch.no_grad():
        want = original.model(x)
        for method in METHODS:
            run = registry.load(tmp_path / "all" / method)
            assert torch.equal(run.model(x).argmax(1), want.argmax(1)), method
            assert torch.allclose(run.model(x), want, atol=1e-5), method
    told = json.loads((tmp_path / "all" / "comparison.json").read_text())
    assert set(told["methods"]) == set(METHODS) and told["methods"]["laf"]["rows_forgotten"] == 0
    assert (tmp_path / "all" / "unlearn.html").read_text().count("<tr>") >= len(METHODS)


def test_an_unlearned_run_is_a_classifier_run_every_command_takes(clf, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["unlearn", str(clf), "--forget", "class:3", "--method", "finetune", "--epochs", "2",
                 "--membership-rows", "0", "--out", str(out), "--quiet", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["rows_forgotten"] == int((registry.load(clf).data.y_train == 3).sum()) > 0
    assert r["accuracy_forgotten"] < 0.2 < r["accuracy_remaining"]
    assert main(["eval", str(out), "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["unlearn_method"] == "finetune" and e["accuracy_forgotten"] == pytest.approx(r["accuracy_forgotten"])
    assert e["accuracy"] == pytest.approx(r["accuracy_test"])
    assert main(["report", str(out)]) == 0 and (out / "report.html").exists()
    page = html.unescape((out / "report.html").read_text())
    says_each_thing_once(page)  # the page says what was forgotten, how, and what it cost
    assert "after unlearning (class:3)" in page and "finetune made this classifier forget class:3" in page
    assert f"accuracy {e['accuracy_forgotten']:.4f} on them against {e['accuracy_remaining']:.4f}" in page
    assert "No metrics recorded" not in page
    capsys.readouterr()
    assert "already holds a run" in refused(capsys, clf, "--forget", "class:3", "--method", "finetune",
                                            "--membership-rows", "0", "--out", out)
    assert main(["unlearn", str(clf), "--forget", "class:3", "--method", "ascent", "--membership-rows", "0",
                 "--out", str(out), "--force", "--quiet"]) == 0
    assert json.loads((out / "unlearn.json").read_text())["method"] == "ascent"


def test_a_failed_unlearn_keeps_the_run_it_was_replacing_and_leaves_no_part_of_its_own(clf, tmp_path, capsys,
                                                                                        monkeypatch):
    out = tmp_path / "u"
    assert main(["unlearn", str(clf), "--forget", "class:2", "--method", "finetune", "--membership-rows", "0",
                 "--out", str(out), "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def broken(*args, **kwargs):
        raise RuntimeError("killed mid-way")
    monkeypatch.setattr(baselines, "ascent", broken)
    with pytest.raises(RuntimeError):
        main(["unlearn", str(clf), "--forget", "class:2", "--method", "ascent", "--membership-rows", "0",
              "--out", str(out), "--force", "--quiet"])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # the earlier run, whole
    fresh = tmp_path / "v"
    with pytest.raises(RuntimeError):
        main(["unlearn", str(clf), "--forget", "class:2", "--method", "ascent", "--membership-rows", "0",
              "--out", str(fresh), "--quiet"])
    assert not fresh.exists() or not [p for p in fresh.iterdir() if not p.name.startswith(".")]
