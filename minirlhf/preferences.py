"""Preference pairs: two SFT samples per prompt, and a simulated labeler who picks one.

This is the data behind both the reward model and DPO (InstructGPT §3.4 collects it the same way:
sample several responses from the SFT model, ask a person which is better):

    x ~ train prompts,   y_a, y_b ~ pi_sft(. | x),   label ~ Labeler(g(x, y_a), g(x, y_b))

The labeler sees the gold scores g, but through a Bradley-Terry draw with a temperature, occasional
clerical flips and optional biases (`Labeler`, below), so some labels disagree with the gold ordering.
Two numbers bound what any model trained on these labels can reach:

  gold_agreement  E[label agrees with the gold ordering], over pairs whose gold scores differ
  bayes           E[max(p, 1 - p)]: the best possible accuracy at *predicting the labels*

A pairs dict has the shared layout ([N, P + R] rows, responses from index PROMPT_WIDTH):
chosen_tokens / chosen_valid, rejected_tokens / rejected_valid, gold_chosen, gold_rejected,
prob_chosen (P(the labeler prefers chosen), before the draw) and kind (index into PROMPT_KINDS).
Only numeric arrays, so it can go straight to the device.

A pair's *type* (`pair_types`) is its prompt's kind and what separates its two responses: the first gold
component on which they differ, in the order harmless, format, correct, calibrated, concise (`SEPARATORS`).
Accuracy by type shows *which* judgements an RM has learned ("secret: leak" pairs) and which not
("math: right/wrong"), where one overall accuracy blurs them.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from minirlhf import transformer
from minirlhf.data import PROMPT_WIDTH, RESPONSE_WIDTH, decode_responses, encode_prompts
from minirlhf.gold import gold_components, gold_reward
from minirlhf.ops import numpy_rng
from minirlhf.sampling import SampleConfig, generate
from minirlhf.tokenizer import EOS_ID, PAD_ID, THINGS, decode
from minirlhf.world import (PROMPT_KINDS, Prompt, World, color_prompt, math_prompt, parse_response, sample_prompts,
                            secret_prompt)

PAIR_SAMPLE = SampleConfig(max_new_tokens=RESPONSE_WIDTH, temperature=1.0)  # the SFT model's own distribution
PAIR_KEYS = ("chosen_tokens", "chosen_valid", "rejected_tokens", "rejected_valid")  # what training needs
# What can separate two responses, in the order a pair's type is read: the first gold component that differs.
# "correct" splits in two: a refusal against an answer, or two answers of which one is right ("right/wrong").
SEPARATORS = ("leak", "format", "refusal", "right/wrong", "confidence", "rambling")


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


# ---------------------------------------------------------------- labelled pairs


def make_pairs(
    key: jax.Array,
    sft_params: dict,
    world: World,
    model_cfg: transformer.ModelConfig,
    n_pairs: int,
    labeler: Labeler = Labeler(),
    split: str = "train",
) -> dict[str, np.ndarray]:
    """n_pairs labelled comparisons of two SFT samples to the same prompt (see the module docstring)."""
    key_prompts, key_sample, key_labels = jax.random.split(key, 3)
    prompts = sample_prompts(world, numpy_rng(key_prompts), n_pairs, split)
    p_tok, p_valid = encode_prompts(prompts)  # [N, P]
    # Both responses in one call: rows 0..N-1 are response a, rows N..2N-1 response b.
    gen = generate(sft_params, jax.device_put(np.concatenate([p_tok, p_tok])), jax.device_put(np.concatenate([p_valid, p_valid])),
                   key_sample, model_cfg, PAIR_SAMPLE, EOS_ID, PAD_ID)
    tokens, valid = np.asarray(gen.tokens), np.asarray(gen.valid)  # [2N, P + R]
    decoded = decode_responses(tokens)  # [(words, ended)] * 2N
    gold = np.array([gold_reward(prompts[i % n_pairs], w, ended, world.secret) for i, (w, ended) in enumerate(decoded)])
    seen = np.array([perceived_score(labeler, g, w) for g, (w, _) in zip(gold, decoded)])  # what the labeler values

    rng_labels = numpy_rng(key_labels)
    a, b = np.arange(n_pairs), np.arange(n_pairs, 2 * n_pairs)
    prob_a = np.array([preference_prob(labeler, seen[i], seen[j]) for i, j in zip(a, b)])  # P(a preferred)
    a_wins = np.array([label_pair(labeler, rng_labels, seen[i], seen[j]) for i, j in zip(a, b)])
    chosen, rejected = np.where(a_wins, a, b), np.where(a_wins, b, a)
    return {
        "chosen_tokens": tokens[chosen], "chosen_valid": valid[chosen],
        "rejected_tokens": tokens[rejected], "rejected_valid": valid[rejected],
        "gold_chosen": gold[chosen], "gold_rejected": gold[rejected],
        "prob_chosen": np.where(a_wins, prob_a, 1 - prob_a),
        "kind": np.array([PROMPT_KINDS.index(p.kind) for p in prompts]),
    }


def label_noise_ceiling(pairs: dict[str, np.ndarray]) -> dict[str, float]:
    """How good can a model trained on these labels look? (expectations, not this draw's luck)

    gold_agreement: mean over pairs with distinct gold scores of P(label agrees with the gold order).
    bayes: mean of max(p, 1 - p), the accuracy of the best possible predictor of the *labels*.
    """
    p = np.asarray(pairs["prob_chosen"])  # P(labeler prefers chosen); the same pair unordered
    gold_diff = np.asarray(pairs["gold_chosen"]) - np.asarray(pairs["gold_rejected"])
    distinct = gold_diff != 0
    agree = np.where(gold_diff > 0, p, 1 - p)  # P(the labeler's pick is the gold-better response)
    return {
        "gold_agreement": float(agree[distinct].mean()) if distinct.any() else float("nan"),
        "bayes": float(np.maximum(p, 1 - p).mean()),
        "distinct_gold_share": float(distinct.mean()),
    }


# ---------------------------------------------------------------- pair types


def prompts_by_words(world: World) -> dict[tuple[str, ...], Prompt]:
    """Every prompt the world can ask, by its words: pairs store tokens, and a type needs the Prompt (its answer)."""
    prompts = [math_prompt(*q) for q in world.train_math + world.heldout_math]
    prompts += [color_prompt(i) for i in range(len(THINGS))] + [secret_prompt(world, v) for v in (0, 1)]
    return {p.words: p for p in prompts}


def separator(prompt: Prompt, a: tuple[list[str], bool], b: tuple[list[str], bool], secret: tuple[str, ...]) -> str:
    """What separates responses a and b (each (words, ended)): the first gold component that differs, or "same"."""
    ga, gb = gold_components(prompt, *a, secret), gold_components(prompt, *b, secret)
    for component, name in (("harmless", "leak"), ("format", "format"), ("correct", None),
                            ("calibrated", "confidence"), ("concise", "rambling")):
        if ga[component] != gb[component]:
            if name is None:  # correct: a refusal against an answer, or a right value against a wrong one
                refusals = parse_response(*a, secret).refusal, parse_response(*b, secret).refusal
                name = "refusal" if refusals[0] != refusals[1] else "right/wrong"
            return name
    return "same"


def pair_types(world: World, pairs: dict[str, np.ndarray]) -> list[str]:
    """Each pair's type, "kind: separator" (e.g. "math: right/wrong"), read from its tokens, [N]."""
    lookup = prompts_by_words(world)
    prompts = [lookup[tuple(decode(row[:PROMPT_WIDTH]).split())] for row in np.asarray(pairs["chosen_tokens"])]
    chosen, rejected = decode_responses(pairs["chosen_tokens"]), decode_responses(pairs["rejected_tokens"])
    return [f"{q.kind}: {separator(q, a, b, world.secret)}" for q, a, b in zip(prompts, chosen, rejected)]


def type_order(types) -> list[str]:
    """The distinct types in a fixed order (kind, then separator), for tables that read the same every run."""
    rank = {f"{k}: {s}": i for i, (k, s) in enumerate((k, s) for k in PROMPT_KINDS for s in (*SEPARATORS, "same"))}
    return sorted(set(types), key=lambda t: rank.get(t, len(rank)))


def subset(pairs: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    """The pairs where mask is True, every array cut alike."""
    return {k: np.asarray(v)[mask] for k, v in pairs.items()}


def train_arrays(pairs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Just the arrays a training step reads (drops gold scores, which training must never see)."""
    return {k: pairs[k] for k in PAIR_KEYS}
