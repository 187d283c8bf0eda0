"""Property tests: invariances every RLHF quantity must have, checked on many drawn inputs (hypothesis).

Each property is one that a plausible bug breaks: padding that leaks into a mean or a recurrence, a
whitening over the whole array, a sequence log-prob averaged instead of summed, k3 with the ratio the
wrong way round, log-probs read without the shift. The references are plain NumPy over the selected
entries, never the library's own helpers. Shapes come from a small fixed set, so each jitted function
compiles once or twice and then runs on every example: the examples vary the mask, not the shape.
"""
from functools import lru_cache, partial

import jax
import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minirlhf import dpo, grpo_rloo, ops, ppo_losses, reward_model, sampling, transformer
from minirlhf.data import PROMPT_WIDTH, RESPONSE_WIDTH, decode_responses, encode_pairs, response_mask
from minirlhf.tokenizer import EOS_ID, VOCAB_SIZE, WORDS
from minirlhf.world import math_prompt

B, T, P = 4, 8, 2  # rows, width and prompt width of the per-token tests
V = 6  # vocabulary of the logits tests

masked_mean = jax.jit(ops.masked_mean, static_argnames="axis")
masked_whiten = jax.jit(ops.masked_whiten, static_argnames="shift_mean")
token_logprobs = jax.jit(ops.token_logprobs)
kl_estimate = jax.jit(ppo_losses.kl_estimate, static_argnames="estimator")
kl_shaped_rewards = jax.jit(ppo_losses.kl_shaped_rewards, static_argnames="estimator")
gae = jax.jit(ppo_losses.gae)  # gamma and lam are traced: new values, no recompile
policy_loss = jax.jit(ppo_losses.policy_loss)
value_loss = jax.jit(ppo_losses.value_loss)
grpo_loss = jax.jit(grpo_rloo.grpo_loss)
rloo_loss = jax.jit(grpo_rloo.rloo_loss)
group_advantages = jax.jit(grpo_rloo.group_advantages)
leave_one_out_advantages = jax.jit(grpo_rloo.leave_one_out_advantages)
bradley_terry = jax.jit(reward_model.bradley_terry)
preference_loss = jax.jit(dpo.preference_loss, static_argnames="loss_type")
sample_token = jax.jit(sampling.sample_token, static_argnames="sample_cfg")


# ---------------------------------------------------------------- strategies


def floats(lo, hi):
    """Finite float32 values in [lo, hi] (the bounds rounded to float32, as hypothesis requires)."""
    return st.floats(float(np.float32(lo)), float(np.float32(hi)), width=32)


def per_token(lo=-5.0, hi=5.0, shape=(B, T)):
    return arrays(np.float32, shape, elements=floats(lo, hi))


@st.composite
def response_masks(draw, batch=B, seq=T, prompt=P):
    """The shared layout: False on the prompt, True on 1 .. seq - prompt response tokens, then False (padding)."""
    lengths = np.array(draw(st.lists(st.integers(1, seq - prompt), min_size=batch, max_size=batch)))
    index = np.arange(seq)[None, :]
    return (index >= prompt) & (index < prompt + lengths[:, None])


any_masks = arrays(np.bool_, (B, T))
junk = per_token(-10.0, 10.0)  # what padding may hold: anything finite
token_ids = arrays(np.int32, (B, T), elements=st.integers(0, V - 1))


def refill(x, mask, other):
    """x on the mask, `other` everywhere else: the same real data with different padding."""
    return np.where(mask, x, other)


def np_masked_mean(x, mask):
    return float(np.mean(np.asarray(x, np.float64)[np.asarray(mask)]))


NP_KL = {"k1": lambda l: l, "k2": lambda l: 0.5 * l**2, "k3": lambda l: np.expm1(-l) + l}  # Schulman 2020


def np_log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


# ---------------------------------------------------------------- 7. masked_mean


@given(per_token(), any_masks)
def test_masked_mean_is_numpys_mean_over_the_selected_entries(x, mask):
    got = float(masked_mean(x, mask))
    want = np_masked_mean(x, mask) if mask.any() else 0.0
    assert np.isclose(got, want, atol=1e-5), (
        f"masked_mean = {got:.5f}, but the mean of the {mask.sum()} selected entries is {want:.5f}: "
        f"divide the masked sum by the number of True entries, not by the array's size")
    rows = np.asarray(masked_mean(x, mask, axis=1))
    want_rows = [np_masked_mean(x[b], mask[b]) if mask[b].any() else 0.0 for b in range(B)]
    np.testing.assert_allclose(rows, want_rows, atol=1e-5, err_msg=(
        "masked_mean(axis=1) should be each row's mean over its selected entries (0 for a row with none)"))


