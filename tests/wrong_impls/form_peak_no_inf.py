"""Where Gao's forms peak, with the formula applied even when beta <= 0 (a form that never turns down)."""
import math

EXERCISE, HINT = "form_peak", "never turns down"


def form_peak(form, alpha, beta):
    if beta == 0:
        return float("nan")
    return alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta - 1)
