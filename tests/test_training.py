"""The shared training loop: a sweep that fits the same loss again reuses its compiled step (jax's own cache, keyed
by the loss and its frozen configs), and gets the same numbers; a traced coefficient changes without a compile; a
different loss or config never runs a stale step; the learning rate warms up linearly, then decays by a cosine to 0."""
from dataclasses import replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from minirlhf.training import OptimConfig, fit, train_step


def _squared_error(params, batch, scale):
    err = batch["x"] @ params["w"] - batch["y"]
    return scale * jnp.mean(err ** 2), {"err": jnp.mean(jnp.abs(err))}


DATA = {"x": np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32),
        "y": np.random.default_rng(1).normal(size=32).astype(np.float32)}
CFG = OptimConfig(steps=20, batch_size=8, lr=1e-2, warmup=2)


TRACES = []  # one entry each time jax traces _counted, i.e. each time it compiles a step for it


def _counted(params, batch, target, scale=1.0):
    TRACES.append(target)  # a side effect: runs while tracing, never in the compiled step
    return scale * jnp.mean((batch["x"] @ params["w"] - target) ** 2), {}


def test_equal_fits_compile_their_step_once_and_unequal_ones_do_not_share_it():
    TRACES.clear()
    size = train_step._cache_size()
    for seed in (7, 8):
        fit({"w": jnp.zeros(3)}, _counted, DATA, jax.random.PRNGKey(seed), CFG, static={"target": 1.0})
    assert len(TRACES) == 1 and train_step._cache_size() == size + 1, (
        f"two fits with an equal loss, static configs and OptimConfig should share one step, compiled once; the "
        f"loss was traced {len(TRACES)} times and the step's cache grew by {train_step._cache_size() - size} "
        f"(2: the static arguments are compared by identity, not by value)")
    fit({"w": jnp.zeros(3)}, _counted, DATA, jax.random.PRNGKey(7), CFG, static={"target": 2.0})
    fit({"w": jnp.zeros(3)}, _counted, DATA, jax.random.PRNGKey(7), replace(CFG, lr=2e-2), static={"target": 1.0})
    assert len(TRACES) == 3, "another static config, or another OptimConfig, must compile a step of its own"


def test_a_traced_coefficient_changes_without_a_compile_and_is_not_baked_in():
    TRACES.clear()
    losses = [fit({"w": jnp.zeros(3)}, _counted, DATA, jax.random.PRNGKey(7), CFG, static={"target": 1.0},
                  traced={"scale": scale})[1]["loss"][0] for scale in (1.0, 2.0, 5.0)]
    assert len(TRACES) <= 1, f"fits that differ only in a traced coefficient compiled {len(TRACES)} steps, not one"
    np.testing.assert_allclose(losses, [1.0, 2.0, 5.0], rtol=1e-6, err_msg=(
        "the first loss of scale * mean((x w - 1)^2) from w = 0 is the scale: a traced coefficient must reach "
        "the loss as passed, not as the value the step was first compiled with"))


def test_reused_step_trains_exactly_like_a_fresh_one():
    runs = [fit({"w": jnp.zeros(3)}, _squared_error, DATA, jax.random.PRNGKey(3), CFG, static={"scale": 1.0})
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0]["w"], runs[1][0]["w"])
    np.testing.assert_array_equal(runs[0][1]["loss"], runs[1][1]["loss"])
    full = {k: jnp.asarray(v) for k, v in DATA.items()}
    assert _squared_error(runs[0][0], full, 1.0)[0] < _squared_error({"w": jnp.zeros(3)}, full, 1.0)[0]  # it trains


def test_a_partial_over_an_array_still_trains():
    weights = np.ones(32, np.float32)  # a partial is a static argument by identity: it works, compiled per fit

    def weighted(params, batch, w):
        return jnp.mean(jnp.asarray(w)[: batch["y"].shape[0]] * (batch["x"] @ params["w"] - batch["y"]) ** 2), {}

    params, history = fit({"w": jnp.zeros(3)}, partial(weighted, w=weights), DATA, jax.random.PRNGKey(4), CFG)
    assert np.all(np.isfinite(history["loss"]))