@given(per_token(), any_masks, st.permutations(range(B * T)))
def test_masked_mean_does_not_depend_on_the_order_of_the_entries(x, mask, perm):
    shuffled_x, shuffled_mask = x.reshape(-1)[perm].reshape(B, T), mask.reshape(-1)[perm].reshape(B, T)
    assert np.isclose(masked_mean(x, mask), masked_mean(shuffled_x, shuffled_mask), atol=1e-5), (
        "shuffling the entries together with their mask changed masked_mean: it should see a set, not positions")


# ---------------------------------------------------------------- 1. padding changes nothing


@given(per_token(), junk, response_masks())
def test_padding_changes_no_masked_mean_and_no_whitened_value(x, other, mask):
    y = refill(x, mask, other)
    assert np.isclose(masked_mean(x, mask), masked_mean(y, mask), atol=1e-5), \
        "masked_mean changed when only the padding changed: padding is leaking into the mean"
    for shift_mean in (True, False):
        white_x, white_y = (np.asarray(masked_whiten(a, mask, shift_mean)) for a in (x, y))
        np.testing.assert_allclose(white_x, white_y, atol=1e-4, err_msg=(
            f"masked_whiten(shift_mean={shift_mean}) of the real tokens changed when only the padding changed: "
            f"the mean and variance must be taken over real tokens only"))
        assert np.all(white_x[~mask] == 0), "masked_whiten should leave padding at exactly 0"


@given(per_token(), per_token(), junk, junk, response_masks(), floats(0.5, 1.0), floats(0.0, 1.0))
def test_padding_changes_no_gae_advantage_on_real_tokens(rewards, values, other_r, other_v, mask, gamma, lam):
    adv, ret = (np.asarray(a) for a in gae(rewards, values, mask, gamma, lam))
    adv2, ret2 = (np.asarray(a) for a in gae(refill(rewards, mask, other_r), refill(values, mask, other_v), mask,
                                             gamma, lam))
    np.testing.assert_allclose(adv2, adv, rtol=1e-5, atol=1e-4, err_msg=(
        "GAE advantages on real tokens changed when only the rewards/values in padding changed: after the last "
        "real token the episode is over (V = 0, A = 0); the recurrence must not read through the padding"))
    np.testing.assert_allclose(ret, np.where(mask, adv + values, 0.0), rtol=1e-5, atol=1e-4,
                               err_msg="returns should be advantages + values on real tokens and 0 elsewhere")
    assert np.all(adv[~mask] == 0), "GAE advantages should be exactly 0 on the prompt and the padding"


@given(arrays(np.float32, (B,), elements=floats(-5, 5)), per_token(), per_token(), junk, junk, response_masks(),
       floats(0.0, 2.0))
def test_padding_changes_no_kl_shaped_reward(scores, logprobs, ref_logprobs, other, other_ref, mask, beta):
    for estimator in ppo_losses.KL_ESTIMATORS:
        rewards = np.asarray(kl_shaped_rewards(scores, logprobs, ref_logprobs, mask, beta, estimator))
        rewards2 = np.asarray(kl_shaped_rewards(scores, refill(logprobs, mask, other),
                                                refill(ref_logprobs, mask, other_ref), mask, beta, estimator))
        np.testing.assert_allclose(rewards2, rewards, rtol=1e-5, atol=1e-4, err_msg=(
            f"KL-shaped rewards ({estimator}) changed when only the log-probs in padding changed: "
            f"the KL penalty belongs to real response tokens only"))
        assert np.all(rewards[~mask] == 0), f"KL-shaped rewards ({estimator}) should be 0 off the mask"
        kl = NP_KL[estimator](np.float64(logprobs) - ref_logprobs)
        np.testing.assert_allclose(rewards.sum(axis=1), scores - beta * np.where(mask, kl, 0.0).sum(axis=1),
                                   rtol=1e-4, atol=1e-3, err_msg=(
            f"a row's shaped rewards ({estimator}) should sum to score - beta * (KL summed over its real tokens)"))


