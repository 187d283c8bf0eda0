"""PPO: KL estimators, shaped rewards, GAE, the clipped losses, the KL controller, masking, and a tiny run."""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import policy_gradient, ppo, ppo_losses, transformer
from minirlhf.data import PROMPT_WIDTH, encode_prompts, response_mask
from minirlhf.ops import masked_mean, masked_whiten
from minirlhf.sampling import SampleConfig, generate
from minirlhf.tokenizer import EOS_ID, PAD_ID, TOKEN_ID, VOCAB_SIZE
from minirlhf.world import make_world, sample_prompts

R = 8  # response width of every model-based test: short, so compiles stay small
TINY = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=PROMPT_WIDTH + R, d_model=32, n_layers=1, n_heads=2,
                               d_mlp=64)


def response_masks(rng, batch, seq, prompt_width):
    """Masks in the shared layout: False on the prompt, True for 1..(seq - prompt_width) tokens, then False."""
    lengths = rng.integers(1, seq - prompt_width + 1, size=batch)
    index = np.arange(seq)[None, :]
    return (index >= prompt_width) & (index < prompt_width + lengths[:, None])


# ---------------------------------------------------------------- GAE


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0), (0.99, 0.0)])
def test_gae_matches_plain_loop(gamma, lam):
    rng = np.random.default_rng(0)
    B, T, P = 6, 12, 4
    rewards, values = rng.normal(size=(2, B, T)).astype(np.float32)
    mask = response_masks(rng, B, T, P)
    mask[0, P:] = True  # one response that runs to the last column (cut off, no EOS)
    adv, ret = ppo_losses.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask), gamma, lam)
    ref_adv, ref_ret = ppo_losses.gae_reference(rewards, values, mask, gamma, lam)
    bad = [tuple(int(i) for i in where) for where in np.argwhere(~np.isclose(adv, ref_adv, atol=1e-5))]
    assert not bad, (
        f"gae disagrees with the plain loop first at (row, position) {bad[0]}: got {adv[bad[0]]:.4f}, "
        f"want {ref_adv[bad[0]]:.4f}. Is V after the last real token taken as 0, and does padding stay out "
        f"of the recurrence?"
    )
    np.testing.assert_allclose(ret, ref_ret, atol=1e-5,
                               err_msg="returns should be advantages + values on real tokens, 0 elsewhere")


def test_gae_limits_are_td_and_monte_carlo():
    """lam = 0 gives the one-step TD error; gamma = lam = 1 gives (sum of future rewards) - V."""
    rng = np.random.default_rng(1)
    rewards, values = rng.normal(size=(2, 1, 5)).astype(np.float32)
    mask = np.ones((1, 5), bool)
    td, _ = ppo_losses.gae(rewards, values, mask, 1.0, 0.0)
    next_values = np.append(values[0, 1:], 0.0)
    np.testing.assert_allclose(td[0], rewards[0] + next_values - values[0], atol=1e-5,
                               err_msg="with lam=0, A_t must be r_t + V_{t+1} - V_t (and V after the end is 0)")
    mc, _ = ppo_losses.gae(rewards, values, mask, 1.0, 1.0)
    future = np.cumsum(rewards[0][::-1])[::-1]
    np.testing.assert_allclose(mc[0], future - values[0], atol=1e-5,
                               err_msg="with gamma=lam=1, A_t must be the sum of rewards from t on, minus V_t")


def test_gae_matches_rlax():
    rlax = pytest.importorskip("rlax")
    rng = np.random.default_rng(2)
    B, T, P, gamma, lam = 4, 10, 3, 1.0, 0.95
    rewards, values = rng.normal(size=(2, B, T)).astype(np.float32)
    mask = response_masks(rng, B, T, P)
    adv, _ = ppo_losses.gae(rewards, values, mask, gamma, lam)
    for b in range(B):
        r, v = rewards[b][mask[b]], values[b][mask[b]]
        # rlax wants one trajectory: values of length L + 1 (the bootstrap after the end is 0 here).
        want = rlax.truncated_generalized_advantage_estimation(r, jnp.full_like(r, gamma), lam, jnp.append(v, 0.0))
        np.testing.assert_allclose(np.asarray(adv)[b][mask[b]], want, atol=1e-5, err_msg=f"row {b} differs from rlax")


