"""GRPO and RLOO: group advantages against a plain loop, the leave-one-out baseline's properties, k3 >= 0,
the losses' masking and gradients, and a tiny run of each on a trivial reward."""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import grpo_rloo, policy_gradient, transformer
from minirlhf.data import PROMPT_WIDTH, response_mask
from minirlhf.ops import masked_mean
from minirlhf.ppo_losses import kl_estimate
from minirlhf.tokenizer import TOKEN_ID, VOCAB_SIZE
from minirlhf.world import make_world, sample_prompts

R = 8
TINY = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=PROMPT_WIDTH + R, d_model=32, n_layers=1, n_heads=2,
                               d_mlp=64)


def group_advantages_loop(rewards):
    """GRPO's advantage written out: for each group, (r - mean) / (std + eps), one number at a time."""
    out = np.zeros_like(rewards, dtype=np.float64)
    for p, group in enumerate(rewards):
        mean = sum(group) / len(group)
        std = (sum((r - mean) ** 2 for r in group) / len(group)) ** 0.5
        for i, r in enumerate(group):
            out[p, i] = (r - mean) / (std + grpo_rloo.STD_EPS)
    return out


def leave_one_out_loop(rewards):
    out = np.zeros_like(rewards, dtype=np.float64)
    for p, group in enumerate(rewards):
        for i, r in enumerate(group):
            others = [group[j] for j in range(len(group)) if j != i]
            out[p, i] = r - sum(others) / len(others)
    return out


@pytest.mark.parametrize("group_size", [2, 4, 7])
def test_group_advantages_match_a_plain_loop(group_size):
    rewards = np.random.default_rng(group_size).normal(size=(5, group_size)).astype(np.float32)
    got = np.asarray(grpo_rloo.group_advantages(jnp.asarray(rewards)))
    np.testing.assert_allclose(got, group_advantages_loop(rewards), rtol=1e-4, atol=1e-5,
                               err_msg="GRPO's advantage is (r - group mean) / group std, within each prompt's group")
    np.testing.assert_allclose(got.mean(axis=1), 0.0, atol=1e-5, err_msg="each group's advantages should average 0")


def test_equal_rewards_in_a_group_give_zero_advantage_not_nan():
    rewards = jnp.array([[0.5, 0.5, 0.5, 0.5], [1.0, -1.0, 1.0, -1.0]])
    adv = np.asarray(grpo_rloo.group_advantages(rewards))
    assert np.all(np.isfinite(adv)) and np.all(adv[0] == 0), "a group with one reward value has nothing to teach"
    np.testing.assert_allclose(np.abs(adv[1]), 1.0, atol=1e-3)


@pytest.mark.parametrize("group_size", [2, 3, 8])
def test_leave_one_out_matches_a_plain_loop_and_sums_to_zero(group_size):
    rewards = np.random.default_rng(10 + group_size).normal(size=(6, group_size)).astype(np.float32)
    got = np.asarray(grpo_rloo.leave_one_out_advantages(jnp.asarray(rewards)))
    np.testing.assert_allclose(got, leave_one_out_loop(rewards), rtol=1e-4, atol=1e-5,
                               err_msg="RLOO's advantage is R_i minus the mean of the OTHER rewards of the group")
    np.testing.assert_allclose(got.sum(axis=1), 0.0, atol=1e-5, err_msg="leave-one-out advantages sum to 0 per group")
    # A_i = k/(k-1) (R_i - mean): the same direction as the group mean baseline, scaled up.
    k = group_size
    np.testing.assert_allclose(got, k / (k - 1) * (rewards - rewards.mean(axis=1, keepdims=True)), rtol=1e-4, atol=1e-5)


def test_leave_one_out_baseline_does_not_depend_on_the_own_reward():
    """baseline_i = R_i - A_i must not move when R_i moves (that is what keeps REINFORCE unbiased)."""
    rewards = jnp.asarray(np.random.default_rng(3).normal(size=(2, 5)), jnp.float32)
    baseline = lambda r: r - grpo_rloo.leave_one_out_advantages(r)
    jac = jax.jacobian(lambda r: baseline(r).reshape(-1))(rewards).reshape(10, 10)
    np.testing.assert_allclose(np.diag(jac), 0.0, atol=1e-6,
                               err_msg="sample i's baseline changed with its own reward R_i")
    # ... but it does move with the others in its group (by 1/(k-1)), and not with another group's rewards.
    assert np.isclose(jac[0, 1], 0.25) and np.isclose(jac[0, 7], 0.0)


def test_k3_is_never_negative():
    log_ratio = jnp.linspace(-8.0, 8.0, 2001)
    assert float(jnp.min(kl_estimate(log_ratio, "k3"))) >= 0.0, "k3 = (e^-l - 1) + l is >= 0 for every l"


def masks_and_logprobs(seed, B=4, T=PROMPT_WIDTH + R):
    rng = np.random.default_rng(seed)
    valid = np.ones((B, T), bool)
    for b, length in enumerate([2, 5, R, 1][:B]):
        valid[b, PROMPT_WIDTH + length:] = False
    mask = response_mask(valid)
    lp, old, ref = (jnp.asarray(rng.normal(-1.0, 0.3, (B, T)), jnp.float32) for _ in range(3))
    return jnp.asarray(mask), lp, old, ref, jnp.asarray(rng.normal(size=B), jnp.float32)


