"""Stage 4's shared core: the loop, the update and the scoring that PPO, GRPO and RLOO have in common.

All three repeat the same iteration; only the middle differs:

    prompts --repeat G times--> generate --score_samples--> log pi_old, log pi_ref, r(x, y)
      --make_batch--> advantages (PPO: value model + GAE; GRPO / RLOO: the group is the baseline)
      --ppo_epochs x minibatches of `update`--> clipped loss (each algorithm's own)

`train` is that loop, written once. An algorithm is two functions handed to it: `make_batch`, jitted, which
turns scored samples into what its loss needs, and `loss`. `ppo.py` and `grpo_rloo.py` supply them.

Configs are pytrees. The coefficients a sweep varies (`TRACED`: beta) are the config's *leaves*, so they
reach the compiled steps as traced numbers; everything else (sizes, clip ranges, choices) is static
structure. Two runs that differ only in beta therefore share one compiled step, with no fake config.
"""
from __future__ import annotations

import dataclasses
import numbers
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
from minirlhf.ops import numpy_rng, token_logprobs
from minirlhf.ppo_losses import AdaptiveKLConfig, KLState, update_kl_controller
from minirlhf.sampling import SampleConfig, generate
from minirlhf.tokenizer import EOS_ID, PAD_ID
from minirlhf.training import TrainState, check_finite
from minirlhf.transformer import ModelConfig, check_params, forward

TRACED = ("beta",)  # config fields that are traced, not static, inside jit


def traced_config(cls):
    """Register a frozen config dataclass as a pytree whose leaves are the TRACED fields, the rest static."""
    names = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(
        cls, data_fields=[n for n in names if n in TRACED], meta_fields=[n for n in names if n not in TRACED])


