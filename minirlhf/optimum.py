"""The exact KL-regularised optimum: the policy RLHF's objective asks for, computed instead of learned.

PPO maximises, for each prompt x, the reward minus beta times the distance from the SFT model,

    J(pi) = E_{y ~ pi}[r(x, y)] - beta KL(pi(.|x) || pi_sft(.|x)),

and that maximiser has a closed form (Rafailov et al. 2023, eq. 4; Korbak, Perez, Buckley 2022):

    pi*_beta(y|x) = pi_sft(y|x) exp(r(x, y) / beta) / Z(x),     Z(x) = sum_y pi_sft(y|x) exp(r(x, y) / beta),

with J(pi*) = beta log Z(x). So with r the reward model, pi* is where a perfect optimizer would land; with r the
gold reward, it is the most gold any policy can have at its KL. Any other policy sits on or below that curve.

Z sums over every response, which nobody can list. A small model puts most of its mass on a few responses, so:

  Support. Draw many SFT samples of a prompt and keep the distinct responses D, with their exact
  log pi_sft(y|x) from one forward pass. `coverage` c = sum_{y in D} pi_sft(y|x) says how much of SFT's mass
  D holds. As `best_of_n.finite_best_of_n_kl` does, treat D as the whole space: renormalise pi_sft over it
  (pi~ = pi_sft / c). The weights w = pi*_beta on D are the same either way (the 1/c cancels in Z); the KL
  and log Z are taken against pi~, and estimate those of the full optimum as c -> 1.
  The same weights read as a policy that never leaves D have the exact KL(w || pi_sft) = KL(w || pi~) + log(1/c):
  that policy is a real one, and beta log(c Z~) is a lower bound on the true optimum's J.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import numpy as np
from jaxtyping import Float, Int
from scipy.special import logsumexp

from minirlhf import dpo, reward_model, transformer
from minirlhf.best_of_n import distinct_responses
from minirlhf.data import PROMPT_WIDTH
from minirlhf.sampling import sample
from minirlhf.world import Prompt


class Support(NamedTuple):
    """The distinct responses drawn for one prompt, each once."""

    tokens: Int[np.ndarray, "k seq"]  # the shared [P + R] layout
    logprobs: Float[np.ndarray, " k"]  # exact log pi_sft(y|x), EOS included
    scores: Float[np.ndarray, " k"]  # the reward model's r(x, y)
    counts: Int[np.ndarray, " k"]  # how many of the draws were this response (the empirical distribution)


# ---------------------------------------------------------------- the support


@partial(jax.jit, static_argnames="cfg")
def _logprobs_and_scores(sft_params: dict, rm_params: dict, tokens, valid, cfg: transformer.ModelConfig):
    """log pi_sft(y|x) (one forward pass) and the RM's score of every drawn row: one compiled call per draw count."""
    return dpo.sequence_logprobs(sft_params, tokens, valid, cfg), reward_model.reward(rm_params, tokens, valid, cfg)


def draw_support(key: jax.Array, sft_params: dict, rm_params: dict, prompt: Prompt, cfg: transformer.ModelConfig,
                 draws: int) -> Support:
    """`draws` SFT samples of `prompt`, kept once each; log-probs and scores are computed for all rows first, so
    the compiled shapes do not depend on how many responses turn out distinct."""
    gen = sample(sft_params, cfg, [prompt] * draws, key)
    return support(gen.tokens, gen.valid, sft_params, rm_params, cfg)


def support(tokens, valid, sft_params: dict, rm_params: dict, cfg: transformer.ModelConfig) -> Support:
    """The distinct responses among drawn rows `tokens [M, P + R]` (with `valid`), with their SFT log-probs, scores
    and counts: `draw_support` for draws already made (best-of-n's, say)."""
    logprobs, scores = map(np.asarray, _logprobs_and_scores(sft_params, rm_params, tokens, valid, cfg))
    tokens = np.asarray(tokens)  # [M, P + R]
    keep = distinct_responses(tokens)  # [k]: each response's first draw
    same = np.all(tokens[keep, None, PROMPT_WIDTH:] == tokens[None, :, PROMPT_WIDTH:], axis=-1)  # [k, M]
    counts = same.sum(axis=1)  # [k]
    return Support(tokens[keep], logprobs[keep].astype(np.float64), scores[keep].astype(np.float64), counts)


