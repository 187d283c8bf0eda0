"""The shared training loop: a sweep that fits the same loss again reuses its compiled step, and gets the same numbers."""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from minirlhf.training import OptimConfig, compiled_step, fit


def _squared_error(params, batch, scale):
    err = batch["x"] @ params["w"] - batch["y"]
    return scale * jnp.mean(err ** 2), {"err": jnp.mean(jnp.abs(err))}


DATA = {"x": np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32),
        "y": np.random.default_rng(1).normal(size=32).astype(np.float32)}
CFG = OptimConfig(steps=20, batch_size=8, lr=1e-2, warmup=2)


def test_equal_partials_share_one_compiled_step_and_unequal_ones_do_not():
    step = compiled_step(partial(_squared_error, scale=1.0), CFG)
    assert compiled_step(partial(_squared_error, scale=1.0), CFG) is step  # a new but equal partial
    assert compiled_step(partial(_squared_error, scale=2.0), CFG) is not step  # another loss
    assert compiled_step(partial(_squared_error, scale=1.0), OptimConfig(steps=21, batch_size=8, lr=1e-2, warmup=2)) is not step  # another schedule


def test_reused_step_trains_exactly_like_a_fresh_one():
    runs = [fit({"w": jnp.zeros(3)}, partial(_squared_error, scale=1.0), DATA, jax.random.PRNGKey(3), CFG)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0]["w"], runs[1][0]["w"])
    np.testing.assert_array_equal(runs[0][1]["loss"], runs[1][1]["loss"])
    full = {k: jnp.asarray(v) for k, v in DATA.items()}
    assert _squared_error(runs[0][0], full, 1.0)[0] < _squared_error({"w": jnp.zeros(3)}, full, 1.0)[0]  # it trains


def test_unhashable_arguments_still_work_without_sharing():
    weights = np.ones(32, np.float32)  # an array argument cannot be a cache key

    def weighted(params, batch, w):
        return jnp.mean(jnp.asarray(w)[: batch["y"].shape[0]] * (batch["x"] @ params["w"] - batch["y"]) ** 2), {}

    params, history = fit({"w": jnp.zeros(3)}, partial(weighted, w=weights), DATA, jax.random.PRNGKey(4), CFG)
    assert np.all(np.isfinite(history["loss"]))