def test_losses_ignore_padding():
    mask, lp, old, ref, adv = masks_and_logprobs(0)
    junk = lambda x: jnp.where(mask, x, 123.0)
    for name, fn in [("grpo", lambda a, b, c: grpo_rloo.grpo_loss(a, b, c, adv, mask, 0.2, 0.1)[0]),
                     ("rloo", lambda a, b, c: grpo_rloo.rloo_loss(a, b, adv, mask, 0.2)[0])]:
        assert np.isclose(fn(lp, old, ref), fn(junk(lp), junk(old), junk(ref)), atol=1e-6), \
            f"{name}'s loss changed when only padding changed: a sum or mean is not masked"


def test_rloo_gradient_at_ratio_one_is_reinforce():
    """With fresh samples (pi = pi_old), d loss / d logprob_t = -A_i / B on every real token of response i."""
    mask, lp, _, _, adv = masks_and_logprobs(1)
    grad = jax.grad(lambda x: grpo_rloo.rloo_loss(x, lp, adv, mask, 0.2)[0])(lp)
    want = jnp.where(mask, -adv[:, None] / mask.shape[0], 0.0)
    np.testing.assert_allclose(grad, want, atol=1e-6, err_msg="RLOO's first step should be REINFORCE: -A grad log pi(y)")


def test_grpo_kl_term_pulls_toward_the_reference():
    """With zero advantages only the k3 term is left: its gradient pushes log pi toward log pi_ref."""
    mask, lp, _, ref, adv = masks_and_logprobs(2)
    grad = jax.grad(lambda x: grpo_rloo.grpo_loss(x, x, ref, jnp.zeros_like(adv), mask, 0.2, 1.0)[0])(lp)
    direction = np.sign(np.asarray(lp - ref))[np.asarray(mask)]
    assert np.all(np.sign(np.asarray(grad))[np.asarray(mask)] == direction), \
        "descending the k3 penalty should move each log-prob toward the reference's"


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="group_size"):
        grpo_rloo.GroupConfig(group_size=1)
    with pytest.raises(ValueError, match="whole groups"):
        grpo_rloo.GroupConfig(batch_size=30, group_size=4)
    with pytest.raises(ValueError, match="algorithm"):
        grpo_rloo.GroupConfig(algorithm="ppo")


def test_update_count_sizes_the_learning_rate_decay():
    cfg = grpo_rloo.GroupConfig(iterations=3, ppo_epochs=2, minibatches=4, batch_size=16, group_size=4)
    assert cfg.n_updates == 3 * 2 * 4, "one optimizer step per minibatch, per epoch, per iteration"
    assert (cfg.n_prompts, cfg.minibatch_size) == (4, 4)


def test_minibatches_hold_whole_groups():
    cfg = grpo_rloo.GroupConfig(batch_size=24, group_size=3, minibatches=2)
    rows = np.asarray(policy_gradient.minibatch_rows(jax.random.PRNGKey(0), cfg))
    assert rows.shape == (2, 12) and sorted(rows.reshape(-1).tolist()) == list(range(24))
    assert all(len(set(rows[m] // 3)) == 4 for m in range(2)), "each minibatch should hold 4 complete groups of 3"


# ---------------------------------------------------------------- a tiny run of each

TARGET = TOKEN_ID["yes"]


def fraction_of_target(reward_params, tokens, valid):
    """A trivial reward: the share of response tokens that are the word 'yes'."""
    return masked_mean(tokens == TARGET, response_mask(valid, tokens.shape[1] - R), axis=1)


@pytest.fixture(scope="module")
def policy():
    return jax.jit(transformer.init_params, static_argnums=1)(jax.random.PRNGKey(0), TINY)


@pytest.mark.parametrize("algorithm", grpo_rloo.ALGORITHMS)
def test_tiny_run_increases_a_trivial_reward(policy, algorithm):
    cfg = grpo_rloo.GroupConfig(algorithm=algorithm, group_size=4, iterations=30, batch_size=32, ppo_epochs=2,
                                minibatches=2, lr=3e-3, beta=0.01, response_width=R)
    before = grpo_rloo.make_group_batch._cache_size(), policy_gradient.update._cache_size()
    _, history = grpo_rloo.train_group(jax.random.PRNGKey(1), policy, policy, fraction_of_target, None,
                                       partial(sample_prompts, make_world()), TINY, cfg)
    after = grpo_rloo.make_group_batch._cache_size(), policy_gradient.update._cache_size()
    scores = history["objective/scores"]
    start, end = scores[:3].mean(), scores[-3:].mean()
    assert end > start + 0.3, (f"{algorithm} should teach the tiny model to say 'yes': the share went from "
                               f"{start:.2f} to only {end:.2f}. Check the advantages' sign and group layout.")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1), "each jitted step should compile once per run"
    assert history["objective/kl"][-1] > history["objective/kl"][0], "moving away from the reference should cost KL"
