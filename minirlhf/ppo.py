"""Stage 4, PPO: make the SFT policy earn more reward-model score without drifting far from itself.

One iteration, in the style of OpenAI's lm-human-preferences (Ziegler et al. 2019):

    prompts --generate--> responses --score--> r_phi(x, y)                       (rollout)
    per-token reward  r_t = -beta kl_t  (+ the score at the last response token)
    values V_t --GAE--> advantages A_t, returns R_t;  A whitened over real tokens
    ppo_epochs x minibatches of:  clipped policy loss + vf_coef * clipped value loss

The pure pieces (KL estimators, shaped rewards, GAE, losses, the KL controller) are in `ppo_losses`.
Two jitted functions do the work: `make_rollout` (score a batch of samples end to end) and
`ppo_update` (one minibatch step). Both have static shapes, so each compiles once per run.

The value function is a *separate* model: its own copy of the SFT transformer plus a scalar head
(zero-initialised, so V starts at 0), trained by the same optimizer on the summed loss, as in TRL's
PPOTrainer. We chose it over a value head on the policy's trunk (lm-human-preferences' choice) because
  - the value loss cannot pull on the policy's features: on a shared trunk, `vf_coef` would trade the
    policy's objective against value accuracy inside one network (here, with disjoint parameters and Adam,
    it matters little beyond the shared gradient-norm clip);
  - the policy stays exactly a language model with the same parameters as the SFT and reference
    models, so sampling, evaluation, the exact KL and checkpoints use it unchanged;
  - the price, a second forward/backward pass of the tiny model, is small on a laptop CPU.
By default it starts from the SFT weights. InstructGPT initialises it from the reward model instead:
pass `value_params=rm_params` (the same {"lm": transformer params, "head": scalar head} layout as
`reward_model.init_reward_model`), and V_t starts as the reward model's score of the prefix.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int
from tqdm.auto import tqdm

from minirlhf.data import RESPONSE_WIDTH, encode_prompts, response_mask
from minirlhf.ops import masked_mean, masked_sum, masked_whiten, numpy_rng, token_logprobs
from minirlhf.ppo_losses import (KL_ESTIMATORS, AdaptiveKLConfig, KLState, gae, kl_estimate, kl_shaped_rewards,
                                 policy_loss, token_entropy, update_kl_controller, value_loss)
from minirlhf.sampling import SampleConfig, generate
from minirlhf.tokenizer import EOS_ID, PAD_ID
from minirlhf.training import TrainState, check_finite
from minirlhf.transformer import ModelConfig, forward, scalar_head


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters. Defaults follow lm-human-preferences / TRL, scaled to a tiny model."""

    iterations: int = 100
    """Rollout-then-update rounds."""
    batch_size: int = 64
    """Prompts (= episodes) sampled per iteration; one response each."""
    ppo_epochs: int = 4
    """Passes over each rollout batch, reshuffled each time."""
    minibatches: int = 2
    """Each epoch splits the batch into this many minibatches, one optimizer step each."""
    lr: float = 3e-4
    """Adam learning rate, decayed linearly to 0 over the run (lm-human-preferences)."""
    beta: float = 0.2
    """Initial KL coefficient (init_kl_coef): the price in reward units of one nat of KL to the reference.
    Smaller values let some seeds' policies drift far enough to refuse sums, which the RM cannot tell apart."""
    kl_estimator: str = "k1"
    """Per-token KL estimate in the reward: "k1" (log-ratio), "k2" (half its square) or "k3"."""
    adaptive: AdaptiveKLConfig | None = None
    """Target and horizon of the adaptive KL controller; None keeps beta fixed."""
    gamma: float = 1.0
    """Discount. 1: a response is short and its score arrives at the end, so nothing is discounted."""
    lam: float = 0.95
    """GAE's lambda: 0 trusts the value function (TD), 1 trusts sampled returns (Monte Carlo)."""
    cliprange: float = 0.2
    """epsilon of the clipped policy loss: how far the probability ratio may move per rollout."""
    cliprange_value: float = 0.2
    """epsilon_v: how far a value prediction may move from the rollout's before its loss is clipped."""
    vf_coef: float = 0.1
    """Weight of the value loss in the summed loss."""
    temperature: float = 1.0
    """Sampling temperature; the SAME value divides the logits of the policy and the reference in every log-prob."""
    whiten_advantages: bool = True
    """Normalise advantages to mean 0, std 1 over the batch's real response tokens."""
    response_width: int = RESPONSE_WIDTH
    """R: response tokens generated per prompt (rows that emit EOS earlier are padded)."""
    max_grad_norm: float = 1.0
    """Global-norm gradient clipping (TRL's default), a guard against the odd huge step."""

    def __post_init__(self):
        for name in ("iterations", "batch_size", "ppo_epochs", "minibatches", "response_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"PPOConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.minibatches:
            raise ValueError(f"PPOConfig.batch_size={self.batch_size} must split evenly into "
                             f"minibatches={self.minibatches}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"PPOConfig.kl_estimator must be one of {sorted(KL_ESTIMATORS)}, "
                             f"got {self.kl_estimator!r}")
        for name in ("lr", "cliprange", "cliprange_value", "temperature", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PPOConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("beta", "vf_coef"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"PPOConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"PPOConfig.{name} must lie in [0, 1], got {getattr(self, name)}")

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.minibatches

    @property
    def n_updates(self) -> int:
        return self.iterations * self.ppo_epochs * self.minibatches


class Rollout(NamedTuple):
    """One iteration's samples and everything PPO computes from them before updating; all [B, T]."""

    tokens: Int[Array, "batch seq"]
    valid: Bool[Array, "batch seq"]
    mask: Bool[Array, "batch seq"]  # real response tokens: what every loss averages over
    logprobs: Float[Array, "batch seq"]  # log pi_old: the policy that sampled
    values: Float[Array, "batch seq"]  # V_old
    advantages: Float[Array, "batch seq"]
    returns: Float[Array, "batch seq"]


# ---------------------------------------------------------------- the value model


def init_value_params(policy_params: dict, cfg: ModelConfig) -> dict:
    """A copy of the policy's transformer and a zero scalar head (so V = 0 before any training)."""
    lm = jax.tree_util.tree_map(jnp.array, policy_params)  # a copy: the update step donates its input
    return {"lm": lm, "head": {"w": jnp.zeros(cfg.d_model), "b": jnp.zeros(())}}


def token_values(value_params: dict, tokens: Int[Array, "batch seq"], valid: Bool[Array, "batch seq"],
                 cfg: ModelConfig) -> Float[Array, "batch seq"]:
    """V_t, aligned with token t: the value of the state that *chooses* token t, read at position t - 1.

    The same shift as `ops.token_logprobs`: position t - 1 has seen tokens[:t] and nothing more.
    """
    _, hidden = forward(value_params["lm"], tokens, valid, cfg)  # [B, T, D]
    v = scalar_head(value_params["head"], hidden)  # [B, T]: value after reading token t
    return jnp.pad(v[:, :-1], ((0, 0), (1, 0)))  # [B, T]


# ---------------------------------------------------------------- rollout post-processing


@partial(jax.jit, static_argnames=("reward_fn", "model_cfg", "cfg"))
def make_rollout(policy_params: dict, ref_params: dict, value_params: dict, reward_params,
                 tokens: Int[Array, "batch seq"], valid: Bool[Array, "batch seq"], beta: Float[Array, ""],
                 reward_fn: Callable, model_cfg: ModelConfig, cfg: PPOConfig) -> tuple[Rollout, dict]:
    """Score sampled sequences: log-probs, reference log-probs, values, shaped rewards, advantages."""
    mask = response_mask(valid, tokens.shape[1] - cfg.response_width)  # [B, T]
    # Log-probs are recomputed by a full forward pass, not taken from sampling, so that the first update's
    # ratio is exactly 1 (the KV-cached decode agrees only up to float rounding).
    logits, _ = forward(policy_params, tokens, valid, model_cfg)
    logprobs = token_logprobs(logits, tokens, cfg.temperature)  # [B, T]
    ref_logprobs = token_logprobs(forward(ref_params, tokens, valid, model_cfg).logits, tokens, cfg.temperature)
    values = jnp.where(mask, token_values(value_params, tokens, valid, model_cfg), 0.0)  # [B, T]
    scores = reward_fn(reward_params, tokens, valid)  # [B]

    rewards = kl_shaped_rewards(scores, logprobs, ref_logprobs, mask, beta, cfg.kl_estimator)  # [B, T]
    advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)  # [B, T] each
    if cfg.whiten_advantages:
        advantages = masked_whiten(advantages, mask)

    kl = masked_sum(kl_estimate(logprobs - ref_logprobs, cfg.kl_estimator), mask, axis=1)  # [B] nats per response
    metrics = {
        "objective/kl": jnp.mean(kl),
        "objective/scores": jnp.mean(scores),
        "objective/rlhf_reward": jnp.mean(scores - beta * kl),  # what PPO maximises
        "objective/entropy": jnp.mean(masked_sum(-logprobs, mask, axis=1)),  # sampled estimate, per response
        "response_length": jnp.mean(jnp.sum(mask, axis=1)),
    }
    return Rollout(tokens, valid, mask, logprobs, values, advantages, returns), metrics


# ---------------------------------------------------------------- the update


def ppo_loss(params: dict, batch: Rollout, model_cfg: ModelConfig, cfg: PPOConfig) -> tuple[jax.Array, dict]:
    """Clipped policy loss + vf_coef * clipped value loss on one minibatch; params = {"policy", "value"}."""
    logits, _ = forward(params["policy"], batch.tokens, batch.valid, model_cfg)
    logprobs = token_logprobs(logits, batch.tokens, cfg.temperature)  # [B, T]
    values = token_values(params["value"], batch.tokens, batch.valid, model_cfg)  # [B, T]
    pg_loss, pg_metrics = policy_loss(logprobs, batch.logprobs, batch.advantages, batch.mask, cfg.cliprange)
    vf_loss, vf_metrics = value_loss(values, batch.values, batch.returns, batch.mask, cfg.cliprange_value)
    entropy = masked_mean(token_entropy(logits, cfg.temperature), batch.mask)  # exact, per token
    metrics = {"loss/policy": pg_loss, "loss/value": vf_loss, "policy/entropy": entropy, **pg_metrics, **vf_metrics}
    return pg_loss + cfg.vf_coef * vf_loss, metrics


def ppo_optimizer(cfg: PPOConfig) -> optax.GradientTransformation:
    """Adam with the learning rate decayed linearly to 0 (lm-human-preferences: lr * (1 - progress))."""
    schedule = optax.linear_schedule(cfg.lr, 0.0, cfg.n_updates)
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(schedule))


@partial(jax.jit, static_argnames=("model_cfg", "cfg"), donate_argnames=("state",))
def ppo_update(state: TrainState, rollout: Rollout, rows: Int[Array, " minibatch"],
               model_cfg: ModelConfig, cfg: PPOConfig) -> tuple[TrainState, dict]:
    """One optimizer step on the rollout's `rows`."""
    batch = jax.tree_util.tree_map(lambda x: x[rows], rollout)
    (_, metrics), grads = jax.value_and_grad(ppo_loss, has_aux=True)(state.params, batch, model_cfg, cfg)
    updates, opt_state = ppo_optimizer(cfg).update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1), metrics