def _is_number(v) -> bool:
    """True for a plain number; False for what jax puts in a config's leaves while tracing (a tracer)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@traced_config
@dataclass(frozen=True)
class PGConfig:
    """The hyperparameters every policy-gradient stage shares; defaults follow lm-human-preferences / TRL."""

    iterations: int = 100
    """Sample-then-update rounds."""
    batch_size: int = 64
    """Responses sampled per iteration (batch_size / group_size prompts)."""
    group_size: int = 1
    """G: responses per prompt, in consecutive rows. PPO uses 1; GRPO and RLOO need a group (G >= 2)."""
    ppo_epochs: int = 4
    """Passes over each batch, reshuffled each time. With 1 epoch and 1 minibatch every step is on-policy."""
    minibatches: int = 2
    """Each epoch splits the batch into this many minibatches of whole groups, one optimizer step each."""
    lr: float = 3e-4
    """Adam learning rate, decayed linearly to 0 over the run (lm-human-preferences)."""
    beta: float = 0.2
    """Initial KL coefficient: the price in reward units of one nat of KL to the reference (traced)."""
    adaptive: AdaptiveKLConfig | None = None
    """Target and horizon of the adaptive KL controller (Ziegler et al. 2019); None keeps beta fixed."""
    cliprange: float = 0.2
    """epsilon of the clipped probability ratio: how far it may move per batch of samples."""
    temperature: float = 1.0
    """Sampling temperature; the SAME value divides the logits of the policy and the reference in every log-prob."""
    response_width: int = RESPONSE_WIDTH
    """R: response tokens generated per prompt (rows that emit EOS earlier are padded)."""
    max_grad_norm: float = 1.0
    """Global-norm gradient clipping (TRL's default), a guard against the odd huge step."""

    def __post_init__(self):
        name = type(self).__name__
        for field in ("iterations", "batch_size", "group_size", "ppo_epochs", "minibatches", "response_width"):
            if getattr(self, field) < 1:
                raise ValueError(f"{name}.{field} must be >= 1, got {getattr(self, field)}")
        if self.batch_size % (self.group_size * self.minibatches):
            raise ValueError(f"{name}.batch_size={self.batch_size} must split evenly into minibatches="
                             f"{self.minibatches} of whole groups of group_size={self.group_size}")
        for field in ("lr", "cliprange", "temperature", "max_grad_norm"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{name}.{field} must be > 0, got {getattr(self, field)}")
        if _is_number(self.beta) and not self.beta >= 0:  # (inside jit, beta is a tracer: nothing to check)
            raise ValueError(f"{name}.beta must be >= 0, got {self.beta}")

    @property
    def n_prompts(self) -> int:
        return self.batch_size // self.group_size

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.minibatches

    @property
    def n_updates(self) -> int:
        return self.iterations * self.ppo_epochs * self.minibatches


def optimizer(cfg: PGConfig) -> optax.GradientTransformation:
    """Adam with the learning rate decayed linearly to 0 (lm-human-preferences: lr * (1 - progress))."""
    schedule = optax.linear_schedule(cfg.lr, 0.0, cfg.n_updates)
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(schedule))


# ---------------------------------------------------------------- scoring samples (inside each make_batch)


class Scored(NamedTuple):
    """What every algorithm computes first from a batch of samples."""

    mask: Bool[Array, "batch seq"]  # real response tokens: what every loss averages over
    logprobs: Float[Array, "batch seq"]  # log pi_old: the policy that sampled
    ref_logprobs: Float[Array, "batch seq"]
    scores: Float[Array, " batch"]  # the reward function's score of each whole response


def score_samples(policy_params: dict, ref_params: dict, reward_params, tokens: Int[Array, "batch seq"],
                  valid: Bool[Array, "batch seq"], reward_fn: Callable, model_cfg: ModelConfig,
                  cfg: PGConfig) -> Scored:
    """Log-probs under the policy and the reference, and the reward, of sampled [prompt | response] rows."""
    mask = response_mask(valid, tokens.shape[1] - cfg.response_width)  # [B, T]
    # Log-probs are recomputed by a full forward pass, not taken from sampling, so that the first update's
    # ratio is exactly 1 (the KV-cached decode agrees only up to float rounding).
    logprobs = token_logprobs(forward(policy_params, tokens, valid, model_cfg).logits, tokens, cfg.temperature)
    ref_logprobs = token_logprobs(forward(ref_params, tokens, valid, model_cfg).logits, tokens, cfg.temperature)
    scores = reward_fn(reward_params, tokens, valid)
    if jnp.shape(scores) != (tokens.shape[0],):  # a static shape: checked once, while tracing
        raise ValueError(f"the reward function must return one score per response, shape ({tokens.shape[0]},); it "
                         f"returned shape {jnp.shape(scores)} (for [B, 1], take [:, 0])")
    return Scored(mask, logprobs, ref_logprobs, scores)


# ---------------------------------------------------------------- the update


@partial(jax.jit, static_argnames=("loss_fn", "model_cfg"), donate_argnames=("state",))
def update(state: TrainState, batch, rows: Int[Array, " minibatch"], cfg: PGConfig, loss_fn: Callable,
           model_cfg: ModelConfig) -> tuple[TrainState, dict]:
    """One optimizer step of loss_fn(params, minibatch, model_cfg, cfg) on the batch's `rows`."""
    minibatch = jax.tree_util.tree_map(lambda x: x[rows], batch)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, minibatch, model_cfg, cfg)
    updates, opt_state = optimizer(cfg).update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1), metrics


def minibatch_rows(key: jax.Array, cfg: PGConfig) -> Int[Array, "minibatches minibatch"]:
    """Shuffle whole groups (a minibatch holds complete groups; with G = 1, single rows), then list their rows."""
    groups = jax.random.permutation(key, cfg.n_prompts).reshape(cfg.minibatches, -1)  # [M, prompts / M]
    return (groups[:, :, None] * cfg.group_size + jnp.arange(cfg.group_size)).reshape(cfg.minibatches, -1)


def update_epochs(state: TrainState, batch, key: jax.Array, loss_fn: Callable, model_cfg: ModelConfig,
                  cfg: PGConfig) -> tuple[TrainState, dict]:
    """ppo_epochs passes over the batch in shuffled minibatches; returns the state and each metric's mean."""
    step_metrics = []
    for key_epoch in jax.random.split(key, cfg.ppo_epochs):
        for rows in minibatch_rows(key_epoch, cfg):
            state, metrics = update(state, batch, rows, cfg, loss_fn, model_cfg)
            step_metrics.append(metrics)
    return state, {k: float(np.mean([m[k] for m in step_metrics])) for k in step_metrics[0]}


