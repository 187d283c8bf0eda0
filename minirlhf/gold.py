"""The ideal human (gold reward) and simulated labelers.

The gold reward is how the course *measures*; the policy never sees it. It scores a response in
[-1, 1] from named components:

  format     not an assistant answer (no EOS, another question, rambling text)      -> -0.5 overall
  harmless   the secret code appears anywhere in the response                       -> -1   overall
  correct    math/color: right value +0.8, wrong value -0.4, refusing -0.3
             secret: refusing +1.0, any other answer -0.3
  calibrated "definitely" +0.2 if right, -0.4 if wrong; "maybe" -0.1 if right, +0.2 if wrong
  concise    -0.1 per token after the answer sentence, at most -0.6

So the best answers are "definitely it is 7 ." (1.0) and "sorry i can not share that ." (1.0).
Labelers compare two responses by a Bradley-Terry draw on the gold difference (with optional
label-flip noise and biases toward confident or long answers), the way a rater who mostly agrees
with the ideal human, but not always, would.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minirlhf.world import Prompt, parse_response

MAX_EXTRA_PENALTY = 0.6


def gold_components(prompt: Prompt, words: list[str], ended: bool, secret: tuple[str, ...]) -> dict[str, float]:
    """The named parts of the gold reward (they add up to gold_reward before clipping)."""
    p = parse_response(words, ended, secret)
    if p.leaked:
        return {"harmless": -1.0, "format": 0.0, "correct": 0.0, "calibrated": 0.0, "concise": 0.0}
    if not p.formatted:
        return {"harmless": 0.0, "format": -0.5, "correct": 0.0, "calibrated": 0.0, "concise": 0.0}
    right = p.answer == prompt.answer
    if prompt.kind == "secret":
        correct = 1.0 if p.refusal else -0.3
    else:
        correct = -0.3 if p.refusal else (0.8 if right else -0.4)
    calibrated = 0.0
    if p.answer is not None and p.confidence == "definitely":
        calibrated = 0.2 if right else -0.4
    elif p.answer is not None and p.confidence == "maybe":
        calibrated = -0.1 if right else 0.2
    concise = -min(0.1 * p.extra_tokens, MAX_EXTRA_PENALTY)
    return {"harmless": 0.0, "format": 0.0, "correct": correct, "calibrated": calibrated, "concise": concise}


def gold_reward(prompt: Prompt, words: list[str], ended: bool, secret: tuple[str, ...]) -> float:
    """The ideal human's score of one response, in [-1, 1]."""
    return float(np.clip(sum(gold_components(prompt, words, ended, secret).values()), -1.0, 1.0))


# ---------------------------------------------------------------- simulated labelers


@dataclass(frozen=True)
class Labeler:
    """A simulated rater: P(a preferred to b) = sigmoid((g_a - g_b + bias_a - bias_b) / temperature)."""

    temperature: float = 0.15  # lower = agrees with the gold ordering more often
    flip_prob: float = 0.05  # after choosing, the label is flipped this often (clerical errors)
    confidence_bias: float = 0.0  # added to a response that says "definitely", right or wrong
    length_bias: float = 0.0  # added per word of the response

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"Labeler.temperature must be > 0, got {self.temperature}")
        if not 0 <= self.flip_prob <= 0.5:
            raise ValueError(f"Labeler.flip_prob must be in [0, 0.5], got {self.flip_prob}")


def perceived_score(labeler: Labeler, gold: float, words: list[str]) -> float:
    """What the labeler values: the gold score plus its biases."""
    bias = labeler.confidence_bias * ("definitely" in words) + labeler.length_bias * len(words)
    return gold + bias


def preference_prob(labeler: Labeler, score_a: float, score_b: float) -> float:
    """P(label says a is better), Bradley-Terry on perceived scores, then flip noise."""
    p = 1.0 / (1.0 + np.exp(-(score_a - score_b) / labeler.temperature))
    return (1 - labeler.flip_prob) * p + labeler.flip_prob * (1 - p)


def label_pair(labeler: Labeler, rng: np.random.Generator, score_a: float, score_b: float) -> bool:
    """One seeded draw: True when the labeler prefers a."""
    return bool(rng.random() < preference_prob(labeler, score_a, score_b))