@given(per_token(-3, 0), per_token(-3, 0), per_token(), per_token(), per_token(), junk, junk, junk, response_masks())
def test_padding_changes_no_ppo_loss_or_metric(logprobs, old, advantages, values, returns, j1, j2, j3, mask):
    old_values = values + 0.1
    args = (logprobs, old, advantages)
    loss, metrics = policy_loss(*args, mask, 0.2)
    loss2, metrics2 = policy_loss(*(refill(a, mask, j) for a, j in zip(args, (j1, j2, j3))), mask, 0.2)
    v_loss, v_metrics = value_loss(values, old_values, returns, mask, 0.2)
    v_loss2, v_metrics2 = value_loss(refill(values, mask, j1), refill(old_values, mask, j2), refill(returns, mask, j3),
                                     mask, 0.2)
    pairs = [("policy loss", loss, loss2), ("value loss", v_loss, v_loss2),
             *((k, metrics[k], metrics2[k]) for k in metrics), *((k, v_metrics[k], v_metrics2[k]) for k in v_metrics)]
    for name, a, b in pairs:
        assert np.isclose(a, b, rtol=1e-5, atol=1e-5), (
            f"PPO's {name} changed from {float(a):.5f} to {float(b):.5f} when only the padding changed: "
            f"average over the real tokens (mask), not over every position")


@given(per_token(-3, 0), per_token(-3, 0), per_token(-3, 0), arrays(np.float32, (B,), elements=floats(-3, 3)),
       junk, junk, junk, response_masks())
def test_padding_changes_no_grpo_or_rloo_loss(logprobs, old, ref, advantages, j1, j2, j3, mask):
    padded = [refill(a, mask, j) for a, j in zip((logprobs, old, ref), (j1, j2, j3))]
    for name, fn in [("GRPO", lambda lp, o, r: grpo_loss(lp, o, r, advantages, mask, 0.2, 0.1)),
                     ("RLOO", lambda lp, o, r: rloo_loss(lp, o, advantages, mask, 0.2))]:
        (loss, metrics), (loss2, metrics2) = fn(logprobs, old, ref), fn(*padded)
        assert np.isclose(loss, loss2, rtol=1e-5, atol=1e-5), \
            f"{name}'s loss changed when only the padding changed: a sum or mean over tokens is not masked"
        for k in metrics:
            assert np.isclose(metrics[k], metrics2[k], rtol=1e-5, atol=1e-5), \
                f"{name}'s metric {k} changed when only the padding changed"


# ---------------------------------------------------------------- 2. KL estimators


@given(per_token(-8, 8), any_masks)
def test_kl_estimators_elementwise(log_ratio, zero):
    log_ratio = np.where(zero, 0.0, log_ratio).astype(np.float32)  # some exact zeros: k = 0 there
    l = log_ratio.astype(np.float64)
    k1, k2, k3 = (np.asarray(kl_estimate(log_ratio, k)) for k in ("k1", "k2", "k3"))
    np.testing.assert_allclose(k1, NP_KL["k1"](l), atol=1e-6, err_msg="k1 should be the log-ratio, log pi - log pi_ref")
    np.testing.assert_allclose(k2, NP_KL["k2"](l), rtol=1e-5, atol=1e-6, err_msg="k2 should be l^2 / 2")
    np.testing.assert_allclose(k3, NP_KL["k3"](l), rtol=1e-4, atol=1e-5, err_msg=(
        "k3 should be (e^{-l} - 1) + l with l = log pi - log pi_ref: is the ratio the wrong way round?"))
    assert np.all(k2 >= 0) and np.all(k3 >= 0), "k2 and k3 must never be negative: a sign is flipped"
    assert np.all(k3[log_ratio == 0] == 0) and np.all(k3[np.abs(log_ratio) >= 1e-3] > 0), \
        "k3 must be 0 exactly where log pi = log pi_ref and positive everywhere else"


def test_kl_estimators_average_to_the_exact_kl():
    """Tokens drawn from p: mean k1 and mean k3 are unbiased for KL(p || q); k2 is biased, here by about 13%."""
    logits_p = np.array([1.0, 0.5, 0.0, -0.5, 0.3, -1.0])
    logits_q = logits_p + np.array([0.4, -0.6, 0.2, 0.5, -0.3, 0.1])
    logp, logq = np_log_softmax(logits_p), np_log_softmax(logits_q)
    exact = float(np.sum(np.exp(logp) * (logp - logq)))  # 0.080 nats
    samples = np.random.default_rng(0).choice(len(logp), size=200_000, p=np.exp(logp))
    log_ratio = (logp - logq)[samples].astype(np.float32)
    for estimator, tol in [("k1", None), ("k3", None), ("k2", 0.2 * exact)]:
        k = np.asarray(kl_estimate(log_ratio, estimator), np.float64)
        tol = tol or 4 * k.std() / np.sqrt(len(k))  # 4 standard errors of the mean
        assert abs(k.mean() - exact) < tol, (
            f"the mean of {estimator} over {len(k)} samples from p is {k.mean():.5f}, but KL(p || q) = {exact:.5f}: "
            f"the estimator is biased (wrong direction of the ratio, or a wrong sign)")