# ---------------------------------------------------------------- the learning-rate schedule and stale steps


def _linear(params, batch):
    """d loss / d w = 1 whatever w is: Adam's step is then exactly the learning rate (m_hat = v_hat = 1)."""
    return jnp.sum(params["w"]), {"rows": jnp.float32(batch["y"].shape[0])}


def _learning_rates(cfg):
    """The learning rate of each of fit's updates on _linear, read off the trajectory of w."""
    params, history = fit({"w": jnp.zeros(1)}, _linear, DATA, jax.random.PRNGKey(5), cfg)
    w = np.append(history["loss"], params["w"][0])  # w before each step, then after the last
    return -np.diff(w), history


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_zero():
    for cfg in (OptimConfig(steps=12, batch_size=8, lr=0.1, warmup=4), OptimConfig(steps=12, batch_size=8, lr=0.05,
                                                                                  warmup=4)):
        got, _ = _learning_rates(cfg)
        t = np.arange(cfg.steps)
        warm = cfg.lr * t / cfg.warmup  # from 0 at step 0 to the peak at step `warmup`
        cosine = cfg.lr * 0.5 * (1 + np.cos(np.pi * (t - cfg.warmup) / (cfg.steps - cfg.warmup)))  # to 0 at `steps`
        want = np.where(t < cfg.warmup, warm, cosine)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7, err_msg=(
            f"OptimConfig(lr={cfg.lr}, warmup={cfg.warmup}, steps={cfg.steps}): step t should use lr * t / warmup "
            f"during warmup, then lr * (1 + cos(pi (t - warmup) / (steps - warmup))) / 2, reaching 0 at the end "
            f"(a reused step built for another config would show the other schedule)"))


def _distance_to(params, batch, target):
    return jnp.mean((batch["x"] @ params["w"] - target) ** 2), {}


def test_a_different_loss_or_batch_size_never_runs_a_stale_step():
    for target in (1.0, 3.0, 1.0):
        _, history = fit({"w": jnp.zeros(3)}, _distance_to, DATA, jax.random.PRNGKey(6), CFG, static={"target": target})
        assert history["loss"][0] == target**2, (
            f"the first loss of fitting (x w - {target})^2 from w = 0 must be {target**2}, got {history['loss'][0]}: "
            f"fit ran a compiled step left over from another loss")
    for batch_size in (8, 4):  # 8: the schedule test's first config, already compiled
        _, history = _learning_rates(OptimConfig(steps=12, batch_size=batch_size, lr=0.1, warmup=4))
        assert np.all(history["rows"] == batch_size), (
            f"OptimConfig(batch_size={batch_size}) trained on batches of {history['rows'][0]:.0f} rows: "
            f"a step compiled for another batch size was reused")


def test_fit_copies_its_inputs_to_the_device_without_compiling_a_copy_and_leaves_them_usable():
    """The step donates its state, so fit copies the params first; that copy, and moving the data to the device,
    are transfers (jax.device_put), not one small compiled `copy`/`stage` computation per array shape."""
    from minirlhf.compile_cache import CompileClock

    rows = 24  # a data shape no other test uses, so nothing about it is compiled yet
    data = {"x": np.ones((rows, 5), np.float32), "y": np.zeros(rows, np.float32)}
    for params in ({"w": jnp.full(5, 0.5)}, {"w": np.full(5, 0.5, np.float32)}):
        with CompileClock() as clock:
            trained, _ = fit(params, _squared_error, data, jax.random.key(3), replace(CFG, steps=3), static={"scale": 2.0})
        made = clock.split().compiled
        assert not {"copy", "stage"} & set(made), f"fit compiled {dict(made)}: copy with jax.device_put instead"
        assert np.asarray(params["w"]).tolist() == [0.5] * 5, "the caller's params must survive the donated step"
        assert not np.allclose(trained["w"], 0.5), "and the copy is what trained"
