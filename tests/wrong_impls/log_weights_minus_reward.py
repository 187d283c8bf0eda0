"""exp(-r / beta): the KL penalty's sign carried over to the reward, so the worst responses gain weight."""
from scipy.special import logsumexp

EXERCISE, HINT = "log_weights", "the sign of r / beta"


def log_weights(logprobs, rewards, beta):
    if not beta > 0:
        raise ValueError("beta must be > 0")
    logits = logprobs - rewards / beta
    return logits - logsumexp(logits)
