"""Reward-model ensembles: the objectives' exact values, the reward function inside jit and PPO, bootstrap resampling,
and the stopping rule on a hand-made trace."""
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import ensemble, ppo, reward_model, transformer
from minirlhf.data import PROMPT_WIDTH, RESPONSE_WIDTH
from minirlhf.tokenizer import VOCAB_SIZE
from minirlhf.training import OptimConfig
from minirlhf.world import make_world, sample_prompts

R = 8  # response width of the tiny PPO runs
TINY = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=PROMPT_WIDTH + RESPONSE_WIDTH, d_model=16, n_layers=1, n_heads=2,
                               d_mlp=32)
SCORES = np.array([[1.0, 0.0, -2.0],  # three members (rows) scoring three responses (columns)
                   [3.0, 0.0, 0.0],
                   [2.0, 0.0, 2.0]])


@dataclass(frozen=True)
class Constant:
    """A stand-in member: every response scores params["r"][b] (one number per row of the batch)."""

    def __call__(self, params, tokens, valid):
        return params["r"] + 0.0 * tokens[:, 0]


def members_of(scores: np.ndarray) -> tuple:
    return tuple({"r": jnp.asarray(row)} for row in scores)


# ---------------------------------------------------------------- the objectives


def test_objectives_on_hand_made_scores():
    std = np.array([np.sqrt(2 / 3), 0.0, np.sqrt(8 / 3)])  # population std of each column
    want = {"mean": [2.0, 0.0, 0.0], "min": [1.0, 0.0, -2.0], "mean_minus_std": [2.0 - 0.5 * std[0], 0.0, -0.5 * std[2]]}
    np.testing.assert_allclose(ensemble.disagreement(jnp.asarray(SCORES)), std, rtol=1e-6,
                               err_msg="disagreement is the std across members (axis 0, ddof 0), per response")
    for objective, expected in want.items():
        got = ensemble.combine(jnp.asarray(SCORES), objective, lam=0.5)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7, err_msg=(
            f"{objective}: combine should reduce over the members (axis 0), one reward per response"))
    with pytest.raises(ValueError, match="unknown ensemble objective"):
        ensemble.combine(jnp.asarray(SCORES), "median")


def test_unanimous_members_make_every_objective_their_score():
    same = np.tile([0.3, -1.2], (4, 1))
    for objective in ensemble.OBJECTIVES:
        np.testing.assert_allclose(ensemble.combine(jnp.asarray(same), objective, lam=2.0), same[0], rtol=1e-6,
                                   err_msg=f"{objective}: members that agree leave nothing to be cautious about")


def test_ensemble_reward_fn_scores_through_each_member_and_jits():
    tokens, valid = jnp.zeros((3, 4), jnp.int32), jnp.ones((3, 4), bool)
    for objective in ensemble.OBJECTIVES:
        fn = ensemble.EnsembleRewardFn(Constant(), objective, 0.5)
        eager = fn(members_of(SCORES), tokens, valid)
        jitted = jax.jit(fn)(members_of(SCORES), tokens, valid)
        np.testing.assert_allclose(jitted, ensemble.combine(jnp.asarray(SCORES), objective, 0.5), rtol=1e-6)
        np.testing.assert_allclose(jitted, eager, rtol=1e-6)


def test_ensemble_reward_fn_is_a_hashable_static_argument():
    a, b = ensemble.ensemble_reward_fn(TINY, "min"), ensemble.ensemble_reward_fn(TINY, "min")
    assert a == b and hash(a) == hash(b), "equal ensembles must be equal static arguments, or jit compiles again"
    assert a != ensemble.ensemble_reward_fn(TINY, "mean"), "another objective is another compiled rollout"
    assert a.cfg == TINY, "the RL core checks each member's params against the members' model config"
    with pytest.raises(ValueError, match="objective"):
        ensemble.EnsembleRewardFn(Constant(), "max")
    with pytest.raises(ValueError, match="lam"):
        ensemble.EnsembleRewardFn(Constant(), "mean_minus_std", -1.0)


