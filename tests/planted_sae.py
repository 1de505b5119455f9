"""A planted TopK SAE and a token stream whose firings are known token by token, for the definitions of a dead
latent: the identity encoder and decoder with k = 1, so latent j fires exactly on the tokens x_n = e_j.

Over TOKENS = 80 training tokens in batches of BATCH = 8 and a window of WINDOW = 20 tokens:
- latent 1 last fires on token 59: 20 tokens ago, so it is dead (the window holds tokens 60-79), yet its batch
  (tokens 56-63) straddles the window's start, so a count by batches sees it in the last 3 batches;
- latent 2 last fires on token 60, the window's first token: alive;
- latent 3 never fires (dead), latent 4 fires on the last token, latent 5 last on token 30, latent 0 on the rest.
sae-lens's count with a window of LENS_WINDOW = 2 batches: dead when more than 2 batches have passed since the
batch with the last firing, so latents 1 and 2 (2 batches ago) are alive and only 3 and 5 are dead.
"""
import torch

from varilab.models.sae import SAE, SAEConfig

D, BATCH, TOKENS, WINDOW, LENS_WINDOW = 6, 8, 80, 20, 2
FIRES = {1: (10, 59), 2: (5, 60), 4: (79,), 5: (30,)}  # token positions of each latent's firings; 0 fires elsewhere
DEAD_TOKENS, DEAD_SAE_LENS = [1, 3, 5], [3, 5]


def stream(extra: int = 0) -> torch.Tensor:
    """The TOKENS training tokens [TOKENS, D] one-hot, then `extra` more tokens of latent 0 (e.g. held out)."""
    owner = torch.zeros(TOKENS + extra, dtype=torch.long)
    for j, positions in FIRES.items():
        owner[list(positions)] = j
    return torch.nn.functional.one_hot(owner, D).float()


def planted_sae() -> SAE:
    """The identity TopK SAE (k = 1, no bias, no input scaling) with dead_window_tokens = WINDOW."""
    model = SAE(SAEConfig(d=D, features=D, k=1, dead_window_tokens=WINDOW, input_norm="none"))
    with torch.no_grad():
        model.W_enc.copy_(torch.eye(D))
        model.W_dec.copy_(torch.eye(D))
        model.b_enc.zero_()
        model.b_dec.zero_()
    return model