def update_epochs(state: TrainState, rollout: Rollout, key, model_cfg: ModelConfig, cfg: PPOConfig):
    """ppo_epochs passes over the rollout in shuffled minibatches; returns the state and mean metrics."""
    step_metrics = []
    for key_epoch in jax.random.split(key, cfg.ppo_epochs):
        order = jax.random.permutation(key_epoch, cfg.batch_size).reshape(cfg.minibatches, cfg.minibatch_size)
        for rows in order:
            state, metrics = ppo_update(state, rollout, rows, model_cfg, cfg)
            step_metrics.append(metrics)
    return state, {k: float(np.mean([m[k] for m in step_metrics])) for k in step_metrics[0]}


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
    key_prompts, key_loop = jax.random.split(key)
    rng = numpy_rng(key_prompts)  # prompt draws
    sample_cfg = SampleConfig(max_new_tokens=cfg.response_width, temperature=cfg.temperature)
    # No top-k: the ratio pi_new / pi_old needs the log-probs of the distribution that actually sampled.
    params = {"policy": jax.tree_util.tree_map(jnp.array, policy_params),  # copies: ppo_update donates the state
              "value": init_value_params(policy_params, model_cfg) if value_params is None
              else jax.tree_util.tree_map(jnp.array, value_params)}
    state = TrainState(params, ppo_optimizer(cfg).init(params), jnp.zeros((), jnp.int32))
    kl_state = KLState(cfg.beta)
    # beta reaches the jitted steps as a traced number (the controller changes it), so the static config
    # leaves it out: a sweep over beta compiles them once.
    step_cfg = replace(cfg, beta=0.0, adaptive=None)
    history = defaultdict(list)
    bar = tqdm(jax.random.split(key_loop, cfg.iterations), desc="ppo", leave=False, mininterval=0.5)
    for key_iter in bar:
        key_sample, key_shuffle = jax.random.split(key_iter)
        prompts = prompt_fn(rng, cfg.batch_size)
        prompt_tokens, prompt_valid = (jnp.asarray(a) for a in encode_prompts(prompts))
        gen = generate(state.params["policy"], prompt_tokens, prompt_valid, key_sample, model_cfg, sample_cfg,
                       EOS_ID, PAD_ID)
        rollout, metrics = make_rollout(state.params["policy"], ref_params, state.params["value"], reward_params,
                                        gen.tokens, gen.valid, jnp.float32(kl_state.beta), reward_fn, model_cfg, step_cfg)
        metrics = {k: float(v) for k, v in metrics.items()} | {"beta": kl_state.beta}
        if gold_fn is not None:
            metrics["objective/gold"] = float(np.mean(gold_fn(prompts, np.asarray(gen.tokens))))
        state, update_metrics = update_epochs(state, rollout, key_shuffle, model_cfg, step_cfg)
        kl_state = update_kl_controller(kl_state, metrics["objective/kl"], cfg.batch_size, cfg.adaptive)
        for k, v in (metrics | update_metrics).items():
            history[k].append(v)
        check_finite({k: np.asarray(v) for k, v in history.items()}, "ppo")
        bar.set_postfix(score=f"{metrics['objective/scores']:.3f}", kl=f"{metrics['objective/kl']:.2f}")
        if on_iteration is not None:
            on_iteration(len(history["beta"]), state.params["policy"])
    return state.params["policy"], {k: np.asarray(v) for k, v in history.items()}