def test_a_second_ppo_run_with_an_equal_ensemble_compiles_nothing_new():
    policy = transformer.init_params(jax.random.PRNGKey(0), TINY)
    key_a, key_b = jax.random.split(jax.random.PRNGKey(1))
    rms = tuple(reward_model.init_reward_model(k, policy, TINY) for k in (key_a, key_b))
    cfg = ppo.PPOConfig(iterations=1, batch_size=4, minibatches=1, ppo_epochs=1, beta=0.0, response_width=R)

    def run():
        fn = ensemble.ensemble_reward_fn(TINY, "mean_minus_std", 1.0)  # a fresh, equal instance each time
        ppo.train_ppo(jax.random.PRNGKey(2), policy, policy, fn, rms, partial(sample_prompts, make_world()), TINY, cfg,
                      value_params=rms[0])
        return ppo.make_rollout._cache_size()

    first = run()
    assert run() == first, "a second run with an equal EnsembleRewardFn compiled make_rollout again"


# ---------------------------------------------------------------- training the members


def test_bootstrap_is_determined_by_its_key_and_resamples_whole_pairs():
    n = 50
    pairs = {"chosen_tokens": np.arange(n)[:, None] * np.ones((1, 3), int), "gold_chosen": np.arange(n, dtype=float)}
    a, b = ensemble.bootstrap(jax.random.PRNGKey(0), pairs), ensemble.bootstrap(jax.random.PRNGKey(0), pairs)
    c = ensemble.bootstrap(jax.random.PRNGKey(1), pairs)
    np.testing.assert_array_equal(a["gold_chosen"], b["gold_chosen"], err_msg="the same key must draw the same pairs")
    assert not np.array_equal(a["gold_chosen"], c["gold_chosen"]), "another key should draw other pairs"
    assert len(a["gold_chosen"]) == n, "a bootstrap resample has as many pairs as the data"
    np.testing.assert_array_equal(a["chosen_tokens"][:, 0], a["gold_chosen"],
                                  err_msg="every array of the pairs must be cut by the same rows")
    distinct = len(np.unique(a["gold_chosen"]))
    assert distinct < n, "drawn with replacement, some pairs repeat"
    assert 0.45 * n < distinct < 0.8 * n, f"{distinct}/{n} distinct: expected about 63% (1 - 1/e)"


def test_members_normalise_on_the_samples_the_pipelines_rm_normalised_on():
    """normalization_samples redraws run_reward_model's SFT samples: on them the pipeline's RM scores mean 0, std 1."""
    key = jax.random.PRNGKey(3)
    policy, world = transformer.init_params(jax.random.PRNGKey(0), TINY), make_world()
    cfg = reward_model.RMConfig(n_pairs=8, n_heldout=8, n_normalize=32, optim=OptimConfig(steps=2, batch_size=4, warmup=1))
    rm = reward_model.run_reward_model(key, policy, world, TINY, cfg)[0]
    r = np.asarray(reward_model.score(rm, *ensemble.normalization_samples(key, policy, world, TINY, cfg), TINY))
    assert abs(r.mean()) < 1e-4 and abs(r.std() - 1) < 1e-3, (
        f"the pipeline's RM scores mean {r.mean():.4f}, std {r.std():.4f} on these samples: they are not the ones "
        f"run_reward_model normalised on, so the members would not share its scale")


# ---------------------------------------------------------------- the stopping rule


def test_alarm_threshold_is_sfts_quantile():
    sft = np.arange(100.0)
    tau = ensemble.alarm_threshold(sft, 0.9)
    assert np.isclose(ensemble.share_above(sft, tau), 0.1), "SFT's own samples exceed tau at the rate 1 - quantile"
    with pytest.raises(ValueError):
        ensemble.alarm_threshold(sft, 1.0)


def test_stop_before_alarm_on_a_hand_made_trace():
    shares = [0.10, 0.12, 0.18, 0.35, 0.50, 0.15]  # SFT, then checkpoints; alarms first at index 3
    assert ensemble.stop_before_alarm(shares, 0.2) == 2, "keep the last checkpoint before the first alarm"
    assert ensemble.stop_before_alarm(shares, 0.6) == 5, "no alarm: keep the last checkpoint"
    assert ensemble.stop_before_alarm([0.1, 0.3, 0.1], 0.2) == 0, "an alarm at the first checkpoint keeps SFT"
    assert ensemble.stop_before_alarm(shares, 0.18) == 2, "the share must exceed the alarm, not just reach it"