# ---------------------------------------------------------------- 3. Bradley-Terry and DPO symmetry


@given(arrays(np.float32, (B,), elements=floats(-10, 10)), arrays(np.float32, (B,), elements=floats(-10, 10)),
       floats(0.0, 0.1))
def test_swapping_chosen_and_rejected_flips_the_bradley_terry_margin(r_chosen, r_rejected, centering):
    margin = np.float64(r_chosen) - r_rejected
    forward = float(bradley_terry(r_chosen, r_rejected, centering))
    backward = float(bradley_terry(r_rejected, r_chosen, centering))
    assert np.isclose(forward - backward, -margin.mean(), rtol=1e-4, atol=1e-4), (
        f"loss(chosen, rejected) - loss(rejected, chosen) = {forward - backward:.4f}, want -mean(margin) = "
        f"{-margin.mean():.4f}: -log s(h) + log s(-h) = -h, so swapping the pair must flip the sign of h")
    want = np.mean(np.logaddexp(0.0, -margin)) + centering * np.mean((np.float64(r_chosen) + r_rejected) ** 2)
    assert np.isclose(forward, want, rtol=1e-4, atol=1e-4), \
        f"Bradley-Terry loss = {forward:.4f}, want mean(-log sigmoid(r_w - r_l)) + c mean((r_w + r_l)^2) = {want:.4f}"


@given(arrays(np.float32, (B,), elements=floats(-10, 10)), floats(0.1, 2.0), floats(0.0, 0.45))
def test_preference_losses_of_h_and_minus_h(h, beta, eps):
    h64 = np.float64(h)
    cases = [("dpo", 0.0, -beta * h64, "-beta h"), ("cdpo", eps, -(1 - 2 * eps) * beta * h64, "-(1 - 2 eps) beta h"),
             ("ipo", 0.0, -2 * h64 / beta, "-2 h / beta")]
    for loss_type, smoothing, want, formula in cases:
        diff = np.asarray(preference_loss(h, beta, loss_type, smoothing)) - np.asarray(
            preference_loss(-h, beta, loss_type, smoothing))
        np.testing.assert_allclose(diff, want, rtol=1e-4, atol=1e-4, err_msg=(
            f"{loss_type}: loss(h) - loss(-h) should be {formula} (from -log s(x) + log s(-x) = -x); "
            f"check where beta and the sign of h enter"))


@given(arrays(np.float32, (B,), elements=floats(-10, 10)), arrays(np.float32, (B,), elements=floats(-10, 10)),
       floats(0.1, 3.0), floats(0.0, 0.1), floats(0.1, 2.0))
def test_losses_fall_as_the_margin_grows(r_chosen, r_rejected, d, centering, beta):
    """Widening every margin by d (r_w up, r_l down, r_w + r_l fixed) must lower the loss."""
    wider = float(bradley_terry(r_chosen + d / 2, r_rejected - d / 2, centering))
    assert wider < float(bradley_terry(r_chosen, r_rejected, centering)), \
        "the Bradley-Terry loss rose when the chosen response's reward margin grew: the sign of the margin is flipped"
    h = r_chosen - r_rejected  # (cDPO and IPO have a finite best margin, so only DPO is monotone)
    assert np.all(np.asarray(preference_loss(h + d, beta, "dpo")) < np.asarray(preference_loss(h, beta, "dpo"))), \
        "the DPO loss should fall as the margin h grows: check the sign of h inside the sigmoid"


# ---------------------------------------------------------------- 4. GAE


@given(per_token(), per_token(), floats(-3, 3), floats(-3, 3), response_masks(), floats(0.5, 1.0), floats(0.0, 1.0))
def test_gae_is_linear_in_the_rewards(r1, r2, a, b, mask, gamma, lam):
    zero = np.zeros((B, T), np.float32)
    mixed, _ = gae(a * r1 + b * r2, zero, mask, gamma, lam)
    adv1, _ = gae(r1, zero, mask, gamma, lam)
    adv2, _ = gae(r2, zero, mask, gamma, lam)
    np.testing.assert_allclose(mixed, a * np.asarray(adv1) + b * np.asarray(adv2), rtol=1e-4, atol=1e-3, err_msg=(
        "with V = 0, GAE is a discounted sum of rewards, so gae(a r1 + b r2) must be a gae(r1) + b gae(r2)"))


