"""The linear part of the augmented (X, Y_1..Y_K) system, exactly: its transition over a time tau and the backward
filter of observations through it, which the guided posterior of `varilab.models.latent_sde` steers with.

Per latent dimension j, with drift mu left out (Y_k(t + tau) = e_k Y_k + noise, e_k = e^(-gamma_k tau)):

    X(t + tau) = X(t) - sigma_j sum_k omega_k (1 - e_k) Y_k(t) + sigma_j int_0^tau sum_k omega_k e^(-gamma_k (tau - r)) dW_r
    Cov(X, X)    = sigma_j^2 sum_ab omega_a omega_b (1 - e_a e_b) / (gamma_a + gamma_b)
    Cov(X, Y_k)  = sigma_j sum_a omega_a (1 - e_a e_k) / (gamma_a + gamma_k)
    Cov(Y_k, Y_l) = (1 - e_k e_l) / (gamma_k + gamma_l)

K = 0 is Brownian noise: X(t + tau) = X(t) + sigma_j W_tau. States are ordered as the solver's: X_1..X_d, then
Y_jk at d + j K + k.

A backward message is the Gaussian function beta(z) = exp(-z^T P z / 2 + h^T z) of the state: how likely the
observations from then on are. An observation y = D X + bias + noise(s^2 I) adds P += Dx^T Dx / s^2 and
h += Dx^T (y - bias) / s^2 (Dx: D on the X coordinates). Moving back by tau through z' = Phi z + c + noise(Q):
P <- Phi^T (I + P Q)^-1 P Phi and h <- Phi^T (I + P Q)^-1 (h - P c), which needs no inverse of P (P is singular
until enough observations are in).
"""
from __future__ import annotations

import torch


