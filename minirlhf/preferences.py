"""Preference pairs: two SFT samples per prompt, and a simulated labeler who picks one.

This is the data behind both the reward model and DPO (InstructGPT §3.4 collects it the same way:
sample several responses from the SFT model, ask a person which is better):

    x ~ train prompts,   y_a, y_b ~ pi_sft(. | x),   label ~ Labeler(g(x, y_a), g(x, y_b))

The labeler sees the gold scores g, but through a Bradley-Terry draw with a temperature, occasional
clerical flips and optional biases (minirlhf.gold), so some labels disagree with the gold ordering.
Two numbers bound what any model trained on these labels can reach:

  gold_agreement  E[label agrees with the gold ordering], over pairs whose gold scores differ
  bayes           E[max(p, 1 - p)]: the best possible accuracy at *predicting the labels*

A pairs dict has the shared layout ([N, P + R] rows, responses from index PROMPT_WIDTH):
chosen_tokens / chosen_valid, rejected_tokens / rejected_valid, gold_chosen, gold_rejected,
prob_chosen (P(the labeler prefers chosen), before the draw) and kind (index into PROMPT_KINDS).
Only numeric arrays, so it can go straight to the device.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from minirlhf import transformer
from minirlhf.data import RESPONSE_WIDTH, decode_responses, encode_prompts
from minirlhf.gold import Labeler, gold_reward, label_pair, perceived_score, preference_prob
from minirlhf.ops import numpy_rng
from minirlhf.sampling import SampleConfig, generate
from minirlhf.tokenizer import EOS_ID, PAD_ID
from minirlhf.world import PROMPT_KINDS, World, sample_prompts

PAIR_SAMPLE = SampleConfig(max_new_tokens=RESPONSE_WIDTH, temperature=1.0)  # the SFT model's own distribution
PAIR_KEYS = ("chosen_tokens", "chosen_valid", "rejected_tokens", "rejected_valid")  # what training needs


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
    gen = generate(sft_params, jnp.asarray(np.concatenate([p_tok, p_tok])), jnp.asarray(np.concatenate([p_valid, p_valid])),
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


def train_arrays(pairs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Just the arrays a training step reads (drops gold scores, which training must never see)."""
    return {k: pairs[k] for k in PAIR_KEYS}