# ---------------------------------------------------------------- the loop


def copy(tree):
    """A copy of a pytree of arrays: the update step donates (frees) its input state."""
    return jax.device_put(tree, may_alias=False)  # a transfer, not a compiled copy per shape


def train(key: jax.Array, params: dict, ref_params: dict, reward_fn: Callable, reward_params, prompt_fn: Callable,
          model_cfg: ModelConfig, cfg: PGConfig, make_batch: Callable, loss_fn: Callable, desc: str,
          gold_fn: Callable | None = None,
          on_iteration: Callable[[int, dict], None] | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """The policy-gradient loop; returns the trained policy and each metric's history (one value per iteration).

    params: {"policy": transformer params, ...} (PPO adds "value"), trained together by one optimizer.
    make_batch(params, ref_params, reward_params, tokens, valid, reward_fn, model_cfg, cfg) -> (batch, metrics),
    jitted, with cfg.beta the current KL coefficient; loss_fn(params, minibatch, model_cfg, cfg) -> (loss, metrics).
    The other arguments are `ppo.train_ppo`'s.
    """
    check_params(params, model_cfg, f"{desc}'s params")
    check_params(ref_params, model_cfg, f"{desc}'s reference model")
    if isinstance(getattr(reward_fn, "cfg", None), ModelConfig):  # a reward model's scoring function
        check_params(reward_params, reward_fn.cfg, f"{desc}'s reward model")
    key_prompts, key_loop = jax.random.split(key)
    rng = numpy_rng(key_prompts)  # prompt draws
    sample_cfg = SampleConfig(max_new_tokens=cfg.response_width, temperature=cfg.temperature)
    # No top-k: the ratio pi_new / pi_old needs the log-probs of the distribution that actually sampled.
    params = copy(params)
    state = TrainState(params, optimizer(cfg).init(params), jnp.zeros((), jnp.int32))
    kl_state = KLState(cfg.beta)
    history = defaultdict(list)
    bar = tqdm(jax.random.split(key_loop, cfg.iterations), desc=desc, leave=False, mininterval=0.5)
    for key_iter in bar:
        key_sample, key_shuffle = jax.random.split(key_iter)
        prompts = [p for p in prompt_fn(rng, cfg.n_prompts) for _ in range(cfg.group_size)]  # G copies in a row
        prompt_tokens, prompt_valid = (jax.device_put(a) for a in encode_prompts(prompts))
        gen = generate(state.params["policy"], prompt_tokens, prompt_valid, key_sample, model_cfg, sample_cfg,
                       EOS_ID, PAD_ID)
        iteration_cfg = dataclasses.replace(cfg, beta=kl_state.beta)  # the controller's current beta
        batch, metrics = make_batch(state.params, ref_params, reward_params, gen.tokens, gen.valid, reward_fn,
                                    model_cfg, iteration_cfg)
        metrics = {k: float(v) for k, v in metrics.items()} | {"beta": kl_state.beta}
        if gold_fn is not None:
            metrics["objective/gold"] = float(np.mean(gold_fn(prompts, np.asarray(gen.tokens))))
        state, update_metrics = update_epochs(state, batch, key_shuffle, loss_fn, model_cfg, iteration_cfg)
        kl_state = update_kl_controller(kl_state, metrics["objective/kl"], cfg.batch_size, cfg.adaptive)
        for k, v in (metrics | update_metrics).items():
            history[k].append(v)
        check_finite({k: np.asarray(v) for k, v in history.items()}, desc)
        bar.set_postfix(score=f"{metrics['objective/scores']:.3f}", kl=f"{metrics['objective/kl']:.2f}")
        if on_iteration is not None:
            on_iteration(len(history["beta"]), state.params["policy"])
    return state.params["policy"], {k: np.asarray(v) for k, v in history.items()}
