"""PPO for language models, the pure pieces: KL estimates, shaped rewards, GAE, the two clipped losses.

Everything here is a function of arrays in the shared per-token layout (see `ops`): a quantity at
index t belongs to token t, the *action* of choosing tokens[t] given tokens[:t]. `mask` is True on the
real response tokens (EOS included) and False on the prompt and on the padding after EOS, and every
sum, mean and recurrence below respects it. The loop that feeds these functions lives in `ppo.py`.

The recipe is OpenAI's lm-human-preferences (Ziegler et al. 2019), as catalogued in Huang et al. 2022,
"The N Implementation Details of RLHF with PPO"; the metric names follow Hugging Face TRL.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from minirlhf.ops import masked_mean, shift_to_next_token

# ---------------------------------------------------------------- KL penalty

# Schulman 2020, "Approximating KL Divergence". With tokens sampled from pi and the log-ratio
# l = log pi(a) - log pi_ref(a), each estimator's mean over samples approximates KL(pi || pi_ref):
#   k1 = l                       unbiased, but a single sample can be negative
#   k2 = l^2 / 2                 biased (exact only to second order), always >= 0, low variance
#   k3 = (e^{-l} - 1) + l        unbiased and always >= 0 (the ratio minus 1 minus its log)
KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(log_ratio: Float[Array, "..."], estimator: str) -> Float[Array, "..."]:
    """Per-sample KL estimate from the log-ratio l = log pi - log pi_ref, by name ("k1", "k2" or "k3").

    Elementwise, same shape as `log_ratio`; any other name raises ValueError.
    """
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return jnp.expm1(-log_ratio) + log_ratio  # expm1(x) = e^x - 1, accurate for small x
    raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {sorted(KL_ESTIMATORS)}")


# Ziegler et al. 2019, eq. 2: R(x, y) = r(x, y) - beta log(pi(y|x) / pi_ref(y|x)). Spread over tokens,
# every token pays -beta kl_t and the reward model's score arrives with the last response token
# (lm-human-preferences `compute_rewards`), so the return of the first token is the whole of R.
def kl_shaped_rewards(
    scores: Float[Array, " batch"],
    logprobs: Float[Array, "batch seq"],
    ref_logprobs: Float[Array, "batch seq"],
    mask: Bool[Array, "batch seq"],
    beta: float | Float[Array, ""],
    estimator: str = "k1",
) -> Float[Array, "batch seq"]:
    """r_t = -beta kl_t on response tokens, plus the score at each row's last real token (EOS or the cut)."""
    kl = kl_estimate(logprobs - ref_logprobs, estimator)  # [B, T]
    rewards = jnp.where(mask, -beta * kl, 0.0)  # [B, T]
    seq = mask.shape[1]
    last = seq - 1 - jnp.argmax(mask[:, ::-1], axis=1)  # [B]: index of the last True in each row
    return rewards + scores[:, None] * jax.nn.one_hot(last, seq)  # [B, T]


# ---------------------------------------------------------------- advantages

# Generalized advantage estimation, Schulman et al. 2016 (GAE), sec. 3:
#   delta_t = r_t + gamma V_{t+1} - V_t,    A_t = delta_t + gamma lam A_{t+1},    R_t = A_t + V_t.
# An episode is one response: after its last real token the game is over, so V_{T} = 0 and A_{T} = 0.
# Read backwards, this is a recurrence: the reason for a (reverse) lax.scan.
def gae(
    rewards: Float[Array, "batch seq"],
    values: Float[Array, "batch seq"],
    mask: Bool[Array, "batch seq"],
    gamma: float,
    lam: float,
) -> tuple[Float[Array, "batch seq"], Float[Array, "batch seq"]]:
    """(advantages, returns), both 0 off the mask. A masked-out position ends the episode before it."""

    def step(carry, inputs):
        next_value, next_advantage = carry  # [B], [B]: 0 when position t + 1 is not a real token
        r, v, m = inputs  # [B] each, at position t
        delta = r + gamma * next_value - v
        advantage = jnp.where(m, delta + gamma * lam * next_advantage, 0.0)
        return (jnp.where(m, v, 0.0), advantage), advantage

    zeros = jnp.zeros(rewards.shape[0])
    time_major = (rewards.T, values.T, mask.T)  # scan runs over the leading axis: [T, B]
    _, advantages = jax.lax.scan(step, (zeros, zeros), time_major, reverse=True)  # [T, B]
    advantages = advantages.T  # [B, T]
    return advantages, jnp.where(mask, advantages + values, 0.0)


