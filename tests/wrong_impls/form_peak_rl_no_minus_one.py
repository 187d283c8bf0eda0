"""Where Gao's RL form peaks, with the product rule's + 1 forgotten: exp(alpha / beta)."""
import math

EXERCISE, HINT = "form_peak", "the product rule's + 1"


def form_peak(form, alpha, beta):
    if beta <= 0:
        return float("inf")
    return alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta)
