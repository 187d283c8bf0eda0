"""Gao's RL form fitted with log base 10 in d log d."""
import numpy as np

EXERCISE, HINT = "fit_rl", "natural log"


def fit_rl(d, gain):
    d = np.asarray(d, float)
    d_log_d = np.where(d > 0, d * np.log10(np.where(d > 0, d, 1.0)), 0.0)
    (alpha, beta), *_ = np.linalg.lstsq(np.stack([d, -d_log_d], axis=1), gain, rcond=None)
    return float(alpha), float(beta)
