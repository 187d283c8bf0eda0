"""Gao's RL form fitted with +d log d as beta's feature: beta comes out with its sign flipped."""
import numpy as np

EXERCISE, HINT = "fit_rl", "beta's feature is -d log d"


def fit_rl(d, gain):
    d = np.asarray(d, float)
    d_log_d = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
    (alpha, beta), *_ = np.linalg.lstsq(np.stack([d, d_log_d], axis=1), gain, rcond=None)
    return float(alpha), float(beta)
