"""The training loop every stage shares: a jitted step, called from a plain Python loop.

No Trainer class: `fit` samples a minibatch *inside* the jitted step from data that already lives on
the device (so the loop moves no data), applies one optax update, and records the step's metrics.
The step is jitted once, here, with the loss and its frozen configs as static arguments: a sweep that
calls `fit` again with equal ones finds the compiled step in jax's cache instead of compiling it again.
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

from minirlhf.transformer import ModelConfig, check_params, check_tokens


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
        if not self.grad_clip > 0:  # a negative norm flips every clipped gradient (uphill); 0 stops all updates
            raise ValueError(f"OptimConfig.grad_clip must be > 0 (the largest gradient norm kept), got "
                             f"{self.grad_clip}; use a large value such as 1e9 to turn clipping off")
        if not self.weight_decay >= 0:  # a negative decay pushes the weights away from 0
            raise ValueError(f"OptimConfig.weight_decay must be >= 0, got {self.weight_decay}")


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, max(cfg.warmup, 1), max(cfg.steps, cfg.warmup + 1))
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adamw(schedule, weight_decay=cfg.weight_decay))


def init_state(params: dict, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def _frozen(static: dict | None) -> tuple:
    """A dict of configs as sorted (name, value) pairs: hashable, so jit can take it as a static argument."""
    return tuple(sorted((static or {}).items()))


@partial(jax.jit, static_argnames=("loss_fn", "static", "optim"), donate_argnames="state")
def train_step(state: TrainState, data: dict, key: jax.Array, traced: dict | None = None, *, loss_fn: Callable,
               static: tuple, optim: OptimConfig) -> tuple[TrainState, dict]:
    """One update: draw optim.batch_size rows of `data` with `key`, step on loss_fn(params, batch, **static, **traced).

    loss_fn, its configs (`static`, from _frozen) and the OptimConfig are static: jit compiles once per distinct
    value and jax's own cache finds that compilation again when a later `fit` passes equal ones. `traced` holds
    the numbers a sweep varies (DPO's beta): they arrive as arrays, so a new value reuses the compiled step.
    """
    n = jax.tree_util.tree_leaves(data)[0].shape[0]
    rows = jax.random.randint(key, (optim.batch_size,), 0, n)
    batch = jax.tree_util.tree_map(lambda x: x[rows], data)
    objective = lambda params: loss_fn(params, batch, **dict(static), **(traced or {}))
    (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = make_optimizer(optim).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state, state.step + 1), {"loss": loss, **metrics}


def make_step(loss_fn: Callable, optim: OptimConfig, static: dict | None = None) -> Callable:
    """train_step with its static arguments bound: step(state, data, key, traced=None) -> (state, metrics)."""
    return partial(train_step, loss_fn=loss_fn, static=_frozen(static), optim=optim)


def fit(
    params: dict, loss_fn: Callable, data: dict, key: jax.Array, cfg: OptimConfig, desc: str = "train", *,
    static: dict | None = None, traced: dict | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Run cfg.steps updates of loss_fn(params, batch, **static, **traced); returns the final params and each
    metric's history (one value per step).

    loss_fn is best a module-level function, with its frozen configs in `static` (e.g. {"cfg": model_cfg}): two
    fits with equal ones share one compiled step. A fresh lambda or functools.partial works too, but is a new
    static argument each time, so it compiles again. Anything a sweep varies goes in `traced`.
    """
    check_inputs(params, data, desc, static)
    step = make_step(loss_fn, cfg, static)
    params = jax.device_put(params, may_alias=False)  # a copy: the step donates (frees) its input
    state = init_state(params, make_optimizer(cfg))
    data = jax.device_put(data)  # to the device once (a transfer: jnp.asarray would compile a copy per shape)
    history: list[dict] = []
    bar = tqdm(range(cfg.steps), desc=desc, leave=False, mininterval=0.5)
    for key_step in jax.random.split(key, cfg.steps):
        state, metrics = step(state, data, key_step, traced)
        history.append(metrics)
        bar.update()
    bar.close()
    history = {k: np.asarray([m[k] for m in history]) for k in history[0]}
    check_finite(history, desc)
    return state.params, history


def check_inputs(params: dict, data: dict, stage: str, static: dict | None) -> None:
    """Before compiling anything: the data has rows, and a model's params and token ids fit the ModelConfig
    passed as cfg."""
    rows = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree_util.tree_leaves(data)}
    if not rows or None in rows or len(rows) > 1 or 0 in rows:
        raise ValueError(f"{stage}: the training data must be arrays with the same number (>= 1) of rows, "
                         f"got {sorted(map(str, rows)) or 'nothing'} rows")
    model_cfg = (static or {}).get("cfg")
    if isinstance(model_cfg, ModelConfig):
        check_params(params, model_cfg, f"{stage}'s params")
        for name in (k for k in data if k.endswith("tokens")):  # inside jit, a bad id would be clamped silently
            check_tokens(data[name], model_cfg)


def check_finite(history: dict[str, np.ndarray], stage: str) -> None:
    """Fail loudly on a NaN/inf metric instead of training on garbage, saying where it most likely came from."""
    first = {k: int(np.argmax(~np.isfinite(v))) for k, v in history.items() if not np.all(np.isfinite(v))}
    if first:
        step = min(first.values())
        culprits = [k for k, s in first.items() if s == step]
        raise FloatingPointError(f"{stage}: metric(s) {culprits} became NaN/inf first, at step {step}; "
                                 f"{_nan_advice(culprits, step)}")


def _nan_advice(first_bad: list[str], step: int) -> str:
    """Where a NaN most likely came from, given which metrics showed it first and when."""
    if any("score" in k for k in first_bad):
        return "the scores were NaN/inf: check the reward function and the inputs it is given"
    if step == 0:
        return "already at the first step, before any update: check the inputs (data, initial params)"
    return "training diverged: lower the learning rate, or check the data"