def coverage(logprobs: Float[np.ndarray, " k"]) -> float:
    """c = sum_{y in D} pi_sft(y|x): the share of SFT's probability the distinct responses hold (<= 1)."""
    return float(np.exp(logsumexp(logprobs)))


def renormalised(logprobs: Float[np.ndarray, " k"]) -> Float[np.ndarray, " k"]:
    """log pi~(y) = log pi_sft(y|x) - log c: SFT restricted to the support, summing to one there."""
    logprobs = np.asarray(logprobs, np.float64)
    return logprobs - logsumexp(logprobs)


# ---------------------------------------------------------------- pi* on the support


# Rafailov et al. 2023, eq. 4:  log pi*(y) = log pi_sft(y) + r(y) / beta - log Z.
# Log-sum-exp keeps it finite when r / beta is huge (small beta), where exp would overflow.
def log_weights(logprobs: Float[np.ndarray, " k"], rewards: Float[np.ndarray, " k"], beta: float) -> Float[np.ndarray, " k"]:
    """log pi*_beta(y|x) over the support (they sum to one in probability). Responses tied at the top reward
    share the limit beta -> 0 in proportion to pi_sft."""
    if not beta > 0:
        raise ValueError(f"the KL-regularised optimum needs beta > 0, got {beta}")
    logits = renormalised(logprobs) + np.asarray(rewards, np.float64) / beta
    return logits - logsumexp(logits)


# log Z~ = log sum_{y in D} pi~(y) exp(r(y) / beta); beta log Z~ is the objective's optimal value J(pi*).
def log_partition(logprobs: Float[np.ndarray, " k"], rewards: Float[np.ndarray, " k"], beta: float) -> float:
    """log Z~ over the support, with pi_sft renormalised on it."""
    return float(logsumexp(renormalised(logprobs) + np.asarray(rewards, np.float64) / beta))


def expect(log_w: Float[np.ndarray, " k"], values: Float[np.ndarray, " k"]) -> float:
    """E_{y ~ pi*}[values(y)] = sum_y w(y) values(y)."""
    return float(np.sum(np.exp(log_w) * np.asarray(values, np.float64)))


# KL(pi* || pi~) = sum_y w(y) (log w(y) - log pi~(y)); equal to E_pi*[r] / beta - log Z~, but the direct sum has
# no cancellation between two large terms when beta is small.
def kl_to_sft(log_w: Float[np.ndarray, " k"], logprobs: Float[np.ndarray, " k"]) -> float:
    """KL(pi* || pi_sft renormalised on the support), nats."""
    return float(np.sum(np.exp(log_w) * (log_w - renormalised(logprobs))))


def optimum(logprobs: Float[np.ndarray, " k"], rewards: Float[np.ndarray, " k"], beta: float,
            values: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """pi*_beta for reward `rewards` on one prompt's support: E[r], KL to pi~, J = beta log Z~, and E[v] of each
    named array in `values` (e.g. the gold reward of the same responses). kl_restricted, objective_restricted:
    the exact KL to pi_sft and J of the same weights as a policy that stays on the support (module docstring)."""
    log_w = log_weights(logprobs, rewards, beta)
    kl = kl_to_sft(log_w, logprobs)
    log_c, objective = np.log(coverage(logprobs)), beta * log_partition(logprobs, rewards, beta)
    out = {"reward": expect(log_w, rewards), "kl": kl, "objective": objective,
           "kl_restricted": kl - log_c, "objective_restricted": objective + beta * log_c}
    return out | {name: expect(log_w, v) for name, v in (values or {}).items()}
