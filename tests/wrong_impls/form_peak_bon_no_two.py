"""Where Gao's best-of-n form peaks, with the 2 of the derivative of beta d^2 forgotten."""
import math

EXERCISE, HINT = "form_peak", "d* = alpha / (2 beta)"


def form_peak(form, alpha, beta):
    if beta <= 0:
        return float("inf")
    return alpha / beta if form == "bon" else math.exp(alpha / beta - 1)
