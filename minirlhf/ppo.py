"""Stage 4, PPO: make the SFT policy earn more reward-model score without drifting far from itself.

One iteration, in the style of OpenAI's lm-human-preferences (Ziegler et al. 2019):

    prompts --generate--> responses --score--> r_phi(x, y)                       (rollout)
    per-token reward  r_t = -beta kl_t  (+ the score at the last response token)
    values V_t --GAE--> advantages A_t, returns R_t;  A whitened over real tokens
    ppo_epochs x minibatches of:  clipped policy loss + vf_coef * clipped value loss

The pure pieces (KL estimators, shaped rewards, GAE, losses, the KL controller) are in `ppo_losses`.
PPO's own parts are `make_rollout` (jitted: score a batch of samples end to end) and `ppo_loss`; the loop
and the minibatch update are `policy_gradient`'s, shared with GRPO and RLOO. Shapes are static, so each
step compiles once per run, and once for a whole sweep over beta.

The value function is a *separate* model: its own copy of the SFT transformer plus a scalar head
(zero-initialised, so V starts at 0), trained by the same optimizer on the summed loss, as in TRL's
PPOTrainer. We chose it over a value head on the policy's trunk (lm-human-preferences' choice) because
  - the value loss cannot pull on the policy's features: on a shared trunk, `vf_coef` would trade the
    policy's objective against value accuracy inside one network (here, with disjoint parameters and Adam,
    it matters little beyond the shared gradient-norm clip);
  - the policy stays exactly a language model with the same parameters as the SFT and reference
    models, so sampling, evaluation, the exact KL and checkpoints use it unchanged;
  - the price, a second forward/backward pass of the tiny model, is small on a laptop CPU.
By default it starts from the SFT weights. InstructGPT initialises it from the reward model instead, and so
do the course's runs (the pipeline, the notebooks and the experiments): pass `value_params=rm_params` (the
same {"lm": transformer params, "head": scalar head} layout as `reward_model.init_reward_model`), and V_t
starts as the reward model's score of the prefix.
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
from minirlhf.ops import masked_mean, masked_sum, masked_whiten, shift_to_next_token, token_logprobs
from minirlhf.policy_gradient import PGConfig, traced_config
from minirlhf.ppo_losses import (KL_ESTIMATORS, gae, kl_estimate, kl_shaped_rewards, policy_loss, token_entropy,
                                 value_loss)
from minirlhf.transformer import ModelConfig, forward, scalar_head


@traced_config
@dataclass(frozen=True)
class PPOConfig(PGConfig):
    """PPO's hyperparameters: the shared ones (`PGConfig`: iterations, batch_size, ppo_epochs, minibatches, lr,
    beta, adaptive, cliprange, temperature, response_width, max_grad_norm) and the value function's and GAE's.

    A small beta lets some seeds' policies drift far enough to refuse sums, which the RM cannot tell apart.
    """

    kl_estimator: str = "k1"
    """Per-token KL estimate in the reward: "k1" (log-ratio), "k2" (half its square) or "k3"."""
    gamma: float = 1.0
    """Discount. 1: a response is short and its score arrives at the end, so nothing is discounted."""
    lam: float = 0.95
    """GAE's lambda: 0 trusts the value function (TD), 1 trusts sampled returns (Monte Carlo)."""
    cliprange_value: float = 0.2
    """epsilon_v: how far a value prediction may move from the rollout's before its loss is clipped."""
    vf_coef: float = 0.1
    """Weight of the value loss in the summed loss."""
    whiten_advantages: bool = True
    """Normalise advantages to mean 0, std 1 over the batch's real response tokens."""

    def __post_init__(self):
        super().__post_init__()
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"PPOConfig.kl_estimator must be one of {sorted(KL_ESTIMATORS)}, "
                             f"got {self.kl_estimator!r}")
        if not self.cliprange_value > 0:
            raise ValueError(f"PPOConfig.cliprange_value must be > 0, got {self.cliprange_value}")
        if not self.vf_coef >= 0:
            raise ValueError(f"PPOConfig.vf_coef must be >= 0, got {self.vf_coef}")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"PPOConfig.{name} must lie in [0, 1], got {getattr(self, name)}")


