"""Critic-free policy gradients: GRPO and RLOO, beside PPO.

PPO learns a value function to tell a good token from a lucky one. GRPO and RLOO drop it: they sample
a GROUP of G responses to the same prompt and let the group be the baseline. Per iteration:

    prompts (batch_size / G of them) --repeat G times--> generate --score--> r_i   (i = 1..G per prompt)
    GRPO:  A_i = (r_i - mean_group r) / std_group r      every token of y_i gets A_i;
           loss = clipped surrogate per token + beta * k3(pi || pi_ref) per token      (DeepSeekMath)
    RLOO:  R_i = r_i - beta * sum_t log(pi / pi_ref)     KL folded into the reward
           A_i = R_i - mean_{j != i} R_j                 the other G - 1 samples are the baseline
           loss = -A_i * ratio of the whole sequence (clipped)                         (Ahmadian et al. 2024)

Shapes follow PPO's (`ppo.py`): B = batch_size rows of [P + R] tokens, the G samples of a prompt in
consecutive rows, so a [B] vector reshapes to [B / G, G] groups. With the same batch_size, one
iteration of either costs the same samples as one of PPO, which is how `experiments/grpo_rloo`
compares them. The loop, the optimizer and the minibatch update are `policy_gradient`'s, shared with PPO.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from minirlhf import policy_gradient
from minirlhf.ops import masked_mean, masked_sum, token_logprobs
from minirlhf.policy_gradient import PGConfig, traced_config
from minirlhf.ppo_losses import kl_estimate
from minirlhf.transformer import ModelConfig, forward

ALGORITHMS = ("grpo", "rloo")
STD_EPS = 1e-4  # keeps a group whose G rewards are all equal (std 0) at advantage 0, not 0/0 (TRL's value)


@traced_config
@dataclass(frozen=True)
class GroupConfig(PGConfig):
    """GRPO / RLOO: the shared fields (`PGConfig`, the same defaults as PPO's, so a comparison changes one
    thing) with a group of G = 4 responses per prompt, and which of the two algorithms.

    beta is a per-token k3 penalty in GRPO's loss, a per-sequence k1 penalty in RLOO's reward.
    """

    group_size: int = 4
    """G: responses sampled per prompt; the group is the baseline, so G >= 2."""
    algorithm: str = "grpo"
    """"grpo" (group-normalised advantages, k3 KL in the loss) or "rloo" (leave-one-out baseline, KL in the reward)."""

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"GroupConfig.algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.group_size < 2:
            raise ValueError(f"GroupConfig.group_size must be >= 2 (a group of 1 has no baseline), got {self.group_size}")
        super().__post_init__()


# ---------------------------------------------------------------- advantages from a group


# GRPO, Shao et al. 2024 (DeepSeekMath), sec. 4.1.2, outcome supervision:
#   A_i = (r_i - mean(r_1..r_G)) / std(r_1..r_G), the same A_i for every token of response i.
def group_advantages(rewards: Float[Array, "prompts group"]) -> Float[Array, "prompts group"]:
    """Each reward minus its group's mean, over the group's std (population std, + STD_EPS)."""
    mean = jnp.mean(rewards, axis=1, keepdims=True)
    std = jnp.std(rewards, axis=1, keepdims=True)
    return (rewards - mean) / (std + STD_EPS)


# RLOO, Ahmadian et al. 2024, eq. 4 (Kool et al. 2019): the baseline of sample i is the mean of the
# OTHER k - 1 samples, so it does not depend on r_i and the gradient estimate stays unbiased:
#   A_i = R_i - 1/(k - 1) sum_{j != i} R_j = R_i - (sum_j R_j - R_i) / (k - 1).
def leave_one_out_advantages(rewards: Float[Array, "prompts group"]) -> Float[Array, "prompts group"]:
    """Each reward minus the mean of the other rewards in its group; every group's advantages sum to 0."""
    k = rewards.shape[1]
    others = (jnp.sum(rewards, axis=1, keepdims=True) - rewards) / (k - 1)
    return rewards - others


# ---------------------------------------------------------------- the two losses


# GRPO's objective (DeepSeekMath eq. 3), as a loss: for each response, the mean over its tokens of
#   -min(rho_t A, clip(rho_t, 1 - eps, 1 + eps) A) + beta k3_t,   rho_t = pi(y_t) / pi_old(y_t),
# then the mean over responses. k3_t = pi_ref/pi - log(pi_ref/pi) - 1 >= 0 (Schulman 2020) is taken
# against the reference, in the loss rather than in the reward.
def grpo_loss(logprobs: Float[Array, "batch seq"], old_logprobs: Float[Array, "batch seq"],
              ref_logprobs: Float[Array, "batch seq"], advantages: Float[Array, " batch"],
              mask: Bool[Array, "batch seq"], cliprange: float, beta: float) -> tuple[Float[Array, ""], dict]:
    """(loss, metrics) on one minibatch; `advantages` has one value per response, broadcast over its tokens."""
    ratio = jnp.exp(logprobs - old_logprobs)  # [B, T]
    adv = advantages[:, None]  # [B, 1]
    surrogate = jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, 1 - cliprange, 1 + cliprange))  # [B, T]
    kl = kl_estimate(logprobs - ref_logprobs, "k3")  # [B, T], >= 0
    per_response = masked_mean(surrogate + beta * kl, mask, axis=1)  # [B]: 1/|o_i| sum_t
    metrics = {"loss/policy": jnp.mean(masked_mean(surrogate, mask, axis=1)),
               "policy/clipfrac": masked_mean(jnp.abs(ratio - 1) > cliprange, mask),
               "objective/k3": jnp.mean(masked_sum(kl, mask, axis=1))}
    return jnp.mean(per_response), metrics