@given(per_token(), per_token(), response_masks(), floats(0.5, 1.0), floats(0.0, 1.0))
def test_gae_advantages_satisfy_the_backward_recursion(rewards, values, mask, gamma, lam):
    """A_t = delta_t + gamma lam A_{t+1}, delta_t = r_t + gamma V_{t+1} - V_t, with V = A = 0 after the last token."""
    adv = np.asarray(gae(rewards, values, mask, gamma, lam)[0], np.float64)
    r, v = np.float64(rewards), np.float64(values)
    next_real = np.pad(mask[:, 1:], ((0, 0), (0, 1)))  # is t + 1 a real token of the same response?
    next_v = np.where(next_real, np.pad(v[:, 1:], ((0, 0), (0, 1))), 0.0)
    next_adv = np.where(next_real, np.pad(adv[:, 1:], ((0, 0), (0, 1))), 0.0)
    want = r + gamma * next_v - v + gamma * lam * next_adv
    np.testing.assert_allclose(adv[mask], want[mask], rtol=1e-4, atol=1e-3, err_msg=(
        f"GAE should satisfy A_t = r_t + gamma V_(t+1) - V_t + gamma lam A_(t+1) (gamma={gamma:.3f}, lam={lam:.3f}): "
        f"is lam in the recursion, and are V and A after the last real token taken as 0?"))


@given(per_token(), per_token(), junk, response_masks())
def test_gae_with_gamma_and_lam_one_returns_the_sum_of_future_rewards(rewards, values, other_r, mask):
    """gamma = lam = 1: the values telescope away, R_t = sum of the episode's rewards from t to its end."""
    rewards = refill(rewards, mask, other_r)  # padding rewards that must not count
    adv, ret = (np.asarray(a) for a in gae(rewards, values, mask, 1.0, 1.0))
    future = np.where(mask, rewards, 0.0)[:, ::-1].cumsum(axis=1)[:, ::-1]
    np.testing.assert_allclose(ret, np.where(mask, future, 0.0), rtol=1e-4, atol=1e-3, err_msg=(
        "with gamma = lam = 1 the return at t should be the sum of the real rewards from t to the last real token, "
        "whatever the values: is V after the last token taken as 0, and are padding rewards left out?"))
    np.testing.assert_allclose(np.where(mask, adv + values, 0.0), ret, rtol=1e-4, atol=1e-3,
                               err_msg="advantages + values should be the returns on real tokens")


# ---------------------------------------------------------------- 5. whitening


@given(per_token(), response_masks(), floats(0.1, 10.0), floats(-100, 100))
def test_whitening_ignores_scale_and_shift(x, mask, a, c):
    assume(np.std(x[mask]) > 0.5)  # with no spread, whitening only magnifies rounding
    want, got = np.asarray(masked_whiten(x, mask)), np.asarray(masked_whiten(a * x + c, mask))
    np.testing.assert_allclose(got, want, atol=1e-3, err_msg=(
        "whiten(a x + c) should equal whiten(x) for a > 0: subtract the mean and divide by the std of the real tokens"))


@given(per_token(), response_masks())
def test_whitened_real_tokens_have_mean_0_and_variance_1(x, mask):
    assume(np.std(x[mask]) > 0.5)
    white = np.asarray(masked_whiten(x, mask), np.float64)[mask]
    assert abs(white.mean()) < 1e-4 and abs(white.var() - 1) < 1e-3, (
        f"whitened real tokens have mean {white.mean():.4f} and variance {white.var():.4f}, want 0 and 1: "
        f"are the statistics taken over the real tokens only (and the population variance)?")
    kept = np.asarray(masked_whiten(x, mask, shift_mean=False), np.float64)[mask]
    assert np.isclose(kept.mean(), np.mean(x[mask]), atol=1e-4) and abs(kept.var() - 1) < 1e-3, (
        "shift_mean=False should keep the real tokens' mean and only scale the spread to variance 1")


# ---------------------------------------------------------------- 6. token_logprobs


@given(arrays(np.float32, (1, T, V), elements=floats(-10, 10)))
def test_token_logprobs_form_a_distribution_at_every_position(logits):
    """Row v of the batch holds token v everywhere, so column t lists log p(v | context) for every v."""
    every_token = np.repeat(np.arange(V, dtype=np.int32)[:, None], T, axis=1)  # [V, T]
    logps = np.asarray(token_logprobs(np.repeat(logits, V, axis=0), every_token), np.float64)  # [V, T]
    assert np.all(logps[:, 0] == 0), "position 0 has no context and should get log-prob 0"
    np.testing.assert_allclose(np.logaddexp.reduce(logps[:, 1:], axis=0), 0.0, atol=1e-4, err_msg=(
        "the probabilities of all tokens at a position should sum to 1: use log_softmax over the vocabulary"))
    assert np.all(np.exp(logps) <= 1 + 1e-6), "a token's probability exceeded 1"