def _assemble(blocks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-dimension blocks [..., d, 1 + K, 1 + K] as one [..., N, N] matrix in the solver's order."""
    d = blocks.shape[-3]
    out = blocks.new_zeros(*blocks.shape[:-3], d * (1 + k), d * (1 + k))
    for j in range(d):
        at = torch.tensor([j, *range(d + j * k, d + (j + 1) * k)], device=blocks.device)  # X_j, then its Y_jk
        out[..., at[:, None], at[None, :]] = blocks[..., j, :, :]
    return out


def drift_matrix(w: torch.Tensor, gamma: torch.Tensor, sigma: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """B [N, N] of dz = B z dt + G dW: dX_j = (-decay_j X_j - sigma_j sum_k omega_k gamma_k Y_jk) dt, dY_jk =
    -gamma_k Y_jk dt."""
    d, k = len(sigma), len(w)
    blocks = sigma.new_zeros(d, 1 + k, 1 + k)
    blocks[:, 0, 0] = -decay
    blocks[:, 0, 1:] = -sigma[:, None] * (w * gamma)
    blocks[:, 1:, 1:] = -torch.diag(gamma)
    return _assemble(blocks, k)


def transition(w: torch.Tensor, gamma: torch.Tensor, sigma: torch.Tensor, tau,
               decay: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(Phi, Q) [..., N, N] of the linear system over times tau [...] >= 0: z(t + tau) = Phi z(t) + noise of
    covariance Q. w, gamma: [K] (empty for Brownian noise); sigma: [d]. With `decay` [d], X_j also reverts to 0 at
    rate decay_j; then (Phi, Q) come from one matrix exponential (Van Loan: exp([[-B, G G^T], [0, B^T]] tau) holds
    Phi^T and Phi^-1 Q), in float64."""
    tau = torch.as_tensor(tau, dtype=sigma.dtype, device=sigma.device)
    if decay is not None:
        b64 = drift_matrix(w, gamma, sigma, decay).double()
        g64 = loading(w, sigma).double()
        n = len(b64)
        block = b64.new_zeros(2 * n, 2 * n)
        block[:n, :n], block[:n, n:], block[n:, n:] = -b64, g64 @ g64.T, b64.T
        e = torch.linalg.matrix_exp(block * tau.double()[..., None, None])
        phi = e[..., n:, n:].transpose(-1, -2)
        return phi.to(sigma.dtype), (phi @ e[..., :n, n:]).to(sigma.dtype)
    d, k = len(sigma), len(w)
    if not k:
        eye = torch.eye(d, dtype=sigma.dtype, device=sigma.device)
        return eye.expand(*tau.shape, d, d), torch.diag_embed(sigma.pow(2) * tau[..., None])
    e = torch.exp(-gamma * tau[..., None])[..., None, :]  # [..., 1, K]
    yy = (1 - e[..., :, None] * e[..., None, :]) / (gamma[:, None] + gamma[None])  # Cov(Y_k, Y_l) [..., 1, K, K]
    shape = (*tau.shape, d, 1 + k, 1 + k)
    phi, q = sigma.new_zeros(shape), sigma.new_zeros(shape)
    phi[..., 0, 0] = 1
    phi[..., 0, 1:] = -sigma[:, None] * (w * (1 - e))
    phi[..., 1:, 1:] = torch.diag_embed(e).expand(*shape[:-2], k, k)
    q[..., 0, 0] = sigma.pow(2) * (w[:, None] * w[None] * yy).sum((-1, -2))
    q[..., 0, 1:] = q[..., 1:, 0] = sigma[:, None] * (w @ yy)
    q[..., 1:, 1:] = yy
    return _assemble(phi, k), _assemble(q, k)


def loading(w: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """G [N, d]: how the Brownian W_j enters each state (sigma_j sum_k omega_k into X_j, 1 into each Y_jk)."""
    d, k = len(sigma), len(w)
    scale = sigma * (w.sum() if k else 1.0)
    rows = [torch.diag(scale)] + ([torch.eye(d, dtype=sigma.dtype, device=sigma.device).repeat_interleave(k, 0)]
                                  if k else [])
    return torch.cat(rows, 0)


def pull(P: torch.Tensor, phi: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """M = Phi^T (I + P Q)^-1 [..., N, N], which moves a message back by tau: P <- M P Phi, h <- M (h - P c).
    Batched over the leading dimensions of P, phi and q."""
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
    return phi.transpose(-1, -2) @ torch.linalg.inv(eye + P @ q)


def back(P: torch.Tensor, h: torch.Tensor, phi: torch.Tensor, q: torch.Tensor, shift: torch.Tensor | None = None):
    """The message at t from the message (P [B, N, N], h [B, N]) at t + tau, through z' = Phi z + shift + noise(Q)."""
    eye = torch.eye(len(q), dtype=q.dtype, device=q.device)
    a = torch.linalg.solve(eye + P @ q, torch.cat([P, (h if shift is None else h - (P @ shift[..., None])[..., 0])
                                                   [..., None]], -1))  # (I + P Q)^-1 [P, h - P c]
    return phi.T @ a[..., :-1] @ phi, (phi.T @ a[..., -1:])[..., 0]


def messages(grid: torch.Tensor, values: torch.Tensor, seen: torch.Tensor, w: torch.Tensor, gamma: torch.Tensor,
             sigma: torch.Tensor, decoder: torch.Tensor, bias: torch.Tensor, noise: torch.Tensor,
             decay: torch.Tensor | None = None):
    """The backward messages (P [B, U, N, N], h [B, U, N]) at each grid time, each including that time's observation
    (values [B, U, obs], seen [B, U]) and all later ones."""
    b, u = seen.shape
    d, n = len(sigma), len(sigma) * (1 + len(w))
    dx = torch.zeros(decoder.shape[0], n, dtype=sigma.dtype, device=sigma.device)
    dx[:, :d] = decoder  # D on the X coordinates
    info = dx.T @ dx / noise ** 2  # [N, N]
    P = sigma.new_zeros(b, n, n)
    h = sigma.new_zeros(b, n)
    Ps, hs = [None] * u, [None] * u
    phi, q = transition(w, gamma, sigma, grid.diff(), decay)  # [U - 1, N, N] each
    for j in range(u - 1, -1, -1):
        m = seen[:, j, None]
        P = P + m[..., None] * info
        h = h + m * ((values[:, j] - bias) @ dx) / noise ** 2
        Ps[j], hs[j] = P, h
        if j:
            P, h = back(P, h, phi[j - 1], q[j - 1])
    return torch.stack(Ps, 1), torch.stack(hs, 1)
