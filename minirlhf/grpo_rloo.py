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
compares them. The loop reuses PPO's optimizer (linear decay), `generate`, and its metrics' names.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int
from tqdm.auto import tqdm

from minirlhf.data import RESPONSE_WIDTH, encode_prompts, response_mask
from minirlhf.ops import masked_mean, masked_sum, numpy_rng, token_logprobs
from minirlhf.ppo import ppo_optimizer
from minirlhf.ppo_losses import kl_estimate
from minirlhf.sampling import SampleConfig, generate
from minirlhf.tokenizer import EOS_ID, PAD_ID
from minirlhf.training import TrainState, check_finite
from minirlhf.transformer import ModelConfig, forward

ALGORITHMS = ("grpo", "rloo")
STD_EPS = 1e-4  # keeps a group whose G rewards are all equal (std 0) at advantage 0, not 0/0 (TRL's value)


@dataclass(frozen=True)
class GroupConfig:
    """GRPO / RLOO hyperparameters; the shared ones default to PPOConfig's, so a comparison changes one thing."""

    algorithm: str = "grpo"
    """"grpo" (group-normalised advantages, k3 KL in the loss) or "rloo" (leave-one-out baseline, KL in the reward)."""
    group_size: int = 4
    """G: responses sampled per prompt; the group is the baseline, so G >= 2."""
    iterations: int = 100
    """Sample-then-update rounds."""
    batch_size: int = 64
    """Responses per iteration (batch_size / G prompts), the same count as PPO's batch."""
    ppo_epochs: int = 4
    """Passes over each batch (PPO's default). With 1 epoch and 1 minibatch every step is on-policy."""
    minibatches: int = 2
    """Each epoch splits the batch into this many minibatches of whole groups, one optimizer step each."""
    lr: float = 3e-4
    """Adam learning rate, decayed linearly to 0 (as PPO's)."""
    beta: float = 0.2
    """KL coefficient: a per-token k3 penalty in GRPO's loss, a per-sequence k1 penalty in RLOO's reward."""
    cliprange: float = 0.2
    """epsilon of the clipped ratio (per token in GRPO, per sequence in RLOO)."""
    temperature: float = 1.0
    """Sampling temperature, used again in every log-prob."""
    response_width: int = RESPONSE_WIDTH
    """R: response tokens generated per prompt."""
    max_grad_norm: float = 1.0
    """Global-norm gradient clipping."""

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"GroupConfig.algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.group_size < 2:
            raise ValueError(f"GroupConfig.group_size must be >= 2 (a group of 1 has no baseline), got {self.group_size}")
        for name in ("iterations", "ppo_epochs", "minibatches", "response_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"GroupConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % (self.group_size * self.minibatches):
            raise ValueError(f"GroupConfig.batch_size={self.batch_size} must split into minibatches={self.minibatches} "
                             f"of whole groups of group_size={self.group_size}")
        for name in ("lr", "cliprange", "temperature", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GroupConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.beta < 0:
            raise ValueError(f"GroupConfig.beta must be >= 0, got {self.beta}")

    @property
    def n_prompts(self) -> int:
        return self.batch_size // self.group_size

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.minibatches

    @property
    def n_updates(self) -> int:  # read by ppo_optimizer, like lr and max_grad_norm
        return self.iterations * self.ppo_epochs * self.minibatches


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


# ---------------------------------------------------------------- rollout and update (jitted, static shapes)


class GroupBatch(NamedTuple):
    """One iteration's samples; rows i*G .. i*G + G - 1 answer prompt i."""

    tokens: Int[Array, "batch seq"]
    valid: Bool[Array, "batch seq"]
    mask: Bool[Array, "batch seq"]  # real response tokens
    logprobs: Float[Array, "batch seq"]  # log pi_old
    ref_logprobs: Float[Array, "batch seq"]
    advantages: Float[Array, " batch"]  # one per response


@partial(jax.jit, static_argnames=("reward_fn", "model_cfg", "cfg"))
def make_group_batch(policy_params: dict, ref_params: dict, reward_params, tokens: Int[Array, "batch seq"],
                     valid: Bool[Array, "batch seq"], reward_fn: Callable, model_cfg: ModelConfig,
                     cfg: GroupConfig) -> tuple[GroupBatch, dict]:
    """Score a batch of groups: log-probs, reference log-probs, rewards and the algorithm's advantages."""
    mask = response_mask(valid, tokens.shape[1] - cfg.response_width)  # [B, T]
    logprobs = token_logprobs(forward(policy_params, tokens, valid, model_cfg).logits, tokens, cfg.temperature)
    ref_logprobs = token_logprobs(forward(ref_params, tokens, valid, model_cfg).logits, tokens, cfg.temperature)
    scores = reward_fn(reward_params, tokens, valid)  # [B]
    kl = masked_sum(logprobs - ref_logprobs, mask, axis=1)  # [B]: k1 summed over the response
    groups = lambda x: x.reshape(cfg.n_prompts, cfg.group_size)  # [B] -> [B / G, G]
    if cfg.algorithm == "grpo":
        advantages = group_advantages(groups(scores)).reshape(-1)
    else:
        advantages = leave_one_out_advantages(groups(scores - cfg.beta * kl)).reshape(-1)
    metrics = {"objective/kl": jnp.mean(kl), "objective/scores": jnp.mean(scores),
               "objective/rlhf_reward": jnp.mean(scores - cfg.beta * kl),
               "objective/group_std": jnp.mean(jnp.std(groups(scores), axis=1)),  # 0: the group teaches nothing
               "response_length": jnp.mean(jnp.sum(mask, axis=1))}
    return GroupBatch(tokens, valid, mask, logprobs, ref_logprobs, advantages), metrics


def group_loss(params: dict, batch: GroupBatch, model_cfg: ModelConfig, cfg: GroupConfig) -> tuple[jax.Array, dict]:
    logprobs = token_logprobs(forward(params, batch.tokens, batch.valid, model_cfg).logits, batch.tokens, cfg.temperature)
    if cfg.algorithm == "grpo":
        return grpo_loss(logprobs, batch.logprobs, batch.ref_logprobs, batch.advantages, batch.mask,
                         cfg.cliprange, cfg.beta)
    return rloo_loss(logprobs, batch.logprobs, batch.advantages, batch.mask, cfg.cliprange)


@partial(jax.jit, static_argnames=("model_cfg", "cfg"), donate_argnames=("state",))
def group_update(state: TrainState, batch: GroupBatch, rows: Int[Array, " minibatch"], model_cfg: ModelConfig,
                 cfg: GroupConfig) -> tuple[TrainState, dict]:
    """One optimizer step on the batch's `rows`."""
    minibatch = jax.tree_util.tree_map(lambda x: x[rows], batch)
    (_, metrics), grads = jax.value_and_grad(group_loss, has_aux=True)(state.params, minibatch, model_cfg, cfg)
    updates, opt_state = ppo_optimizer(cfg).update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1), metrics


def minibatch_rows(key: jax.Array, cfg: GroupConfig) -> Int[Array, "minibatches minibatch"]:
    """Shuffle whole groups (a minibatch holds complete groups), then list their rows."""
    groups = jax.random.permutation(key, cfg.n_prompts).reshape(cfg.minibatches, -1)  # [M, prompts / M]
    return (groups[:, :, None] * cfg.group_size + jnp.arange(cfg.group_size)).reshape(cfg.minibatches, -1)


# ---------------------------------------------------------------- the loop


def train_group(key: jax.Array, policy_params: dict, ref_params: dict, reward_fn: Callable, reward_params,
                prompt_fn: Callable, model_cfg: ModelConfig, cfg: GroupConfig = GroupConfig(),
                gold_fn: Callable | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Run GRPO or RLOO; the same arguments as `ppo.train_ppo` (no value model). Returns (params, history)."""
    key_prompts, key_loop = jax.random.split(key)
    rng = numpy_rng(key_prompts)
    sample_cfg = SampleConfig(max_new_tokens=cfg.response_width, temperature=cfg.temperature)
    params = jax.tree_util.tree_map(jnp.array, policy_params)  # a copy: group_update donates the state
    state = TrainState(params, ppo_optimizer(cfg).init(params), jnp.zeros((), jnp.int32))
    history = defaultdict(list)
    bar = tqdm(jax.random.split(key_loop, cfg.iterations), desc=cfg.algorithm, leave=False, mininterval=0.5)
    for key_iter in bar:
        key_sample, key_shuffle = jax.random.split(key_iter)
        prompts = [p for p in prompt_fn(rng, cfg.n_prompts) for _ in range(cfg.group_size)]  # G copies in a row
        prompt_tokens, prompt_valid = (jnp.asarray(a) for a in encode_prompts(prompts))
        gen = generate(state.params, prompt_tokens, prompt_valid, key_sample, model_cfg, sample_cfg, EOS_ID, PAD_ID)
        batch, metrics = make_group_batch(state.params, ref_params, reward_params, gen.tokens, gen.valid,
                                          reward_fn, model_cfg, cfg)
        metrics = {k: float(v) for k, v in metrics.items()}
        if gold_fn is not None:
            metrics["objective/gold"] = float(np.mean(gold_fn(prompts, np.asarray(gen.tokens))))
        step_metrics = []
        for key_epoch in jax.random.split(key_shuffle, cfg.ppo_epochs):
            for rows in minibatch_rows(key_epoch, cfg):
                state, m = group_update(state, batch, rows, model_cfg, cfg)
                step_metrics.append(m)
        metrics |= {k: float(np.mean([m[k] for m in step_metrics])) for k in step_metrics[0]}
        for k, v in metrics.items():
            history[k].append(v)
        check_finite({k: np.asarray(v) for k, v in history.items()}, cfg.algorithm)
        bar.set_postfix(score=f"{metrics['objective/scores']:.3f}", kl=f"{metrics['objective/kl']:.2f}")
    return state.params, {k: np.asarray(v) for k, v in history.items()}