@given(arrays(np.float32, (B, T, V), elements=floats(-10, 10)), token_ids,
       arrays(np.float32, (B, T, 1), elements=floats(-50, 50)))
def test_token_logprobs_ignore_a_constant_added_at_a_position(logits, tokens, shift):
    np.testing.assert_allclose(token_logprobs(logits + shift, tokens), token_logprobs(logits, tokens), atol=1e-4,
                               err_msg="softmax is invariant to adding a constant to all logits at a position")


@given(arrays(np.float32, (B, T, V), elements=floats(-3, 3)), token_ids, st.integers(0, T - 1))
def test_the_logits_at_t_score_only_the_token_at_t_plus_1(logits, tokens, t):
    """Raise, at position t, the logit of the token that comes next: only log p(tokens[t + 1]) may change (up)."""
    before = np.asarray(token_logprobs(logits, tokens))
    bumped = logits.copy()
    if t + 1 < T:
        bumped[np.arange(B), t, tokens[:, t + 1]] += 1.0
    else:
        bumped[:, t] += np.arange(V, dtype=np.float32)  # the last logits predict nothing in the sequence
    after = np.asarray(token_logprobs(bumped, tokens))
    others = np.arange(T) != t + 1
    np.testing.assert_array_equal(after[:, others], before[:, others], err_msg=(
        f"changing the logits at position {t} changed the log-probs of tokens other than the one at {t + 1}: "
        f"the logits at t predict the token at t + 1 (shift by one)"))
    if t + 1 < T:
        assert np.all(after[:, t + 1] > before[:, t + 1]), \
            f"raising the logit of tokens[{t + 1}] at position {t} should raise log p(tokens[{t + 1}])"


@given(arrays(np.float32, (B, T, V), elements=floats(-10, 10)), token_ids, floats(0.3, 3.0))
def test_token_logprobs_match_numpys_log_softmax(logits, tokens, temperature):
    logp = np_log_softmax(logits / np.float64(temperature))
    want = np.zeros((B, T))
    for b in range(B):
        for t in range(1, T):
            want[b, t] = logp[b, t - 1, tokens[b, t]]
    np.testing.assert_allclose(token_logprobs(logits, tokens, temperature), want, rtol=1e-4, atol=1e-4, err_msg=(
        "token_logprobs[b, t] should be log_softmax(logits[b, t - 1] / temperature)[tokens[b, t]]"))


# ---------------------------------------------------------------- group baselines (GRPO, RLOO)


# Rewards and shifts on a grid of quarters: adding them is exact in float32, so any change in the advantages comes
# from the baseline, not from rounding (2 + 1e-5 in float32 is off by about 1%, which normalising by a tiny std blows up).
quarters = st.integers(-20, 20).map(lambda q: q / 4)


@given(arrays(np.float32, (2, 4), elements=quarters), arrays(np.float32, (2, 1), elements=quarters.map(lambda q: 4 * q)))
def test_group_baselines_ignore_a_constant_added_to_a_group(rewards, shift):
    for name, fn in [("GRPO", group_advantages), ("RLOO", leave_one_out_advantages)]:
        np.testing.assert_allclose(fn(rewards + shift), fn(rewards), atol=1e-3, err_msg=(
            f"{name} advantages changed when a constant was added to one group's rewards: the baseline must come "
            f"from that group alone"))
    others = (rewards.sum(axis=1, keepdims=True) - rewards) / (rewards.shape[1] - 1)
    np.testing.assert_allclose(leave_one_out_advantages(rewards), rewards - others, atol=1e-4,
                               err_msg="RLOO: A_i = R_i - (mean of the other k - 1 rewards)")


# ---------------------------------------------------------------- sampling


@given(arrays(np.float32, (B, V), elements=floats(-5, 5)), arrays(np.float32, (B, V), elements=floats(-3, 10)))
def test_sampled_token_is_in_the_top_k_and_its_log_prob_is_the_full_distributions(logits, gumbel):
    for top_k in (None, 3):
        cfg = sampling.SampleConfig(temperature=0.7, top_k=top_k)
        token, logprob = (np.asarray(a) for a in sample_token(logits, gumbel, cfg))
        scaled = logits / np.float32(0.7)
        allowed = np.ones((B, V), bool) if top_k is None else scaled >= np.sort(scaled, axis=1)[:, -top_k:-top_k + 1]
        want = np.argmax(np.where(allowed, scaled + gumbel, -np.inf), axis=1)
        np.testing.assert_array_equal(token, want, err_msg=(
            f"top_k={top_k}: the token should be argmax(logits / T + gumbel) among the {top_k or V} best logits"))
        np.testing.assert_allclose(logprob, np_log_softmax(scaled)[np.arange(B), token], atol=1e-4, err_msg=(
            "the reported log-prob should come from the full temperature-scaled distribution, not the top-k one"))