# ---------------------------------------------------------------- KL estimators and shaped rewards


def test_kl_estimators_on_two_known_categoricals():
    """Sample tokens from p; the means of k1 and k3 estimate KL(p || q), and k3 is never negative."""
    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    q = np.array([0.2, 0.2, 0.2, 0.2, 0.2])
    exact = float(np.sum(p * np.log(p / q)))
    draws = np.random.default_rng(3).choice(len(p), size=200_000, p=p)
    log_ratio = jnp.asarray(np.log(p[draws]) - np.log(q[draws]), jnp.float32)
    for name in ("k1", "k3"):
        k = np.asarray(ppo_losses.kl_estimate(log_ratio, name))
        stderr = k.std() / np.sqrt(k.size)
        assert abs(k.mean() - exact) < 5 * stderr + 1e-4, (
            f"{name} should be an unbiased estimate of KL(p||q) = {exact:.4f}, but its mean is {k.mean():.4f}; "
            f"check the sign of the log-ratio (log p - log q, with samples from p)"
        )
    k1 = np.asarray(ppo_losses.kl_estimate(log_ratio, "k1"))
    assert k1.min() < 0, "k1 = log-ratio should be negative for some samples (that is why k3 exists)"
    k3 = np.asarray(ppo_losses.kl_estimate(log_ratio, "k3"))
    assert k3.min() >= 0, f"k3 = (e^-l - 1) + l is never negative, got {k3.min()}"
    k2 = np.asarray(ppo_losses.kl_estimate(log_ratio, "k2"))
    np.testing.assert_allclose(k2, 0.5 * np.asarray(log_ratio) ** 2, rtol=1e-6,
                               err_msg="k2 must be half the squared log-ratio")


def test_unknown_kl_estimator_is_named():
    with pytest.raises(ValueError, match="k4"):
        ppo_losses.kl_estimate(jnp.zeros(3), "k4")


def test_shaped_rewards_put_the_score_at_the_last_real_token_only():
    rng = np.random.default_rng(4)
    B, T, P, beta = 5, 9, 3, 0.1
    mask = response_masks(rng, B, T, P)
    mask[0, P:] = True  # cut off at the last column
    scores = jnp.asarray(rng.normal(size=B), jnp.float32)
    same = jnp.zeros((B, T))
    rewards = np.asarray(ppo_losses.kl_shaped_rewards(scores, same, same, jnp.asarray(mask), beta))
    last = np.array([np.flatnonzero(row)[-1] for row in mask])
    want = np.zeros((B, T), np.float32)
    want[np.arange(B), last] = scores
    np.testing.assert_allclose(rewards, want, atol=1e-6,
                               err_msg="with no KL, the only nonzero reward is the score, at each row's last token")

    logprobs = jnp.asarray(rng.normal(size=(B, T)), jnp.float32)
    ref_logprobs = jnp.asarray(rng.normal(size=(B, T)), jnp.float32)
    rewards = np.asarray(ppo_losses.kl_shaped_rewards(scores, logprobs, ref_logprobs, jnp.asarray(mask), beta, "k1"))
    assert np.all(rewards[~mask] == 0), "off the mask (prompt, padding after EOS) there is no reward and no KL"
    kl = np.where(mask, logprobs - ref_logprobs, 0.0).sum(axis=1)
    np.testing.assert_allclose(rewards.sum(axis=1), scores - beta * kl, atol=1e-5,
                               err_msg="a response's total reward must be score - beta * (its summed KL)")


# ---------------------------------------------------------------- losses


