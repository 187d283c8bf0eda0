"""The training loop every stage shares: a jitted step, called from a plain Python loop.

No Trainer class: `fit` samples a minibatch *inside* the jitted step from data that already lives on
the device (so the loop moves no data), applies one optax update, and records the step's metrics.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm


class TrainState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    step: jax.Array


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup and cosine decay."""

    steps: int = 300  # optimizer updates
    batch_size: int = 64  # sequences per update
    lr: float = 3e-3  # peak learning rate
    warmup: int = 30  # steps of linear warmup from 0
    weight_decay: float = 0.0  # AdamW's decoupled decay (a tiny model barely needs it)
    grad_clip: float = 1.0  # global-norm clipping, a guard against the odd huge step

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"OptimConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"OptimConfig.lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup <= self.steps:
            raise ValueError(f"OptimConfig.warmup must be in [0, steps], got {self.warmup}")


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, max(cfg.warmup, 1), max(cfg.steps, cfg.warmup + 1))
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adamw(schedule, weight_decay=cfg.weight_decay))


def init_state(params: dict, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def make_step(loss_fn: Callable, optimizer: optax.GradientTransformation, batch_size: int) -> Callable:
    """A jitted step: draw `batch_size` rows of `data` with `key`, update on loss_fn(params, batch).

    loss_fn(params, batch) -> (scalar, metrics) and must close over nothing that changes between
    calls (configs only); everything that varies is an argument, so jit bakes in nothing stale.
    """

    def step(state: TrainState, data: dict, key: jax.Array) -> tuple[TrainState, dict]:
        n = jax.tree_util.tree_leaves(data)[0].shape[0]
        rows = jax.random.randint(key, (batch_size,), 0, n)
        batch = jax.tree_util.tree_map(lambda x: x[rows], data)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, state.step + 1), {"loss": loss, **metrics}

    return jax.jit(step, donate_argnums=0)


_COMPILED: dict = {}  # jitted steps by (loss, optimizer config); see compiled_step
_MAX_COMPILED = 64


def _loss_key(loss_fn: Callable):
    """Equal for two partials of one function with equal arguments (configs are frozen dataclasses)."""
    if isinstance(loss_fn, partial):
        return (loss_fn.func, loss_fn.args, tuple(sorted(loss_fn.keywords.items())))
    return loss_fn


def compiled_step(loss_fn: Callable, cfg: OptimConfig) -> Callable:
    """make_step for this loss and optimizer config, reusing the one built by an earlier call with equal ones.

    A sweep (DPO at three betas on three seeds, reward models for several labelers) calls `fit` again and
    again with the same loss and schedule; a fresh `jax.jit` each time would compile the step again (seconds
    each). Reusing the jitted function lets jax find the compiled step in its cache.
    """
    key = (_loss_key(loss_fn), cfg)
    try:
        hash(key)
    except TypeError:  # an unhashable argument: build a fresh step
        return make_step(loss_fn, make_optimizer(cfg), cfg.batch_size)
    if key not in _COMPILED:
        if len(_COMPILED) >= _MAX_COMPILED:
            _COMPILED.clear()
        _COMPILED[key] = make_step(loss_fn, make_optimizer(cfg), cfg.batch_size)
    return _COMPILED[key]


def fit(
    params: dict, loss_fn: Callable, data: dict, key: jax.Array, cfg: OptimConfig, desc: str = "train"
) -> tuple[dict, dict[str, np.ndarray]]:
    """Run cfg.steps updates; returns the final params and each metric's history (one value per step)."""
    step = compiled_step(loss_fn, cfg)
    params = jax.tree_util.tree_map(jnp.array, params)  # a copy: the step donates (frees) its input
    state = init_state(params, make_optimizer(cfg))
    data = jax.tree_util.tree_map(jnp.asarray, data)
    history: list[dict] = []
    bar = tqdm(range(cfg.steps), desc=desc, leave=False, mininterval=0.5)
    for key_step in jax.random.split(key, cfg.steps):
        state, metrics = step(state, data, key_step)
        history.append(metrics)
        bar.update()
    bar.close()
    history = {k: np.asarray([m[k] for m in history]) for k in history[0]}
    check_finite(history, desc)
    return state.params, history


def check_finite(history: dict[str, np.ndarray], stage: str) -> None:
    """Fail loudly on a NaN/inf metric instead of training on garbage."""
    bad = [k for k, v in history.items() if not np.all(np.isfinite(v))]
    if bad:
        first = min(int(np.argmax(~np.isfinite(history[k]))) for k in bad)
        raise FloatingPointError(
            f"{stage}: metric(s) {bad} became NaN/inf at step {first}; lower the learning rate or check the data"
        )