def gae_reference(rewards, values, mask, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """The same recurrence as `gae`, as a plain loop over rows and (backwards) over time. For tests."""
    rewards, values, mask = np.asarray(rewards), np.asarray(values), np.asarray(mask)
    advantages = np.zeros_like(rewards, dtype=np.float64)
    for b in range(rewards.shape[0]):
        next_value, next_advantage = 0.0, 0.0
        for t in reversed(range(rewards.shape[1])):
            if not mask[b, t]:
                next_value, next_advantage = 0.0, 0.0  # the episode ends before this position
                continue
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            advantages[b, t] = delta + gamma * lam * next_advantage
            next_value, next_advantage = values[b, t], advantages[b, t]
    return advantages, np.where(mask, advantages + values, 0.0)


# ---------------------------------------------------------------- losses


# PPO's clipped surrogate, Schulman et al. 2017, eq. 7, written as a loss to minimise:
#   rho = exp(log pi_new - log pi_old),   L = mean_t max(-A rho, -A clip(rho, 1 - eps, 1 + eps)).
# The max takes the pessimistic of the two: once rho has moved past 1 +- eps in the direction A rewards,
# the clipped term wins and its gradient is zero, so one batch cannot push the policy arbitrarily far.
def policy_loss(
    logprobs: Float[Array, "batch seq"],
    old_logprobs: Float[Array, "batch seq"],
    advantages: Float[Array, "batch seq"],
    mask: Bool[Array, "batch seq"],
    cliprange: float,
) -> tuple[Float[Array, ""], dict]:
    """(loss, metrics): the clipped surrogate averaged over the real tokens (mask), as above.

    metrics: "policy/approxkl" = 1/2 mean(log_ratio^2), "policy/clipfrac" = share of tokens where the
    clipped term is the larger one, "val/ratio" = mean ratio; all three means over the mask.
    """
    log_ratio = logprobs - old_logprobs  # [B, T]
    ratio = jnp.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(jnp.maximum(unclipped, clipped), mask)
    metrics = {
        "policy/approxkl": 0.5 * masked_mean(log_ratio**2, mask),  # k2 of the step: how far this update moved
        "policy/clipfrac": masked_mean(clipped > unclipped, mask),  # share of tokens whose gradient the clip cut
        "val/ratio": masked_mean(ratio, mask),  # TRL's name, although it is the policy's ratio; should stay near 1
    }
    return loss, metrics


# The value loss of lm-human-preferences (from OpenAI baselines' ppo2; not in the PPO paper):
#   L_V = 1/2 mean_t max((V - R)^2, (clip(V, V_old - eps_v, V_old + eps_v) - R)^2).
def value_loss(
    values: Float[Array, "batch seq"],
    old_values: Float[Array, "batch seq"],
    returns: Float[Array, "batch seq"],
    mask: Bool[Array, "batch seq"],
    cliprange_value: float,
) -> tuple[Float[Array, ""], dict]:
    """(loss, metrics): the clipped value loss averaged over the real tokens (mask), as above.

    metrics: "val/clipfrac" = share of tokens where the clipped error is the larger one.
    """
    clipped_values = jnp.clip(values, old_values - cliprange_value, old_values + cliprange_value)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(jnp.maximum(unclipped_error, clipped_error), mask)
    return loss, {"val/clipfrac": masked_mean(clipped_error > unclipped_error, mask)}


def token_entropy(logits: Float[Array, "batch seq vocab"], temperature: float = 1.0) -> Float[Array, "batch seq"]:
    """H_t = -sum_v p(v) log p(v) of the distribution that chose token t (same shift as `ops.token_logprobs`)."""
    def entropy(logits_before: Float[Array, "batch seq-1 vocab"]) -> Float[Array, "batch seq-1"]:
        logp = jax.nn.log_softmax(logits_before / temperature, axis=-1)
        return -jnp.sum(jnp.exp(logp) * logp, axis=-1)

    return shift_to_next_token(entropy, logits)  # [B, T]


# ---------------------------------------------------------------- KL coefficient controllers


class KLState(NamedTuple):
    beta: float  # the current KL coefficient


@dataclass(frozen=True)
class AdaptiveKLConfig:
    """Target for the adaptive KL controller (lm-human-preferences' AdaptiveKLParams)."""

    target: float = 6.0
    """KL (nats per response, summed over tokens) the controller steers toward."""
    horizon: int = 10000
    """Episodes over which a persistent error changes beta by a factor of about e^{0.2}."""

    def __post_init__(self):
        if not self.target > 0:
            raise ValueError(f"AdaptiveKLConfig.target must be > 0 nats, got {self.target}")
        if self.horizon < 1:
            raise ValueError(f"AdaptiveKLConfig.horizon must be >= 1 episode, got {self.horizon}")


def fixed_kl_controller(state: KLState, kl: float, n_episodes: int) -> KLState:
    """beta never changes."""
    return state


# Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences" (code: lm-human-preferences
# `AdaptiveKLController`):
#   e = clip(KL / KL_target - 1, -0.2, 0.2),   beta <- beta (1 + e n / horizon),   n = episodes in the batch.
# A proportional controller: too much KL raises the price of KL, too little lowers it; the clip keeps
# one noisy batch from moving beta much.
def adaptive_kl_controller(state: KLState, kl: float, n_episodes: int, cfg: AdaptiveKLConfig) -> KLState:
    """The next KLState after a batch of n_episodes whose mean summed KL was `kl` (plain Python floats)."""
    error = np.clip(kl / cfg.target - 1.0, -0.2, 0.2)
    return KLState(float(state.beta * (1.0 + error * n_episodes / cfg.horizon)))


def update_kl_controller(state: KLState, kl: float, n_episodes: int, adaptive: AdaptiveKLConfig | None) -> KLState:
    """Adaptive when a target is given, fixed otherwise."""
    if adaptive is None:
        return fixed_kl_controller(state, kl, n_episodes)
    return adaptive_kl_controller(state, kl, n_episodes, adaptive)