def test_clipped_policy_loss_has_no_gradient_where_the_clip_binds():
    eps = 0.2
    ratio = jnp.array([[1.5, 0.5, 1.5, 0.5, 1.1, 0.9]])  # far above, far below, ..., inside the trust region
    advantages = jnp.array([[1.0, -1.0, -1.0, 1.0, 1.0, -1.0]])
    old = jnp.zeros_like(ratio)
    mask = jnp.ones_like(ratio, bool)
    grad = jax.grad(lambda lp: ppo_losses.policy_loss(lp, old, advantages, mask, eps)[0])(jnp.log(ratio))
    # A > 0 and ratio above 1 + eps, or A < 0 and ratio below 1 - eps: the clip binds, the gradient is 0.
    assert np.allclose(grad[0, :2], 0.0), (
        f"gradient {grad[0, :2]} where the ratio has already moved past the clip in the direction A rewards; "
        f"it must be 0. Did you take min instead of max of the two losses (or forget the minus sign)?"
    )
    # Elsewhere the unclipped term is the pessimistic one and its gradient, -A * ratio / N, flows.
    want = -advantages[0, 2:] * ratio[0, 2:] / ratio.size
    np.testing.assert_allclose(grad[0, 2:], want, rtol=1e-5,
                               err_msg="where the clip does not bind, d loss / d logprob = -A * ratio / N")
    _, metrics = ppo_losses.policy_loss(jnp.log(ratio), old, advantages, mask, eps)
    assert np.isclose(metrics["policy/clipfrac"], 2 / 6), "clipfrac counts the tokens whose gradient the clip removed"
    np.testing.assert_allclose(metrics["policy/approxkl"], 0.5 * np.mean(np.log(ratio) ** 2), rtol=1e-5)


def test_value_loss_is_clipped_around_the_old_value():
    old, returns = jnp.zeros((1, 2)), jnp.full((1, 2), 1.0)
    mask = jnp.ones((1, 2), bool)
    # V moved to 0.5 (beyond the 0.2 clip); the clipped prediction 0.2 is further from R, so it is the loss.
    loss, metrics = ppo_losses.value_loss(jnp.full((1, 2), 0.5), old, returns, mask, 0.2)
    assert np.isclose(loss, 0.5 * 0.8**2), f"expected 1/2 (0.2 - 1)^2 = 0.32 from the clipped prediction, got {loss}"
    assert np.isclose(metrics["val/clipfrac"], 1.0)


# ---------------------------------------------------------------- KL controller and whitening


def test_adaptive_kl_controller_moves_beta_toward_the_target():
    cfg = ppo_losses.AdaptiveKLConfig(target=6.0, horizon=1000)
    state = ppo_losses.KLState(0.1)
    up = ppo_losses.update_kl_controller(state, kl=9.0, n_episodes=64, adaptive=cfg)
    down = ppo_losses.update_kl_controller(state, kl=3.0, n_episodes=64, adaptive=cfg)
    assert up.beta > 0.1, "KL above target: KL must get more expensive (beta up)"
    assert down.beta < 0.1, "KL below target: beta must go down"
    huge = ppo_losses.update_kl_controller(state, kl=600.0, n_episodes=64, adaptive=cfg)
    assert np.isclose(huge.beta, 0.1 * (1 + 0.2 * 64 / 1000)), "the proportional error is clipped to +-0.2"
    assert ppo_losses.update_kl_controller(state, 600.0, 64, None).beta == 0.1, "adaptive=None keeps beta fixed"


def test_whitened_advantages_have_mean_0_std_1_over_real_tokens_only():
    rng = np.random.default_rng(5)
    mask = response_masks(rng, 8, 12, 4)
    adv = np.where(mask, rng.normal(3.0, 2.0, size=mask.shape), 1e6)  # huge junk on padding
    white = np.asarray(masked_whiten(jnp.asarray(adv, jnp.float32), jnp.asarray(mask)))
    assert abs(white[mask].mean()) < 1e-4 and abs(white[mask].std() - 1) < 1e-3, (
        f"over real tokens: mean {white[mask].mean():.3f}, std {white[mask].std():.3f}; "
        f"padding must not enter the statistics"
    )
    assert np.all(white[~mask] == 0)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="minibatches"):
        ppo.PPOConfig(batch_size=10, minibatches=3)
    with pytest.raises(ValueError, match="kl_estimator"):
        ppo.PPOConfig(kl_estimator="exact")
    with pytest.raises(ValueError, match="lam"):
        ppo.PPOConfig(lam=1.5)


# ---------------------------------------------------------------- with a (tiny) model


