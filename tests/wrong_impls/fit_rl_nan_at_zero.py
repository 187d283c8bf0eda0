"""Gao's RL form fitted with d * log(d) computed as written: nan at the SFT point d = 0."""
import numpy as np

EXERCISE, HINT = "fit_rl", "nan at d = 0"
WARNS = RuntimeWarning  # log(0), 0 * -inf


def fit_rl(d, gain):
    d = np.asarray(d, float)
    features = np.stack([d, -d * np.log(d)], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(features, gain, rcond=None)
    return float(alpha), float(beta)
