"""Reward-model ensembles: k reward models scored together, and objectives that trust them less where they disagree.

One reward model, fitted to a few thousand noisy labels, extrapolates off the SFT distribution, and a policy
optimised against it finds where it extrapolates upward (over-optimisation, Gao et al. 2022). Members trained on
resampled data with other seeds extrapolate *differently*, so where the policy has left their data they disagree.
Coste, Anwar, Kirk & Krueger (2024) optimise a cautious combination of the members' scores r_1 .. r_k:

    mean            R = mean_i r_i                        the ensemble's best guess
    min             R = min_i r_i                         worst-case optimisation (WCO)
    mean_minus_std  R = mean_i r_i - lambda std_i r_i     uncertainty-weighted optimisation (UWO); the paper
                                                          subtracts lambda times the variance, we the std, which
                                                          is in reward units, so lambda is a plain number of them

Members differ by their key (head initialisation, data order) and, optionally, by a bootstrap resample of the
pairs (n drawn with replacement from the n; Efron 1979). Each is normalised on the same SFT samples (mean 0,
std 1), so their scores share one scale and their spread, `disagreement`, is disagreement rather than offset.

`EnsembleRewardFn` is what PPO's rollout calls with the tuple of members as its params: a frozen dataclass like
`reward_model.RewardFn`, so two runs with equal ensembles share one compiled rollout.
Monitoring: `alarm_threshold` and `stop_before_alarm` turn disagreement into a stopping rule that needs no gold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from minirlhf import reward_model
from minirlhf.ops import numpy_rng
from minirlhf.preferences import subset
from minirlhf.sampling import sample
from minirlhf.transformer import ModelConfig
from minirlhf.world import World, sample_prompts

OBJECTIVES = ("mean", "min", "mean_minus_std")


# ---------------------------------------------------------------- combining the members' scores


def disagreement(scores: Float[Array, "k batch"]) -> Float[Array, " batch"]:
    """std_i r_i per response: how much the k members disagree (population std, as in Coste et al.'s variance)."""
    return jnp.std(scores, axis=0)


def combine(scores: Float[Array, "k batch"], objective: str, lam: float = 0.0) -> Float[Array, " batch"]:
    """The ensemble's reward per response from its members' scores (objectives: module docstring)."""
    if objective == "mean":
        return jnp.mean(scores, axis=0)
    if objective == "min":
        return jnp.min(scores, axis=0)
    if objective == "mean_minus_std":
        return jnp.mean(scores, axis=0) - lam * disagreement(scores)
    raise ValueError(f"unknown ensemble objective {objective!r}; choose one of {OBJECTIVES}")


@dataclass(frozen=True)
class EnsembleRewardFn:
    """R(members, tokens, valid) -> [B]: every member scores the batch, `combine` makes one reward of them.

    member: the scorer each member's params go through, e.g. `reward_model.RewardFn(cfg)` (hashable, as the
    rollout's static argument must be). Equal fields, equal hash: a second run compiles nothing new.
    """

    member: Callable
    objective: str = "mean"
    lam: float = 0.0
    """lambda of mean_minus_std (ignored by the others)."""

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"EnsembleRewardFn.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not self.lam >= 0:
            raise ValueError(f"EnsembleRewardFn.lam must be >= 0 (a bonus for disagreement invites the hack), "
                             f"got {self.lam}")

    @property
    def cfg(self) -> ModelConfig | None:
        """The members' model config, if they are reward models: the RL core checks each member against it."""
        return getattr(self.member, "cfg", None)

    def __call__(self, members: tuple, tokens: Int[Array, "batch seq"],
                 valid: Bool[Array, "batch seq"]) -> Float[Array, " batch"]:
        scores = jnp.stack([self.member(params, tokens, valid) for params in members])  # [k, B]
        return combine(scores, self.objective, self.lam)


def ensemble_reward_fn(cfg: ModelConfig, objective: str = "mean", lam: float = 0.0) -> EnsembleRewardFn:
    """The ensemble's scoring function for PPO, for reward models of this config."""
    return EnsembleRewardFn(reward_model.reward_fn(cfg), objective, lam)


def member_scores(members: tuple, tokens: Int[Array, "batch seq"], valid: Bool[Array, "batch seq"],
                  cfg: ModelConfig) -> Float[np.ndarray, "k batch"]:
    """Every member's score of every response, outside a training step (evaluation, best-of-n)."""
    return np.stack([np.asarray(reward_model.score(params, tokens, valid, cfg)) for params in members])


# ---------------------------------------------------------------- training the members


def bootstrap(key: jax.Array, pairs: dict) -> dict:
    """n pairs drawn with replacement from the n (about 63% of them distinct): one member's training set."""
    n = len(pairs["chosen_tokens"])
    return subset(pairs, numpy_rng(key).integers(0, n, n))


def normalization_samples(key: jax.Array, sft_params: dict, world: World, model_cfg: ModelConfig,
                          cfg: reward_model.RMConfig) -> tuple[np.ndarray, np.ndarray]:
    """The SFT samples `reward_model.run_reward_model(key, ...)` normalises on, drawn again from its key."""
    key_prompts, key_sample = jax.random.split(reward_model.rm_keys(key)["normalize"])
    gen = sample(sft_params, model_cfg, sample_prompts(world, numpy_rng(key_prompts), cfg.n_normalize), key_sample)
    return gen.tokens, gen.valid


def train_member(key: jax.Array, sft_params: dict, pairs: dict, heldout: dict, normalize_on: tuple,
                 model_cfg: ModelConfig, cfg: reward_model.RMConfig, resample: bool = True) -> tuple[dict, dict]:
    """One member: trained from SFT on (a bootstrap resample of) the pairs, normalised on `normalize_on`.

    normalize_on: (tokens, valid) of SFT samples, the same for every member. Returns (params, held-out metrics).
    """
    key_data, key_train = jax.random.split(key)
    data = bootstrap(key_data, pairs) if resample else pairs
    params, _, metrics = reward_model.train_reward_model(key_train, sft_params, data, heldout, model_cfg, cfg)
    return reward_model.normalize(params, *normalize_on, model_cfg), metrics


def train_ensemble(key: jax.Array, k: int, *args, **kwargs) -> tuple[tuple, list[dict]]:
    """k members, member i from key fold_in(key, i); args and kwargs are `train_member`'s after its key."""
    if k < 1:
        raise ValueError(f"an ensemble needs k >= 1 members, got {k}")
    trained = [train_member(jax.random.fold_in(key, i), *args, **kwargs) for i in range(k)]
    return tuple(params for params, _ in trained), [metrics for _, metrics in trained]


# ---------------------------------------------------------------- monitoring without gold


def alarm_threshold(sft_disagreement: Float[np.ndarray, " n"], quantile: float) -> float:
    """tau: the disagreement that only a share 1 - quantile of SFT's own samples exceed."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    return float(np.quantile(np.asarray(sft_disagreement), quantile))


def share_above(per_response: Float[np.ndarray, " n"], tau: float) -> float:
    """Share of a checkpoint's samples whose disagreement exceeds tau (at SFT: 1 - quantile, by construction)."""
    return float(np.mean(np.asarray(per_response) > tau))


def stop_before_alarm(shares: list[float], alarm: float) -> int:
    """The checkpoint to keep: the last one before the share first exceeds `alarm` (the last of all if it never does).

    shares[0] is the starting policy's, which is kept when the very first checkpoint after it already alarms.
    """
    over = [i for i, s in enumerate(shares) if s > alarm]
    return len(shares) - 1 if not over else max(over[0] - 1, 0)
