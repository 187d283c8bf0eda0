"""The shape of an over-optimization curve: Gao et al.'s functional forms, their fits, and where gold peaks.

Gao, Schulman & Hilton (2022) write the gold reward gained over the initial policy as a function of the
distance travelled, d = sqrt(KL(pi || pi_init)): eq. 1 for best-of-n, eq. 2 for RL (each above its function
below). Both are linear in (alpha, beta), so a least-squares fit is one `lstsq`; `peak` reads a measured curve.
"""
from __future__ import annotations

import numpy as np
from jaxtyping import Float


def bon_form(d: Float[np.ndarray, " k"], alpha: float, beta: float) -> np.ndarray:
    """R_bon(d) = d (alpha - beta d): gold gained by best-of-n at distance d (Gao et al. 2022, eq. 1)."""
    d = np.asarray(d, float)
    return d * (alpha - beta * d)


def rl_form(d: Float[np.ndarray, " k"], alpha: float, beta: float) -> np.ndarray:
    """R_RL(d) = d (alpha - beta log d), with d log d = 0 at d = 0 (Gao et al. 2022, eq. 2)."""
    d = np.asarray(d, float)
    return d * alpha - beta * _xlogx(d)


def _xlogx(d: np.ndarray) -> np.ndarray:
    return np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)


def fit_bon(d: Float[np.ndarray, " k"], gain: Float[np.ndarray, " k"]) -> tuple[float, float]:
    """Least-squares (alpha, beta) of R_bon; R is linear in them: R = alpha d - beta d^2."""
    return _lstsq(np.stack([d, -np.asarray(d, float) ** 2], axis=1), gain)


def fit_rl(d: Float[np.ndarray, " k"], gain: Float[np.ndarray, " k"]) -> tuple[float, float]:
    """Least-squares (alpha, beta) of R_RL; R is linear in them: R = alpha d - beta d log d."""
    return _lstsq(np.stack([d, -_xlogx(np.asarray(d, float))], axis=1), gain)


def _lstsq(features: np.ndarray, gain: np.ndarray) -> tuple[float, float]:
    if len(gain) < 2:
        raise ValueError(f"fitting two parameters needs at least 2 points, got {len(gain)}")
    (alpha, beta), *_ = np.linalg.lstsq(np.asarray(features, float), np.asarray(gain, float), rcond=None)
    return float(alpha), float(beta)


def form_peak(form: str, alpha: float, beta: float) -> float:
    """Where the fitted form peaks: d* = alpha / (2 beta) for best-of-n, exp(alpha / beta - 1) for RL (inf if beta <= 0)."""
    if beta <= 0:
        return float("inf")
    return alpha / (2 * beta) if form == "bon" else float(np.exp(min(alpha / beta - 1, 50.0)))


def peak(d: list[float], gold: list[float], proxy: list[float], gold_se: list[float] | None = None) -> dict:
    """Where gold peaks along a curve, how far it falls after, and whether the proxy still rose meanwhile."""
    i = int(np.argmax(gold))
    drop = gold[i] - gold[-1]
    out = {"d_peak": d[i], "kl_peak": d[i] ** 2, "gold_peak": gold[i], "gold_end": gold[-1], "d_end": d[-1],
           "drop": drop, "proxy_at_peak": proxy[i], "proxy_end": proxy[-1], "proxy_max": max(proxy),
           "peak_inside": 0 < i < len(gold) - 1}
    if gold_se is not None:  # a fall counts when it exceeds twice the standard error of the two means
        out["drop_se"] = float(np.hypot(gold_se[i], gold_se[-1]))
    return out