@pytest.fixture(scope="module")
def policy():
    """One tiny random policy for the whole module (initialising parameters costs compile time)."""
    return jax.jit(transformer.init_params, static_argnums=1)(jax.random.PRNGKey(0), TINY)


def value_model(policy):
    """The value model as train_ppo builds it, with a non-zero head so that values actually vary."""
    value_params = ppo.init_value_params(policy, TINY)
    value_params["head"]["w"] = jnp.ones(TINY.d_model)
    return value_params


def tiny_rollout(seed):
    """A hand-made rollout: prompts of 10 tokens, responses that end (EOS) at different places."""
    rng = np.random.default_rng(seed)
    B, T = 4, PROMPT_WIDTH + R
    tokens = rng.integers(5, VOCAB_SIZE, size=(B, T))
    valid = np.ones((B, T), bool)
    valid[:, :2] = False  # left padding of the prompt
    for b, length in enumerate([2, 5, R, 1]):  # response lengths, EOS included
        tokens[b, PROMPT_WIDTH + length - 1] = EOS_ID
        valid[b, PROMPT_WIDTH + length:] = False
    tokens[~valid] = PAD_ID
    logprobs, ref_logprobs, rewards, values, advantages, returns = rng.normal(size=(6, B, T)).astype(np.float32)
    return ppo.Rollout(jnp.asarray(tokens, jnp.int32), jnp.asarray(valid), jnp.asarray(response_mask(valid)),
                       logprobs, ref_logprobs, rewards, values, advantages, returns)


def test_padding_changes_no_loss(policy):
    params = {"policy": policy, "value": value_model(policy)}
    cfg = ppo.PPOConfig(batch_size=4, minibatches=1, response_width=R)
    batch = tiny_rollout(0)
    junk = np.random.default_rng(1).normal(size=batch.tokens.shape).astype(np.float32) * 100
    off = ~batch.mask
    changed = batch._replace(
        tokens=jnp.where(batch.valid, batch.tokens, 7),  # another token id on every padded position
        logprobs=jnp.where(off, junk, batch.logprobs),
        values=jnp.where(off, junk, batch.values),
        advantages=jnp.where(off, junk, batch.advantages),
        returns=jnp.where(off, junk, batch.returns),
    )
    loss_fn = jax.jit(ppo.ppo_loss, static_argnames=("model_cfg", "cfg"))
    loss, metrics = loss_fn(params, batch, TINY, cfg)
    loss2, metrics2 = loss_fn(params, changed, TINY, cfg)
    for name in metrics:
        assert np.isclose(metrics[name], metrics2[name], atol=1e-5), (
            f"{name} changed from {metrics[name]:.5f} to {metrics2[name]:.5f} when only padding/prompt positions "
            f"changed: some average is not masked to the real response tokens"
        )
    assert np.isclose(loss, loss2, atol=1e-5)


def test_value_at_token_t_does_not_see_token_t(policy):
    """V_t scores the state that *chooses* token t, so it may read tokens[:t] only (the token_logprobs shift)."""
    values = jax.jit(ppo.token_values, static_argnames="cfg")
    batch = tiny_rollout(2)
    t = PROMPT_WIDTH + 1
    other = batch.tokens.at[:, t].set(9)
    v1 = values(value_model(policy), batch.tokens, batch.valid, TINY)
    v2 = values(value_model(policy), other, batch.valid, TINY)
    np.testing.assert_allclose(v1[:, : t + 1], v2[:, : t + 1], atol=1e-6,
                               err_msg="V_t changed when token t changed: values are read one position too late")
    assert not np.allclose(v1[:, t + 1], v2[:, t + 1]), "V_{t+1} should depend on token t"
    assert set(value_model(policy)) == {"lm", "head"}, "value params share the reward model's layout, so an RM can seed V"


# ---------------------------------------------------------------- a tiny PPO run

TARGET = TOKEN_ID["yes"]


def fraction_of_target(reward_params, tokens, valid):
    """A trivial reward: the share of response tokens that are the word 'yes'."""
    return masked_mean(tokens == TARGET, response_mask(valid, tokens.shape[1] - R), axis=1)


