"""Best-of-n: the simplest way to use a reward model, and the baseline every RL method must beat.

For each prompt, draw n responses from the SFT model, score them with the reward model, keep the
best. No training at all; the price is n samples per answer, and the policy it defines drifts from
SFT by at most (Beirami et al. 2024, tightening the log n - (n-1)/n of Stiennon et al. 2020)

    KL(best-of-n || pi_sft) <= log n - (n - 1) / n.

The bound is reached when every response has tiny probability (a continuous space). A small
language model puts much of its mass on a few responses, and then best-of-n moves less. We measure
that, since the exact KL needs the probability of *every* response, which we do not have:

  Estimate. Draw M >> n responses per prompt from SFT and keep the distinct ones D. Their exact
  probabilities pi(y) come from the sampler's log-probs (a sum over tokens). Treat D, with pi
  renormalised over it, as the whole sample space; there best-of-n has a closed form. Sort D by
  reward, let F(y) = P(r(Y) <= r(y)) and F_-(y) = P(r(Y) < r(y)); the best of n draws is y iff all
  n land at or below y and not all strictly below, so (ties share their group's mass pro rata)

      q(y) = F(y)^n - F_-(y)^n,        KL = sum_y q(y) log(q(y) / pi(y)).

  `coverage` = sum_{y in D} pi(y) says how much of SFT's mass D holds: near 1, the estimate is close
  to the true KL; well below 1, the unseen tail is missing from it. That is what is estimated.

  Cross-check: on the default SFT model and RM this estimate comes out *below* the plug-in estimate
  E_q[log q_hat - log pi] from thousands of best-of-n picks per prompt. The plug-in is biased upward (it can
  even exceed the bound), so the true KL most likely lies between the two.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int
from tqdm.auto import tqdm

from minirlhf import transformer
from minirlhf.data import PROMPT_WIDTH, encode_prompts
from minirlhf.reward_model import reward
from minirlhf.sampling import EVAL_SAMPLE, SampleConfig, generate
from minirlhf.tokenizer import EOS_ID, PAD_ID
from minirlhf.world import Prompt


class BestOfN(NamedTuple):
    tokens: Int[Array, "batch seq"]  # the picked response per prompt, in the shared [B, P + R] layout
    valid: Bool[Array, "batch seq"]
    scores: Float[Array, " batch"]  # the reward model's score of the pick
    candidates: Int[Array, "batch n seq"]  # all n samples per prompt
    candidate_valid: Bool[Array, "batch n seq"]
    candidate_scores: Float[Array, "batch n"]
    picks: Int[Array, " batch"]  # index of the pick among the candidates


@partial(jax.jit, static_argnames=("cfg", "n", "sample_cfg"))
def sample_best_of_n(sft_params, rm_params, prompt_tokens: Int[Array, "batch prompt"], prompt_valid: Bool[Array, "batch prompt"],
                     key, cfg: transformer.ModelConfig, n: int, sample_cfg: SampleConfig = EVAL_SAMPLE) -> BestOfN:
    """n samples per prompt in one batch of B * n rows, scored, reshaped to [B, n], argmax per prompt."""
    B = prompt_tokens.shape[0]
    rows_tok, rows_valid = jnp.repeat(prompt_tokens, n, axis=0), jnp.repeat(prompt_valid, n, axis=0)  # prompt b at rows b*n..b*n+n-1
    gen = generate(sft_params, rows_tok, rows_valid, key, cfg, sample_cfg, EOS_ID, PAD_ID)  # [B*n, T]
    scores = reward(rm_params, gen.tokens, gen.valid, cfg).reshape(B, n)  # [B, n]
    picks = jnp.argmax(scores, axis=1)  # [B]
    candidates, cand_valid = gen.tokens.reshape(B, n, -1), gen.valid.reshape(B, n, -1)  # [B, n, T]
    pick = lambda x: jnp.take_along_axis(x, picks[:, None, None], axis=1)[:, 0]  # [B, n, T] -> [B, T]
    best_score = jnp.take_along_axis(scores, picks[:, None], axis=1)[:, 0]
    return BestOfN(pick(candidates), pick(cand_valid), best_score, candidates, cand_valid, scores, picks)


def best_of_n(key: jax.Array, sft_params: dict, rm_params: dict, prompts: list[Prompt], cfg: transformer.ModelConfig,
              n: int, sample_cfg: SampleConfig = EVAL_SAMPLE) -> BestOfN:
    """Best of n SFT samples for each prompt, by reward model score. n = 1 is plain sampling."""
    check_inputs(sft_params, rm_params, prompts, cfg, n, "best_of_n")
    tokens, valid = encode_prompts(prompts)
    return sample_best_of_n(sft_params, rm_params, jax.device_put(tokens), jax.device_put(valid), key, cfg, n, sample_cfg)


def check_inputs(sft_params: dict, rm_params: dict, prompts: list[Prompt], cfg: transformer.ModelConfig, n: int,
                 what: str) -> None:
    """Before sampling: n >= 1, some prompts, and both models of config cfg."""
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"{what} needs an integer n >= 1 (samples per prompt), got {n!r}")
    if len(prompts) == 0:
        raise ValueError(f"{what} got no prompts: pass at least one")
    transformer.check_params(sft_params, cfg, f"{what}'s SFT model")
    transformer.check_params(rm_params, cfg, f"{what}'s reward model")


def kl_bound(n: int) -> float:
    """log n - (n - 1) / n: the most best-of-n can move from its base distribution (Beirami et al. 2024)."""
    if not n >= 1:
        raise ValueError(f"kl_bound needs n >= 1 (the number of samples best-of-n picks from), got {n}")
    return float(np.log(n) - (n - 1) / n)


def finite_best_of_n_kl(logprobs: Float[np.ndarray, " m"], scores: Float[np.ndarray, " m"], n: int) -> float:
    """Exact KL(best-of-n || pi) when pi lives on these m distinct responses (renormalised over them)."""
    check_responses(logprobs, scores, n)
    p = np.exp(np.asarray(logprobs, np.float64) - np.max(logprobs))
    p /= p.sum()
    levels, group = np.unique(np.asarray(scores), return_inverse=True)  # equal scores form one group
    mass = np.bincount(group.reshape(-1), weights=p, minlength=len(levels))  # pi of each score level, ascending
    F = np.minimum(np.cumsum(mass), 1.0)  # P(r(Y) <= level)
    q_level = F**n - (F - mass) ** n  # the max of n draws lands on this level
    q = q_level[group] * p / mass[group]  # a tied group's q is shared in proportion to pi
    keep = q > 0
    return float(np.sum(q[keep] * np.log(q[keep] / p[keep])))


def check_responses(logprobs, scores, n: int) -> None:
    """finite_best_of_n_kl's inputs: one finite log-prob and one finite score per response, at least one response."""
    logprobs, scores = np.asarray(logprobs), np.asarray(scores)
    if logprobs.ndim != 1 or logprobs.shape != scores.shape or logprobs.size == 0:
        raise ValueError(f"logprobs and scores must be 1-D, one entry per response, of the same length >= 1; got "
                         f"shapes {logprobs.shape} and {scores.shape}")
    for name, x in (("logprobs", logprobs), ("scores", scores)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name}[{int(np.argmax(~np.isfinite(x)))}] is {x[~np.isfinite(x)][0]}: the KL needs "
                             f"finite values (a NaN would silently drop that response)")
    if not n >= 1:
        raise ValueError(f"n must be >= 1, got {n}")


