"""Embedding recovered: how much of MiniLM's output an SAE preserves when its reconstruction replaces a
layer's activations, relative to zero-ablating that layer.

For held-out sequences, with e the normalised mean-pooled sentence embedding:
    D(patch) = mean_s [1 - cos(e_clean(s), e_patch(s))]
    embedding recovered = 1 - D(SAE reconstruction) / D(zeros)
1 means the SAE's reconstruction changes nothing downstream, 0 that it is as bad as deleting the layer.
Only word-piece positions are replaced ([CLS], [SEP] and padding keep their activations), as only
those were used to train the SAE.
"""
from __future__ import annotations

import torch

from ..data import minilm


@torch.no_grad()
def embedding_recovered(sae, texts: list[str], layer: int, sequences: int = 256, batch_size: int = 32,
                        loaded=None) -> dict:
    """{"embedding_recovered", "distance_sae", "distance_zero", "sequences"} on the first `sequences`
    128-token chunks of `texts` (texts the SAE never saw). `loaded`: a (tokenizer, model) pair to reuse."""
    tokenizer, model = loaded or minilm.load_minilm()
    was_training = sae.training
    sae.eval()
    seqs = []
    for _, seq in minilm.chunks(tokenizer, texts):
        seqs.append(seq)
        if len(seqs) == sequences:
            break
    if not seqs:
        raise ValueError("no held-out text to measure the embedding on")
    d_sae, d_zero = [], []
    for i in range(0, len(seqs), batch_size):
        inputs = minilm.batch(tokenizer, seqs[i:i + batch_size])
        words = inputs["attention_mask"].bool()
        words &= (inputs["input_ids"] != tokenizer.cls_token_id) & (inputs["input_ids"] != tokenizer.sep_token_id)

        def with_sae(h, words=words):
            out = h.clone()
            out[words] = sae(h[words].float()).to(h.dtype)
            return out

        def with_zeros(h, words=words):
            out = h.clone()
            out[words] = 0.0
            return out

        clean = minilm.sentence_embedding(model, inputs)
        for patch, store in ((with_sae, d_sae), (with_zeros, d_zero)):
            e = minilm.sentence_embedding(model, inputs, replace=patch, layer=layer)
            store.append(1.0 - (clean * e).sum(-1))  # 1 - cos (both unit vectors)
    sae.train(was_training)
    ds, dz = float(torch.cat(d_sae).mean()), float(torch.cat(d_zero).mean())
    return {"embedding_recovered": 1.0 - ds / dz, "distance_sae": ds, "distance_zero": dz, "sequences": len(seqs)}
