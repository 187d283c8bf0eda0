"""Scaling out: the same training step, data-parallel over several devices with `jax.sharding`.

Data parallelism: every device holds a full copy of the parameters (replicated) and a slice of the
batch (sharded along the batch axis). Each computes the loss and gradient of its slice; the gradients
are averaged across devices (an all-reduce); every copy takes the same optimizer step. Because the
loss is a mean over the batch, the averaged gradient is the gradient of the whole batch, so the result
equals one device's up to the order of float additions.

In JAX we do not write the all-reduce. We say WHERE the arrays live, with a `Mesh` of devices and a
`NamedSharding` per array, and `jax.jit` compiles the step for that layout (GSPMD inserts the
communication). The step function itself is unchanged:

    mesh = Mesh(jax.devices(), ("data",))
    params -> NamedSharding(mesh, P())          replicated on every device
    batch  -> NamedSharding(mesh, P("data"))    rows split across devices

On a laptop with one CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=2` (set before jax is
imported) makes XLA present the CPU as 2 devices, so the code path runs and can be tested, though
both "devices" share the same cores: expect no speed-up there. On a machine with GPUs or TPUs,
`jax.devices()` lists them and the same code spreads the batch over them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import jax
import matplotlib.pyplot as plt
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from minirlhf import pretrain, transformer
from minirlhf.experiments.toolkit import result
from minirlhf.ops import numpy_rng
from minirlhf.tokenizer import VOCAB_SIZE
from minirlhf.training import OptimConfig, TrainState, init_state, make_optimizer
from minirlhf.world import WorldConfig, make_world

DATA_AXIS = "data"  # the mesh axis the batch is split along


@dataclass(frozen=True)
class Config:
    """A short pretraining run, done twice: on one device, and data-parallel on several. Scalars only."""

    steps: int = 20
    """Optimizer steps in each run."""
    batch_size: int = 64
    """Sequences per step; must divide evenly among the devices."""
    n_docs: int = 1000
    """Pretraining documents the batches are drawn from."""
    d_model: int = 64
    """Model width (the pipeline's); the model is otherwise the pipeline's too."""
    n_layers: int = 2
    """Transformer blocks (the pipeline's)."""
    host_devices: int = 2
    """If jax has fewer devices than this and runs on CPU, run in a child process with this many simulated
    CPU devices (XLA_FLAGS); 0 uses whatever devices this process has."""

    def __post_init__(self):
        if min(self.steps, self.batch_size, self.n_docs, self.d_model, self.n_layers) < 1:
            raise ValueError("Config.steps, batch_size, n_docs, d_model and n_layers must be >= 1")
        if self.host_devices < 0:
            raise ValueError(f"Config.host_devices must be >= 0, got {self.host_devices}")

    @classmethod
    def small(cls) -> "Config":
        """The notebook's budget: 5 steps, on the devices the notebook's process has."""
        return cls(steps=5, n_docs=256, host_devices=0)

    def model(self) -> transformer.ModelConfig:
        return transformer.ModelConfig(vocab_size=VOCAB_SIZE, d_model=self.d_model, n_layers=self.n_layers)


# ---------------------------------------------------------------- the step, and where its arrays live


def data_mesh(devices) -> Mesh:
    """A 1-D mesh: the devices side by side along the "data" axis."""
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation, mesh: Mesh) -> Callable:
    """`training.make_step`'s update on a batch handed in, compiled for `mesh`: state replicated, batch sharded.

    The body is the one-device step; only the shardings tell jit to split the batch and average gradients.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    by_row = NamedSharding(mesh, PartitionSpec(DATA_AXIS))  # axis 0 (the batch) split along "data"

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1), {"loss": loss, **metrics}

    return jax.jit(step, in_shardings=(replicated, by_row), out_shardings=(replicated, replicated))


def place(tree, mesh: Mesh, spec: PartitionSpec):
    """Put every array of `tree` on the mesh with the given layout."""
    return jax.device_put(tree, NamedSharding(mesh, spec))


def train_on(mesh: Mesh, params: dict, data: dict, key: jax.Array, cfg: Config) -> tuple[dict, list[float], dict]:
    """cfg.steps pretraining steps on `mesh`; the rows of every batch come from `key`, so two meshes see the same data.

    Returns (params as numpy, losses, info: devices, how the last batch was split, median step seconds).
    """
    if cfg.batch_size % mesh.size:
        raise ValueError(f"batch_size={cfg.batch_size} does not split evenly among {mesh.size} devices")
    optim = OptimConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=3e-3, warmup=min(5, cfg.steps))
    optimizer = make_optimizer(optim)
    step = make_train_step(partial(pretrain.lm_loss, cfg=cfg.model()), optimizer, mesh)
    state = place(init_state(params, optimizer), mesh, PartitionSpec())
    losses, seconds = [], []
    for key_step in jax.random.split(key, cfg.steps):
        rows = np.asarray(jax.random.randint(key_step, (cfg.batch_size,), 0, len(data["tokens"])))
        batch = place({k: v[rows] for k, v in data.items()}, mesh, PartitionSpec(DATA_AXIS))
        start = time.perf_counter()
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))  # float() waits for the step to finish
        seconds.append(time.perf_counter() - start)
    shards = [tuple(s.data.shape) for s in batch["tokens"].addressable_shards]
    info = {"devices": mesh.size, "platform": mesh.devices.flat[0].platform, "batch_shards": shards,
            "step_seconds": float(np.median(seconds[1:])) if cfg.steps > 1 else seconds[0]}
    return jax.tree_util.tree_map(np.asarray, state.params), losses, info


def compare(cfg: Config, seed: int = 0, devices=None) -> dict:
    """The same run on one device and on `devices` (default: all of jax.devices()); how far apart they end."""
    devices = list(devices or jax.devices())
    world = make_world(WorldConfig(seed=seed))
    key_init, key_data, key_steps = jax.random.split(jax.random.PRNGKey(seed), 3)
    data = pretrain.corpus_batch(world, numpy_rng(key_data),
                                 pretrain.PretrainConfig(n_docs=cfg.n_docs))
    params = transformer.init_params(key_init, cfg.model())
    one, losses_one, info_one = train_on(data_mesh(devices[:1]), params, data, key_steps, cfg)
    many, losses_many, info_many = train_on(data_mesh(devices), params, data, key_steps, cfg)
    diffs = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a, b: float(np.max(np.abs(a - b))), one, many))
    scale = max(float(np.max(np.abs(x))) for x in jax.tree_util.tree_leaves(one))
    return {"seed": seed, "one_device": info_one, "data_parallel": info_many, "losses_one": losses_one,
            "losses_data_parallel": losses_many, "max_abs_param_diff": max(diffs), "max_abs_param": scale,
            "max_abs_loss_diff": float(np.max(np.abs(np.subtract(losses_one, losses_many))))}


# ---------------------------------------------------------------- the experiment interface


def run(cfg: Config = Config(), seeds=(0, 1, 2), cache=None) -> dict:
    """compare() for each seed; on a CPU with too few devices, in a child process with simulated devices."""
    if cfg.host_devices and len(jax.devices()) < cfg.host_devices and jax.default_backend() == "cpu":
        return run_in_child(cfg, seeds, cfg.host_devices)
    per_seed = {str(s): compare(cfg, s) for s in seeds}
    diffs = [r["max_abs_param_diff"] for r in per_seed.values()]
    return result("sharding", cfg, per_seed, {"max_abs_param_diff": float(np.max(diffs)),
                                              "devices": next(iter(per_seed.values()))["data_parallel"]["devices"]})


def run_in_child(cfg: Config, seeds, n_devices: int, timeout: float = 900) -> dict:
    """Run `run` in a fresh python whose XLA sees n_devices CPU devices (the flag must precede importing jax)."""
    here = str(Path(__file__).resolve().parents[2])  # the folder holding this minirlhf, installed or not
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "
                                      f"--xla_force_host_platform_device_count={n_devices}".strip(),
           "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}
    child_cfg = {**asdict(cfg), "host_devices": 0}
    code = ("import json; from minirlhf.experiments.sharding import Config, run; "
            f"print(json.dumps(run(Config(**{child_cfg!r}), seeds={tuple(seeds)!r})))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the child process with {n_devices} devices failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["config"]["child_process"] = {"XLA_FLAGS": env["XLA_FLAGS"]}  # how it ran: simulated devices
    return out


def plot(result: dict) -> plt.Figure:
    """Loss per step on one device and data-parallel (the curves lie on top of each other), first seed."""
    r = next(iter(result["seeds"].values()))
    n = r["data_parallel"]["devices"]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(r["losses_one"], "o-", label="1 device", lw=3, alpha=0.5)
    ax.plot(r["losses_data_parallel"], "x--", color="k", label=f"{n} devices, batch sharded")
    ax.set(xlabel="optimizer step", ylabel="pretraining loss (nats / token)",
           title=f"same step, 1 vs {n} devices (max |param diff| {r['max_abs_param_diff']:.1e})")
    ax.legend()
    fig.tight_layout()
    return fig


def summary(result: dict) -> str:
    c = result["config"]
    lines = [f"**Data-parallel training with jax.sharding** ({c['steps']} pretraining steps, batch {c['batch_size']}, "
             f"model d_model {c['d_model']} x {c['n_layers']} layers)", "",
             "| seed | devices | batch shard shapes | max abs param diff | max abs loss diff | step s (1 dev / n dev) |",
             "|---|---|---|---|---|---|"]
    for s, r in result["seeds"].items():
        dp = r["data_parallel"]
        lines.append(f"| {s} | {dp['devices']} ({dp['platform']}) | {dp['batch_shards']} | {r['max_abs_param_diff']:.2e} "
                     f"(params up to {r['max_abs_param']:.2f}) | {r['max_abs_loss_diff']:.2e} | "
                     f"{r['one_device']['step_seconds']:.3f} / {dp['step_seconds']:.3f} |")
    if "child_process" in c:
        lines += ["", f"Run in a child process with `XLA_FLAGS={c['child_process']['XLA_FLAGS']}`: "
                  "simulated CPU devices share the same cores, so the step times show the cost of the "
                  "layout, not a speed-up."]
    return "\n".join(lines)
