"""Surrogate gradients: Heaviside forward, a smooth derivative backward.

``surrogate_grad(name, u, alpha)`` is dS/du at ``u = H - threshold``; the kernels use the
same formulas. Defaults for ``alpha`` follow SpikingJelly where it has the function.
"""
from __future__ import annotations

import math

import torch

# name -> default alpha
SURROGATES: dict[str, float] = {
    "sigmoid": 4.0,               # sigma(a u)' = a s (1 - s)
    "atan": 2.0,                  # (a / 2) / (1 + (pi / 2 a u)^2)
    "piecewise_quadratic": 1.0,   # a - a^2 |u| for |u| <= 1 / a, else 0
    "piecewise_exp": 1.0,         # (a / 2) exp(-a |u|)
    "soft_sign": 2.0,             # a / (2 (1 + a |u|)^2)
    "super_spike": 1.0,           # a / (a |u| + 1)^2
    "erf": 2.0,                   # (a / sqrt(pi)) exp(-(a u)^2)
    "rectangle": 1.0,             # 1 / a for |u| < a / 2, else 0
    "triangle": 1.0,              # (1 / a) max(0, 1 - |u| / a)
}
SURROGATE_IDS = {name: i for i, name in enumerate(SURROGATES)}


def check_surrogate(surrogate: str, alpha: float | None) -> float:
    """Validate a surrogate name; return alpha (its default when None)."""
    if surrogate not in SURROGATES:
        raise ValueError(
            f"surrogate: unknown name {surrogate!r}; expected one of {sorted(SURROGATES)}")
    if alpha is None:
        return SURROGATES[surrogate]
    alpha = float(alpha)
    if not (alpha > 0 and math.isfinite(alpha) and abs(alpha) < 3.4e38):
        raise ValueError(f"alpha: expected a finite number > 0, got {alpha}")
    return alpha


def surrogate_grad(name: str, u: torch.Tensor, alpha: float) -> torch.Tensor:
    a = alpha
    if name == "sigmoid":
        s = torch.sigmoid(a * u)
        return a * s * (1.0 - s)
    if name == "atan":
        return (a / 2.0) / (1.0 + (math.pi / 2.0 * a * u) ** 2)
    if name == "piecewise_quadratic":
        return torch.where(u.abs() <= 1.0 / a, a - a * a * u.abs(), torch.zeros_like(u))
    if name == "piecewise_exp":
        return (a / 2.0) * torch.exp(-a * u.abs())
    if name == "soft_sign":
        return a / (2.0 * (1.0 + a * u.abs()) ** 2)
    if name == "super_spike":
        return a / (a * u.abs() + 1.0) ** 2
    if name == "erf":
        return (a / math.sqrt(math.pi)) * torch.exp(-(a * u) ** 2)
    if name == "rectangle":
        return torch.where(u.abs() < a / 2.0, torch.full_like(u, 1.0 / a), torch.zeros_like(u))
    if name == "triangle":
        return torch.clamp(1.0 - u.abs() / a, min=0.0) / a
    raise ValueError(f"surrogate: unknown name {name!r}")


class _Heaviside(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, name, alpha):
        ctx.save_for_backward(u)
        ctx.name, ctx.alpha = name, alpha
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return grad * surrogate_grad(ctx.name, u, ctx.alpha), None, None


def heaviside(u: torch.Tensor, name: str = "sigmoid", alpha: float = 4.0) -> torch.Tensor:
    """S = [u >= 0] with the named surrogate gradient."""
    return _Heaviside.apply(u, name, alpha)


class _StraightThroughQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, max_level, half_up):
        ctx.save_for_backward(u)
        ctx.max_level = max_level
        c = u.clamp(0, max_level)
        return torch.floor(c + 0.5) if half_up else torch.round(c)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        inside = (u >= 0) & (u <= ctx.max_level)
        return grad * inside.to(grad.dtype), None, None


def quantize_st(u: torch.Tensor, max_level: int, half_up: bool = False) -> torch.Tensor:
    """round(clamp(u, 0, D)) with a straight-through gradient inside [0, D]."""
    return _StraightThroughQuant.apply(u, max_level, half_up)
