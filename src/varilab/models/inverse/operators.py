"""Linear measurement operators y = H x for inverse problems, on flat vectors x [B, D] -> y [B, M].

Each answers the same four things, so a solver never knows which one it has:
  forward(x)  H x                       [B, D] -> [B, M]
  adjoint(y)  H^T y                     [B, M] -> [B, D]
  pinv(y)     H^+ y (Moore-Penrose)     [B, M] -> [B, D]
  in_dim, out_dim

  Mask(mask)             inpainting: keeps the pixels where mask is true (H H^T = I, so H^+ = H^T)
  Identity(d)            denoising
  AvgPool(shape, f)      f x f average pooling of images [C, H, W] (H H^T = I / f^2, so H^+ = f^2 H^T)
  Matrix(A)              any dense A [M, D]; H^+ from an SVD, computed once

>>> import torch
>>> op = AvgPool((1, 4, 4), 2)
>>> y = op(torch.arange(16.0).reshape(1, 16))
>>> y.tolist(), torch.allclose(op(op.pinv(y)), y)
([[2.5, 4.5, 10.5, 12.5]], True)
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


class Operator:
    """What every operator shares: shape checks at the boundary and calling it as H(x)."""
    in_dim: int
    out_dim: int
    name: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def check(self, y: torch.Tensor) -> torch.Tensor:
        """y [B, out_dim], finite; a clear error otherwise."""
        if y.ndim != 2 or y.shape[1] != self.out_dim:
            raise ValueError(f"the observation must have shape [N, {self.out_dim}] for {self.name}, got {list(y.shape)}")
        bad = ~torch.isfinite(y)
        if bad.any():
            n, j = (int(i) for i in bad.nonzero()[0])
            raise ValueError(f"the observation holds {int(bad.sum())} NaN or Inf values (first at row {n}, entry {j})")
        return y

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"{self.name} takes x of shape [B, {self.in_dim}], got {list(x.shape)}")
        return x


class Mask(Operator):
    """Inpainting: y = x[:, mask], the observed pixels only."""

    def __init__(self, mask: torch.Tensor):
        mask = torch.as_tensor(mask).reshape(-1)
        if mask.dtype != torch.bool:
            if not ((mask == 0) | (mask == 1)).all():
                raise ValueError("a mask holds 0/1 or true/false per pixel (1: observed)")
            mask = mask.bool()
        if not mask.any():
            raise ValueError("the mask observes no pixel")
        self.mask, self.in_dim, self.out_dim = mask, mask.numel(), int(mask.sum())
        self.name = f"inpainting ({self.out_dim:,} of {self.in_dim:,} pixels observed)"

    def forward(self, x):
        return self._check_x(x)[:, self.mask.to(x.device)]

    def adjoint(self, y):
        x = y.new_zeros(len(y), self.in_dim)
        x[:, self.mask.to(y.device)] = y  # zeros where nothing was observed
        return x

    def pinv(self, y):
        return self.adjoint(y)


class Identity(Operator):
    """Denoising: y = x."""

    def __init__(self, d: int):
        self.in_dim = self.out_dim = d
        self.name = "denoising"

    def forward(self, x):
        return self._check_x(x)

    def adjoint(self, y):
        return y

    def pinv(self, y):
        return y


class AvgPool(Operator):
    """Super-resolution: f x f average pooling of images of shape (C, H, W), flattened."""

    def __init__(self, shape: tuple[int, int, int], factor: int):
        c, h, w = shape
        if factor < 1 or h % factor or w % factor:
            raise ValueError(f"{factor}x downsampling needs sides divisible by {factor}; the images are {h} x {w}")
        self.shape, self.factor = (c, h, w), factor
        self.in_dim, self.out_dim = c * h * w, c * (h // factor) * (w // factor)
        self.name = f"{factor}x super-resolution ({h} x {w} from {h // factor} x {w // factor})"

    def forward(self, x):
        return F.avg_pool2d(self._check_x(x).reshape(-1, *self.shape), self.factor).flatten(1)

    def adjoint(self, y):  # each low-resolution pixel spread over its f x f block, divided by f^2
        return self.pinv(y) / self.factor ** 2

    def pinv(self, y):  # nearest-neighbour upsampling: H^+ = f^2 H^T since H H^T = I / f^2
        c, h, w = self.shape
        low = y.reshape(-1, c, h // self.factor, w // self.factor)
        return low.repeat_interleave(self.factor, 2).repeat_interleave(self.factor, 3).flatten(1)


class Matrix(Operator):
    """y = A x for a dense A [M, D]."""

    def __init__(self, A: torch.Tensor):
        A = torch.as_tensor(A)
        if A.ndim != 2 or not torch.isfinite(A).all():
            raise ValueError(f"the matrix must be 2-D and finite, got shape {list(A.shape)}")
        self.A = A.float()
        self.A_pinv = torch.linalg.pinv(A.double()).float()  # [D, M]
        self.out_dim, self.in_dim = A.shape
        self.name = f"a {self.out_dim} x {self.in_dim} matrix"

    def forward(self, x):
        return self._check_x(x) @ self.A.to(x).T

    def adjoint(self, y):
        return y @ self.A.to(y)

    def pinv(self, y):
        return y @ self.A_pinv.to(y).T
