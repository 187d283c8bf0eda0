"""Measuring a policy: gold reward, answer rate, and exact KL to a reference model.

These are the course's ground truth. Gold reward and answer rate read decoded samples; the KL is
computed exactly over the (small) vocabulary at every sampled position,

    KL(pi || pi_ref) = E_{y ~ pi} sum_t sum_v pi(v | x, y_<t) (log pi(v | x, y_<t) - log pi_ref(v | x, y_<t)),

so it has no estimator noise beyond the choice of sampled prefixes.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from minirlhf import transformer
from minirlhf.data import PROMPT_WIDTH, decode_responses, response_mask
from minirlhf.gold import gold_reward
from minirlhf.ops import exact_kl, masked_sum
from minirlhf.sampling import sample
from minirlhf.tokenizer import EOS_ID, PAD_ID
from minirlhf.world import Prompt, World, parse_response

def gold_scores(world: World, prompts: list[Prompt], tokens: np.ndarray) -> np.ndarray:
    """The ideal human's score of every sampled response, [B]."""
    return np.array([gold_reward(p, w, ended, world.secret) for p, (w, ended) in zip(prompts, decode_responses(tokens))])


def answered(world: World, tokens: np.ndarray) -> np.ndarray:
    """Does each response take the assistant's format at all? [B] bools."""
    return np.array([parse_response(w, ended, world.secret).formatted for w, ended in decode_responses(tokens)])


@partial(jax.jit, static_argnames=("cfg", "temperature"))
def sequence_kl(params: dict, ref_params: dict, tokens, valid, cfg: transformer.ModelConfig, temperature: float = 1.0):
    """Exact KL(pi || pi_ref) summed over each response's positions, [B] (nats)."""
    logits, _ = transformer.forward(params, tokens, valid, cfg)
    ref_logits, _ = transformer.forward(ref_params, tokens, valid, cfg)
    kl = exact_kl(logits, ref_logits, temperature)  # [B, T], aligned with the token it predicts
    return masked_sum(kl, response_mask(valid), axis=1)


def evaluate(params: dict, cfg: transformer.ModelConfig, world: World, prompts: list[Prompt], key: jax.Array,
             ref_params: dict | None = None, tokens: np.ndarray | None = None) -> dict:
    """Gold reward, answer rate and (with ref_params) KL to the reference, on prompts' samples.

    Pass `tokens` to score given responses (e.g. best-of-n picks) instead of sampling new ones.
    """
    if tokens is None:
        gen = sample(params, cfg, prompts, key)
        tokens, valid = np.asarray(gen.tokens), np.asarray(gen.valid)
    else:
        valid = _valid_from_tokens(tokens)
    gold = gold_scores(world, prompts, tokens)
    result = {"gold_reward": float(gold.mean()), "answer_rate": float(answered(world, tokens).mean()), "gold": gold}
    if ref_params is not None:
        kl = sequence_kl(params, ref_params, jnp.asarray(tokens), jnp.asarray(valid), cfg)
        result["kl_to_sft"] = float(np.mean(kl))
    result["tokens"], result["valid"] = tokens, valid
    return result


def _valid_from_tokens(tokens: np.ndarray) -> np.ndarray:
    """Valid mask for the shared layout: prompt non-pad, response up to and including EOS."""
    tokens = np.asarray(tokens)
    valid = tokens != PAD_ID
    resp = tokens[:, PROMPT_WIDTH:]
    after_eos = np.cumsum(resp == EOS_ID, axis=1) - (resp == EOS_ID) > 0
    valid[:, PROMPT_WIDTH:] &= ~after_eos
    return valid