# ---------------------------------------------------------------- the [B, P + R] layout


@given(st.lists(st.lists(st.sampled_from(WORDS), max_size=RESPONSE_WIDTH - 1), min_size=1, max_size=3),
       st.integers(0, 9), st.integers(0, 9))
def test_encode_pairs_round_trips_and_masks_exactly_the_response(responses, a, b):
    batch = encode_pairs([math_prompt(a, "plus", b)] * len(responses), responses)
    assert [r for r in decode_responses(batch["tokens"])] == [(r, True) for r in responses], \
        "decoding an encoded batch should give back every response's words, each ended by EOS"
    index = np.arange(batch["tokens"].shape[1])
    for row, words in zip(range(len(responses)), responses):
        want = (index >= PROMPT_WIDTH) & (index <= PROMPT_WIDTH + len(words))  # the words and their EOS
        np.testing.assert_array_equal(batch["loss_mask"][row], want, err_msg=(
            "loss_mask should be True on the response's words and its EOS, and nowhere else"))
        assert batch["tokens"][row, PROMPT_WIDTH + len(words)] == EOS_ID, "the EOS should follow the last word"
    np.testing.assert_array_equal(response_mask(batch["valid"]), batch["valid"] & (index >= PROMPT_WIDTH))


@given(arrays(np.bool_, (B, T)))
def test_last_index_is_the_last_true_in_each_row(valid):
    valid[:, 0] = True  # every row has at least one real token
    want = [max(np.flatnonzero(row)) for row in valid]
    np.testing.assert_array_equal(reward_model.last_index(valid), want,
                                  err_msg="last_index should point at each row's last real token")


# ---------------------------------------------------------------- sequence level: DPO and the reward model

R = 4  # response width of the model tests: prompts take PROMPT_WIDTH, as dpo.sequence_logprobs expects
CFG = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=PROMPT_WIDTH + R, d_model=16, n_layers=1, n_heads=2,
                              d_mlp=32)
DPO_CFG = dpo.DPOConfig(beta=0.5)
N = 2  # pairs per batch: rows :N are the chosen responses, N: the rejected ones


@partial(jax.jit, static_argnames=("cfg", "dpo_cfg"))
def model_outputs(policy, rm, tokens, valid, ref_logps, cfg, dpo_cfg):
    """Everything the sequence-level tests read, from one compiled program (one compile instead of four):
    the DPO (loss, metrics) and the RM loss of the pairs, log pi(y) and r(x, y) of every row, the policy's logits."""
    batch = {"chosen_tokens": tokens[:N], "chosen_valid": valid[:N], "rejected_tokens": tokens[N:],
             "rejected_valid": valid[N:], "ref_chosen_logps": ref_logps[:N], "ref_rejected_logps": ref_logps[N:]}
    return (dpo.loss(policy, batch, cfg, dpo_cfg.loss_type, dpo_cfg.beta, dpo_cfg.label_smoothing), reward_model.loss(rm, batch, cfg, centering=0.01)[0],
            dpo.sequence_logprobs(policy, tokens, valid, cfg), reward_model.reward(rm, tokens, valid, cfg),
            transformer.forward(policy, tokens, valid, cfg)[0])


@lru_cache
def models():
    """A random policy and reward model with the library's parameter structure, drawn with NumPy (no init compiles).

    The scale 0.3 (not GPT-2's 0.02) makes the log-probs of different tokens clearly differ."""
    init = lambda key: reward_model.init_reward_model(key, transformer.init_params(key, CFG), CFG)
    rng = np.random.default_rng(0)
    rm = jax.tree_util.tree_map(lambda leaf: (0.3 * rng.standard_normal(leaf.shape)).astype(np.float32),
                                jax.eval_shape(init, jax.random.PRNGKey(0)))
    return rm["lm"], rm


@st.composite
def sequences(draw, rows=2 * N):
    """Left-padded prompts of 1..PROMPT_WIDTH tokens, responses of 1..R tokens; tokens in padding are junk.

    Returns (tokens, valid, the same tokens with other junk in the padding)."""
    width = PROMPT_WIDTH + R
    ids = arrays(np.int32, (rows, width), elements=st.integers(0, VOCAB_SIZE - 1))
    tokens, other = draw(ids), draw(ids)
    prompt_len = np.array(draw(st.lists(st.integers(1, PROMPT_WIDTH), min_size=rows, max_size=rows)))
    response_len = np.array(draw(st.lists(st.integers(1, R), min_size=rows, max_size=rows)))
    index = np.arange(width)[None, :]
    valid = (index >= PROMPT_WIDTH - prompt_len[:, None]) & (index < PROMPT_WIDTH + response_len[:, None])
    return tokens, valid, np.where(valid, tokens, other)