class Rollout(NamedTuple):
    """One iteration's samples and everything PPO computes from them before updating; all [B, T]."""

    tokens: Int[Array, "batch seq"]
    valid: Bool[Array, "batch seq"]
    mask: Bool[Array, "batch seq"]  # real response tokens: what every loss averages over
    logprobs: Float[Array, "batch seq"]  # log pi_old: the policy that sampled
    ref_logprobs: Float[Array, "batch seq"]
    rewards: Float[Array, "batch seq"]  # -beta kl_t, plus the score at the last response token
    values: Float[Array, "batch seq"]  # V_old
    advantages: Float[Array, "batch seq"]
    returns: Float[Array, "batch seq"]


# ---------------------------------------------------------------- the value model


def init_value_params(policy_params: dict, cfg: ModelConfig) -> dict:
    """A copy of the policy's transformer and a zero scalar head (so V = 0 before any training)."""
    lm = policy_gradient.copy(policy_params)  # a copy: the update step donates its input
    return {"lm": lm, "head": {"w": jnp.zeros(cfg.d_model), "b": jnp.zeros(())}}


def token_values(value_params: dict, tokens: Int[Array, "batch seq"], valid: Bool[Array, "batch seq"],
                 cfg: ModelConfig) -> Float[Array, "batch seq"]:
    """V_t, aligned with token t: the value of the state that *chooses* token t, read at position t - 1."""
    hidden = forward(value_params["lm"], tokens, valid, cfg).hidden  # [B, T, D]
    return shift_to_next_token(lambda v: v, scalar_head(value_params["head"], hidden))  # [B, T]


# ---------------------------------------------------------------- rollout post-processing


NO_SPREAD = 1e-8  # a variance of the returns below this counts as none (whitening's epsilon)


# The value model's standard report card (OpenAI baselines' `explained_variance`, logged by CleanRL):
#   EV = 1 - Var[R_t - V_t] / Var[R_t]   over the real response tokens.
# 1: V predicts the returns exactly; 0: no better than predicting their mean; < 0: worse than that.
def explained_variance(values: Float[Array, "batch seq"], returns: Float[Array, "batch seq"],
                       mask: Bool[Array, "batch seq"]) -> Float[Array, ""]:
    """EV of the rollout's values V_old against its returns, both read on the mask only.

    Returns with no spread (variance under NO_SPREAD) leave nothing to explain, and baselines returns NaN there:
    we return 0, a constant predictor's score, so the history stays finite and `check_finite` lets the run go on.
    """
    def var(x):  # variance over the masked-in entries
        return masked_mean((x - masked_mean(x, mask)) ** 2, mask)

    var_returns = var(returns)
    spread = var_returns > NO_SPREAD  # a constant's float mean can miss it by a rounding error: not a spread
    explained = 1.0 - var(returns - values) / jnp.where(spread, var_returns, 1.0)
    return jnp.where(spread, explained, 0.0)