# RLOO's loss (Ahmadian et al. 2024, eq. 4, REINFORCE with a leave-one-out baseline), in TRL's
# RLOOTrainer form with a per-SEQUENCE ratio rho = pi(y) / pi_old(y) clipped like PPO's:
#   L = mean_i max(-A_i rho_i, -A_i clip(rho_i, 1 - eps, 1 + eps)).
# At rho = 1 (the first step on fresh samples) its gradient is exactly REINFORCE's, -A_i grad log pi(y_i).
def rloo_loss(logprobs: Float[Array, "batch seq"], old_logprobs: Float[Array, "batch seq"],
              advantages: Float[Array, " batch"], mask: Bool[Array, "batch seq"],
              cliprange: float) -> tuple[Float[Array, ""], dict]:
    """(loss, metrics) on one minibatch; log pi(y) is the SUM of the response's token log-probs."""
    ratio = jnp.exp(masked_sum(logprobs - old_logprobs, mask, axis=1))  # [B]
    surrogate = jnp.maximum(-advantages * ratio, -advantages * jnp.clip(ratio, 1 - cliprange, 1 + cliprange))
    metrics = {"loss/policy": jnp.mean(surrogate), "policy/clipfrac": jnp.mean(jnp.abs(ratio - 1) > cliprange)}
    return jnp.mean(surrogate), metrics


# ---------------------------------------------------------------- the batch and the loss (jitted, static shapes)


class GroupBatch(NamedTuple):
    """One iteration's samples; rows i*G .. i*G + G - 1 answer prompt i."""

    tokens: Int[Array, "batch seq"]
    valid: Bool[Array, "batch seq"]
    mask: Bool[Array, "batch seq"]  # real response tokens
    logprobs: Float[Array, "batch seq"]  # log pi_old
    ref_logprobs: Float[Array, "batch seq"]
    advantages: Float[Array, " batch"]  # one per response


@partial(jax.jit, static_argnames=("reward_fn", "model_cfg"))
def make_group_batch(params: dict, ref_params: dict, reward_params, tokens: Int[Array, "batch seq"],
                     valid: Bool[Array, "batch seq"], reward_fn: Callable, model_cfg: ModelConfig,
                     cfg: GroupConfig) -> tuple[GroupBatch, dict]:
    """Score a batch of groups: log-probs, reference log-probs, rewards and the algorithm's advantages."""
    s = policy_gradient.score_samples(params["policy"], ref_params, reward_params, tokens, valid, reward_fn,
                                      model_cfg, cfg)
    kl = masked_sum(s.logprobs - s.ref_logprobs, s.mask, axis=1)  # [B]: k1 summed over the response
    groups = lambda x: x.reshape(cfg.n_prompts, cfg.group_size)  # [B] -> [B / G, G]
    if cfg.algorithm == "grpo":
        advantages = group_advantages(groups(s.scores)).reshape(-1)
    else:
        advantages = leave_one_out_advantages(groups(s.scores - cfg.beta * kl)).reshape(-1)
    metrics = {"objective/kl": jnp.mean(kl), "objective/scores": jnp.mean(s.scores),
               "objective/rlhf_reward": jnp.mean(s.scores - cfg.beta * kl),
               "objective/group_std": jnp.mean(jnp.std(groups(s.scores), axis=1)),  # 0: the group teaches nothing
               "response_length": jnp.mean(jnp.sum(s.mask, axis=1))}
    return GroupBatch(tokens, valid, s.mask, s.logprobs, s.ref_logprobs, advantages), metrics


def group_loss(params: dict, batch: GroupBatch, model_cfg: ModelConfig, cfg: GroupConfig) -> tuple[jax.Array, dict]:
    """GRPO's or RLOO's loss on one minibatch; params = {"policy"}."""
    logits = forward(params["policy"], batch.tokens, batch.valid, model_cfg).logits
    logprobs = token_logprobs(logits, batch.tokens, cfg.temperature)  # [B, T]
    if cfg.algorithm == "grpo":
        return grpo_loss(logprobs, batch.logprobs, batch.ref_logprobs, batch.advantages, batch.mask,
                         cfg.cliprange, cfg.beta)
    return rloo_loss(logprobs, batch.logprobs, batch.advantages, batch.mask, cfg.cliprange)


# ---------------------------------------------------------------- the loop


def train_group(key: jax.Array, policy_params: dict, ref_params: dict, reward_fn: Callable, reward_params,
                prompt_fn: Callable, model_cfg: ModelConfig, cfg: GroupConfig = GroupConfig(),
                gold_fn: Callable | None = None,
                on_iteration: Callable[[int, dict], None] | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Run GRPO or RLOO: `ppo.train_ppo`'s arguments, without a value model. Returns (params, history)."""
    return policy_gradient.train(key, {"policy": policy_params}, ref_params, reward_fn, reward_params, prompt_fn,
                                 model_cfg, cfg, make_group_batch, group_loss, cfg.algorithm, gold_fn, on_iteration)