@pytest.fixture(scope="module")
def tiny_run(policy):
    world = make_world()
    cfg = ppo.PPOConfig(iterations=30, batch_size=32, ppo_epochs=2, minibatches=2, lr=3e-3, beta=0.01, response_width=R)
    compiled_before = ppo.make_rollout._cache_size(), policy_gradient.update._cache_size()
    gold_fn = lambda prompts, tokens: np.full(len(prompts), -0.5)  # a stand-in ideal human
    trained, history = ppo.train_ppo(jax.random.PRNGKey(1), policy, policy, fraction_of_target, None,
                                     partial(sample_prompts, world), TINY, cfg, gold_fn=gold_fn)
    compiled_after = ppo.make_rollout._cache_size(), policy_gradient.update._cache_size()
    return dict(world=world, policy=policy, trained=trained, history=history, cfg=cfg,
                compiles=(compiled_after[0] - compiled_before[0], compiled_after[1] - compiled_before[1]))


def test_tiny_ppo_run_increases_the_reward(tiny_run):
    scores = tiny_run["history"]["objective/scores"]
    start, end = scores[:3].mean(), scores[-3:].mean()
    assert end > start + 0.3, (
        f"PPO should teach the tiny model to say 'yes': the share of 'yes' went from {start:.2f} to only {end:.2f}. "
        f"Check the sign of the policy loss and that advantages reach the tokens that earned them."
    )
    history = tiny_run["history"]
    for name in ("objective/kl", "objective/rlhf_reward", "objective/entropy", "policy/approxkl", "policy/clipfrac",
                 "val/clipfrac", "val/ratio", "loss/policy", "loss/value", "beta", "objective/gold"):
        assert name in history and history[name].shape == (30,), f"metric {name} should be logged once per iteration"
    assert history["objective/kl"][-1] > history["objective/kl"][0], "moving away from the reference should cost KL"


def test_tiny_ppo_run_compiles_each_step_once(tiny_run):
    assert tiny_run["compiles"] == (1, 1), (
        f"make_rollout / policy_gradient.update compiled {tiny_run['compiles']} times in one run; a recompile per iteration "
        f"means a shape, dtype or static argument changes between iterations"
    )


def test_rollout_advantages_are_whitened_and_masked(tiny_run):
    cfg, world = tiny_run["cfg"], tiny_run["world"]
    tokens, valid = encode_prompts(sample_prompts(world, np.random.default_rng(0), cfg.batch_size))
    gen = generate(tiny_run["policy"], jnp.asarray(tokens), jnp.asarray(valid), jax.random.PRNGKey(3), TINY,
                   SampleConfig(max_new_tokens=R), EOS_ID, PAD_ID)
    value_params = ppo.init_value_params(tiny_run["policy"], TINY)
    params = {"policy": tiny_run["policy"], "value": value_params}
    rollout, metrics = ppo.make_rollout(params, tiny_run["policy"], None, gen.tokens, gen.valid, fraction_of_target,
                                        TINY, cfg)
    mask = np.asarray(rollout.mask)
    adv = np.asarray(rollout.advantages)
    assert abs(adv[mask].mean()) < 1e-4 and abs(adv[mask].std() - 1) < 1e-3, \
        "advantages should be whitened over real tokens"
    for name in ("advantages", "returns", "values", "rewards"):
        assert np.all(np.asarray(getattr(rollout, name))[~mask] == 0), f"{name} must be 0 off the response mask"
    assert np.isclose(metrics["objective/kl"], 0.0, atol=1e-5), "policy == reference: the KL must be 0"
    scores = fraction_of_target(None, gen.tokens, gen.valid)
    np.testing.assert_allclose(np.asarray(rollout.rewards).sum(axis=1), scores, atol=1e-5,
                               err_msg="with no KL, a response's shaped rewards must add up to its score")


def test_a_nan_metric_stops_training(tiny_run):
    def broken_reward(reward_params, tokens, valid):
        return jnp.full(tokens.shape[0], jnp.nan)

    with pytest.raises(FloatingPointError, match="objective/scores"):
        ppo.train_ppo(jax.random.PRNGKey(0), tiny_run["policy"], tiny_run["policy"], broken_reward, None,
                      partial(sample_prompts, tiny_run["world"]), TINY, tiny_run["cfg"])