def run_models(tokens, valid, ref_logps=np.zeros(2 * N, np.float32)):
    policy, rm = models()
    (loss, metrics), rm_loss, logps, rewards, logits = model_outputs(policy, rm, tokens, valid, ref_logps, CFG, DPO_CFG)
    metrics = {**{k: float(v) for k, v in metrics.items()}, "rm_loss": float(rm_loss)}
    return float(loss), metrics, np.asarray(logps), np.asarray(rewards), logits


def numpy_sequence_logprobs(logits, tokens, valid):
    """sum over response tokens t of log_softmax(logits[t - 1])[tokens[t]]."""
    logp = np_log_softmax(logits)
    return np.array([sum(logp[b, t - 1, tokens[b, t]] for t in range(PROMPT_WIDTH, tokens.shape[1]) if valid[b, t])
                     for b in range(tokens.shape[0])])


@given(sequences(), arrays(np.float32, (2 * N,), elements=floats(-20, 0)))
def test_tokens_in_padding_change_no_dpo_loss_and_no_reward(seqs, ref_logps):
    tokens, valid, repadded = seqs
    loss, metrics, _, rewards, _ = run_models(tokens, valid, ref_logps)
    loss2, metrics2, _, rewards2, _ = run_models(repadded, valid, ref_logps)
    assert np.isclose(loss, loss2, rtol=1e-5, atol=1e-5), \
        "the DPO loss changed when only tokens after EOS (or before the prompt) changed: padding is not masked out"
    for k in metrics:
        assert np.isclose(metrics[k], metrics2[k], rtol=1e-5, atol=1e-5), \
            f"{k} ({'the RM loss' if k == 'rm_loss' else 'a DPO metric'}) changed when only the padding changed"
    np.testing.assert_allclose(rewards2, rewards, rtol=1e-5, atol=1e-5, err_msg=(
        "the reward changed when only padding tokens changed: read it at the last real token, which attends to "
        "no padding"))


@given(sequences())
def test_sequence_logprob_is_the_sum_over_response_tokens_and_falls_as_the_response_grows(seqs):
    tokens, valid, _ = seqs
    _, _, logps, _, logits = run_models(tokens, valid)
    np.testing.assert_allclose(logps, numpy_sequence_logprobs(logits, tokens, valid), rtol=1e-4, atol=1e-4, err_msg=(
        "log pi(y) should be the SUM (not the mean) over response tokens of log_softmax(logits[t - 1])[tokens[t]]"))
    next_slot = PROMPT_WIDTH + valid[:, PROMPT_WIDTH:].sum(axis=1, keepdims=True)  # [rows, 1]: just after the response
    _, _, grown, _, _ = run_models(tokens, valid | (np.arange(tokens.shape[1]) == next_slot))
    room = ~valid[:, -1]  # rows whose response can take one more token
    assert np.all(grown[room] < logps[room]), (
        "one more response token should lower log pi(y): a sum of log-probs (each < 0) only falls, a mean need not")


@given(sequences(), arrays(np.float32, (2 * N,), elements=floats(-20, 0)))
def test_swapping_chosen_and_rejected_negates_the_dpo_margin(seqs, ref_logps):
    tokens, valid, _ = seqs
    swap = np.r_[N:2 * N, 0:N]
    loss, metrics, _, _, logits = run_models(tokens, valid, ref_logps)
    loss_swapped, metrics_swapped, _, _, _ = run_models(tokens[swap], valid[swap], ref_logps[swap])
    ratio = numpy_sequence_logprobs(logits, tokens, valid) - ref_logps
    margin = DPO_CFG.beta * np.mean(ratio[:N] - ratio[N:])  # beta h, averaged over pairs
    assert np.isclose(metrics["rewards/margins"], margin, rtol=1e-4, atol=1e-4), (
        f"rewards/margins = {metrics['rewards/margins']:.4f}, want beta * mean(h) = {margin:.4f} with "
        f"h from summed response log-probs minus the reference's")
    assert np.isclose(metrics_swapped["rewards/margins"], -margin, rtol=1e-4, atol=1e-4), \
        "swapping chosen and rejected should flip the sign of the margin h"
    assert np.isclose(loss - loss_swapped, -margin, rtol=1e-4, atol=1e-4), (
        "DPO: loss(h) - loss(-h) should be -beta h (averaged over pairs), since -log s(x) + log s(-x) = -x")
