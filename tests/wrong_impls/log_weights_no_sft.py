"""exp(r / beta) normalised, with pi_SFT left out: the reweighting of nothing."""
from scipy.special import logsumexp

EXERCISE, HINT = "log_weights", "pi* reweights pi_SFT"


def log_weights(logprobs, rewards, beta):
    if not beta > 0:
        raise ValueError("beta must be > 0")
    logits = rewards / beta
    return logits - logsumexp(logits)
