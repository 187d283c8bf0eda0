"""Softmax by the book, exp then divide: exp(r / beta) overflows to inf at small beta and the weights turn nan."""
import numpy as np

EXERCISE, HINT = "log_weights", "subtract the largest logit before exponentiating"
WARNS = RuntimeWarning  # numpy warns of the overflow, as it would the learner: expected, so the test catches it


def log_weights(logprobs, rewards, beta):
    if not beta > 0:
        raise ValueError("beta must be > 0")
    w = np.exp(logprobs) * np.exp(rewards / beta)
    return np.log(w / w.sum())