@partial(jax.jit, static_argnames=("reward_fn", "model_cfg"))
def make_rollout(params: dict, ref_params: dict, reward_params, tokens: Int[Array, "batch seq"],
                 valid: Bool[Array, "batch seq"], reward_fn: Callable, model_cfg: ModelConfig,
                 cfg: PPOConfig) -> tuple[Rollout, dict]:
    """Score sampled sequences: log-probs, reference log-probs, values, shaped rewards, advantages.

    params = {"policy", "value"}; cfg.beta is the current KL coefficient (traced: see `policy_gradient`).
    """
    s = policy_gradient.score_samples(params["policy"], ref_params, reward_params, tokens, valid, reward_fn,
                                      model_cfg, cfg)
    values = jnp.where(s.mask, token_values(params["value"], tokens, valid, model_cfg), 0.0)  # [B, T]
    rewards = kl_shaped_rewards(s.scores, s.logprobs, s.ref_logprobs, s.mask, cfg.beta, cfg.kl_estimator)  # [B, T]
    advantages, returns = gae(rewards, values, s.mask, cfg.gamma, cfg.lam)  # [B, T] each
    if cfg.whiten_advantages:
        advantages = masked_whiten(advantages, s.mask)

    kl = masked_sum(kl_estimate(s.logprobs - s.ref_logprobs, cfg.kl_estimator), s.mask, axis=1)  # [B] nats
    metrics = {
        "objective/kl": jnp.mean(kl),
        "objective/scores": jnp.mean(s.scores),
        "objective/rlhf_reward": jnp.mean(s.scores - cfg.beta * kl),  # what PPO maximises
        "objective/entropy": jnp.mean(masked_sum(-s.logprobs, s.mask, axis=1)),  # sampled estimate, per response
        "response_length": jnp.mean(jnp.sum(s.mask, axis=1)),
        "val/explained_variance": explained_variance(values, returns, s.mask),  # before this iteration's updates
    }
    return Rollout(tokens, valid, s.mask, s.logprobs, s.ref_logprobs, rewards, values, advantages, returns), metrics


# ---------------------------------------------------------------- the loss


def ppo_loss(params: dict, batch: Rollout, model_cfg: ModelConfig, cfg: PPOConfig) -> tuple[jax.Array, dict]:
    """Clipped policy loss + vf_coef * clipped value loss on one minibatch; params = {"policy", "value"}."""
    logits = forward(params["policy"], batch.tokens, batch.valid, model_cfg).logits
    logprobs = token_logprobs(logits, batch.tokens, cfg.temperature)  # [B, T]
    values = token_values(params["value"], batch.tokens, batch.valid, model_cfg)  # [B, T]
    pg_loss, pg_metrics = policy_loss(logprobs, batch.logprobs, batch.advantages, batch.mask, cfg.cliprange)
    vf_loss, vf_metrics = value_loss(values, batch.values, batch.returns, batch.mask, cfg.cliprange_value)
    entropy = masked_mean(token_entropy(logits, cfg.temperature), batch.mask)  # exact, per token
    metrics = {"loss/policy": pg_loss, "loss/value": vf_loss, "policy/entropy": entropy, **pg_metrics, **vf_metrics}
    return pg_loss + cfg.vf_coef * vf_loss, metrics


# ---------------------------------------------------------------- the loop


def train_ppo(key: jax.Array, policy_params: dict, ref_params: dict, reward_fn: Callable, reward_params,
              prompt_fn: Callable, model_cfg: ModelConfig, cfg: PPOConfig = PPOConfig(),
              gold_fn: Callable | None = None, value_params: dict | None = None,
              on_iteration: Callable[[int, dict], None] | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Run PPO; returns the trained policy params and each metric's history (one value per iteration).

    reward_fn(reward_params, tokens, valid) -> scores [B]: pure and jittable (it runs inside `make_rollout`).
    prompt_fn(rng, n) -> list[Prompt], e.g. `partial(world.sample_prompts, world)` (the train split).
    gold_fn(prompts, tokens) -> np.ndarray [B], e.g. `partial(evaluation.gold_scores, world)`: logged as
    objective/gold, for measurement only; PPO never trains on it.
    on_iteration(i, policy_params), if given, runs after iteration i's update (i = 1..iterations), e.g. to
    evaluate checkpoints along the run. The next update donates those buffers: copy the params to keep them.
    """
    value = init_value_params(policy_params, model_cfg) if value_params is None else value_params
    return policy_gradient.train(key, {"policy": policy_params, "value": value}, ref_params, reward_fn,
                                 reward_params, prompt_fn, model_cfg, cfg, make_rollout, ppo_loss, "ppo",
                                 gold_fn, on_iteration)