def distinct_responses(tokens: Int[np.ndarray, "m seq"]) -> np.ndarray:
    """Row indices of the first occurrence of each distinct response (padding after EOS is already uniform)."""
    _, first = np.unique(np.asarray(tokens)[:, PROMPT_WIDTH:], axis=0, return_index=True)
    return np.sort(first)


def best_of_n_kl(key: jax.Array, sft_params: dict, rm_params: dict, prompts: list[Prompt], cfg: transformer.ModelConfig,
                 n: int, n_draws: int = 256, sample_cfg: SampleConfig = EVAL_SAMPLE) -> dict:
    """Estimated KL(best-of-n || pi_sft) per prompt from n_draws SFT samples each (method: module docstring)."""
    if sample_cfg.top_k is not None:
        raise ValueError("best_of_n_kl measures KL to the sampling distribution; top-k sampling changes it, use top_k=None")
    check_inputs(sft_params, rm_params, prompts, cfg, n, "best_of_n_kl")
    if n_draws < 1:
        raise ValueError(f"best_of_n_kl needs n_draws >= 1 (SFT samples per prompt), got {n_draws}")
    kls, coverage = [], []
    per_prompt = zip(prompts, jax.random.split(key, len(prompts)))
    for prompt, key_prompt in tqdm(per_prompt, total=len(prompts), desc=f"best-of-{n} KL", leave=False):
        tokens, valid = encode_prompts([prompt] * n_draws)  # [M, P]: one prompt, M draws
        drawn = _generate_and_score(sft_params, rm_params, jax.device_put(tokens), jax.device_put(valid), key_prompt, cfg, sample_cfg)
        seq_logprobs, scores, responses = map(np.asarray, drawn)  # [M], [M], [M, P + R]
        keep = distinct_responses(responses)
        coverage.append(float(np.exp(seq_logprobs[keep]).sum()))
        kls.append(finite_best_of_n_kl(seq_logprobs[keep], scores[keep], n))
    return {"kl": float(np.mean(kls)), "kl_per_prompt": np.array(kls), "coverage": float(np.mean(coverage)),
            "bound": kl_bound(n)}


@partial(jax.jit, static_argnames=("cfg", "sample_cfg"))
def _generate_and_score(sft_params, rm_params, prompt_tokens, prompt_valid, key, cfg, sample_cfg):
    """SFT samples with their sequence log-probs (sum over the response) and reward-model scores."""
    gen = generate(sft_params, prompt_tokens, prompt_valid, key, cfg, sample_cfg, EOS_ID, PAD_ID)
    return gen.logprobs.sum(axis=1), reward(rm_params, gen.tokens, gen.valid, cfg), gen.tokens
