"""varilab's sae-lens-style dead count agrees with sae-lens itself on the same weights and activations: sae-lens's
own trainer (SAETrainer.fit, learning rate 0 so the weights stay put) streams the batches, and its
n_forward_passes_since_fired and dead mask (> dead_feature_window) equal varilab's training counter and
diagnostics.sae.Firing, on the planted stream of tests/planted_sae.py (a last firing that straddles the token
window) and on a random SAE.

Runs in the benchmark environment (`.venv-bench`, made by `make bench`); skipped where sae-lens is not installed.
"""
from __future__ import annotations

import pytest
import torch

from varilab.diagnostics.sae import Firing


def sae_lens_counts(model, batches: list[torch.Tensor], window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_forward_passes_since_fired [F], dead mask [F]) from sae-lens's trainer over `batches`, with `model`'s
    weights copied into a sae-lens TopK SAE."""
    sae_lens = pytest.importorskip("sae_lens")
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    c = model.config
    sae = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(
        d_in=c.d, d_sae=c.features, k=c.k, rescale_acts_by_decoder_norm=False, apply_b_dec_to_input=True,
        normalize_activations="none", dtype="float32", device="cpu"))
    with torch.no_grad():
        sae.W_enc.copy_(model.W_enc.T)  # sae-lens stores W_enc as [d, F], varilab as [F, d]
        sae.b_enc.copy_(model.b_enc)
        sae.W_dec.copy_(model.W_dec)
        sae.b_dec.copy_(model.b_dec)
    x = torch.cat(batches)
    torch.testing.assert_close(sae.encode(x) != 0, model.encode(x) != 0)  # the same codes fire
    cfg = SAETrainerConfig(total_training_samples=len(x), train_batch_size_samples=len(batches[0]), lr=0.0,
                           lr_end=0.0, dead_feature_window=window)
    trainer = SAETrainer(cfg, sae, data_provider=iter(batches))
    trainer.fit()
    return trainer.n_forward_passes_since_fired.long(), trainer.dead_neurons


def varilab_counts(model, batches: list[torch.Tensor], window: int):
    """(training's batch counter, its sae-lens dead mask, Firing's counter, its sae-lens dead mask)."""
    model.train()
    firing = Firing(model.config.features)
    for xb in batches:
        model.loss(xb)
        firing.update(model.encode(xb))
    return (model.batches_since_fired.clone(), model.dead_latents_sae_lens(window), firing.batches_since,
            firing.dead_sae_lens(window))


@pytest.mark.parametrize("window", [1, 2, 6, 10])
def test_planted_stream_counts_as_sae_lens_does(window):
    from planted_sae import BATCH, DEAD_SAE_LENS, LENS_WINDOW, planted_sae, stream

    batches = list(stream().split(BATCH))
    lens_since, lens_dead = sae_lens_counts(planted_sae(), batches, window)
    ours, ours_dead, firing, firing_dead = varilab_counts(planted_sae(), batches, window)
    assert lens_since.tolist() == ours.tolist() == firing.tolist() == [0, 2, 2, 10, 0, 6]
    assert lens_dead.tolist() == ours_dead.tolist() == firing_dead.tolist()
    if window == LENS_WINDOW:  # the latent whose last firing straddles the token window is alive here
        assert lens_dead.nonzero().flatten().tolist() == DEAD_SAE_LENS


def test_a_random_sae_counts_as_sae_lens_does():
    from varilab.models.sae import SAE, SAEConfig

    torch.manual_seed(0)
    model = SAE(SAEConfig(d=16, features=128, k=2, input_norm="none"))
    x = torch.randn(600, 16, generator=torch.Generator().manual_seed(1))
    batches = list(x.split(20))
    window = 8
    lens_since, lens_dead = sae_lens_counts(model, batches, window)
    ours, ours_dead, firing, firing_dead = varilab_counts(model, batches, window)
    assert torch.equal(lens_since, ours) and torch.equal(ours, firing)
    assert torch.equal(lens_dead, ours_dead) and torch.equal(ours_dead, firing_dead)
    assert 0 < int(lens_dead.sum()) < 128  # both kinds of latent occur, so the comparison can fail


@pytest.mark.parametrize("window", [1, 2, 6])
def test_sae_health_of_sae_lens_own_topk_sae_counts_dead_latents_as_its_trainer_does(window):
    """An SAE varilab did not train (sae-lens's inference TopKSAE, with the planted weights): sae_health over the
    batches gives the dead mask sae-lens's trainer keeps over them."""
    sae_lens = pytest.importorskip("sae_lens")
    from planted_sae import BATCH, planted_sae, stream

    from varilab.diagnostics.sae import sae_health

    model = planted_sae()
    c = model.config
    sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=c.d, d_sae=c.features, k=c.k, rescale_acts_by_decoder_norm=False,
                                                  apply_b_dec_to_input=True, normalize_activations="none",
                                                  dtype="float32", device="cpu"))
    with torch.no_grad():
        sae.W_enc.copy_(model.W_enc.T)
        sae.b_enc.copy_(model.b_enc)
        sae.W_dec.copy_(model.W_dec)
        sae.b_dec.copy_(model.b_dec)
    batches = list(stream().split(BATCH))
    _, lens_dead = sae_lens_counts(model, batches, window)
    h = sae_health(sae, batches, window_tokens=20, sae_lens_window=window)
    assert torch.equal(h["dead_sae_lens_mask"], lens_dead) and h["dead_sae_lens"] == int(lens_dead.sum())
