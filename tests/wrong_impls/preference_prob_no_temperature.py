"""A labeler's preference probability that ignores the labeler's temperature."""
import numpy as np

EXERCISE, HINT = "preference_prob", "divide the score difference by labeler.temperature"


def preference_prob(labeler, score_a, score_b):
    p = 1.0 / (1.0 + np.exp(-(score_a - score_b)))
    return (1 - labeler.flip_prob) * p + labeler.flip_prob * (1 - p)
