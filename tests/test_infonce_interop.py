"""varilab's InfoNCE (LAF's stage 3) against pytorch-metric-learning's NTXentLoss, a maintained implementation of the
same loss: anchors from one view, positives and negatives from the other (`ref_emb`), cosine similarity over a
temperature. pytorch-metric-learning is a peer installed in .venv-bench (bench/requirements.txt), not a dependency;
without it this test is skipped."""
import pytest
import torch

from varilab.models.unlearning.infonce import info_nce

losses = pytest.importorskip("pytorch_metric_learning.losses")


@pytest.mark.parametrize("tau", [0.07, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("batch, dim", [(2, 3), (16, 128), (64, 8)])
def test_info_nce_equals_pytorch_metric_learnings_nt_xent_against_a_reference_view(tau, batch, dim):
    g = torch.Generator().manual_seed(batch * dim)
    anchors = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    positives = anchors + 0.5 * torch.randn(batch, dim, generator=g, dtype=torch.float64)
    labels = torch.arange(batch)  # row i's positive is the other view's row i; every other row is a negative
    # (a separate ref_labels tensor: given the same object, the library takes the two views for one and drops i-i pairs)
    theirs = losses.NTXentLoss(temperature=tau)(anchors, labels, ref_emb=positives, ref_labels=labels.clone())
    assert info_nce(anchors, positives, tau).item() == pytest.approx(theirs.item(), rel=1e-9, abs=1e-12)
