"""Every loss and estimator against numbers worked by hand (or by a plain loop written here from the paper).

The other test files check properties (a gradient vanishes, padding changes nothing, a loop agrees with a
scan). Those pass for some wrong code: always using the clipped value error, a controller that only looks at
the sign of the KL error, an IPO loss twice too big. Here each function gets small inputs whose answer is
written out in a comment, so a learner can redo the arithmetic, and the test fails for any of those slips.
Nothing below calls the library to compute an expected value.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import gold, grpo_rloo, policy_gradient, ppo_losses, preferences, reward_model, transformer, world
from minirlhf.data import decode_responses, encode_pairs
from minirlhf.dpo import preference_loss
from minirlhf.ops import masked_whiten
from minirlhf.sampling import Generation

J = 123.0  # junk placed where the mask is False: it must never reach a result


# Each library function is compiled once here; compiling beats running op by op (each op compiles for its shape).
kl_shaped_rewards = jax.jit(ppo_losses.kl_shaped_rewards, static_argnames="estimator")
gae = jax.jit(ppo_losses.gae)
value_loss = jax.jit(ppo_losses.value_loss)
whiten = jax.jit(masked_whiten, static_argnames="shift_mean")
bradley_terry_and_grad = jax.jit(jax.value_and_grad(reward_model.bradley_terry))
grpo_loss = jax.jit(grpo_rloo.grpo_loss)
rloo_loss = jax.jit(grpo_rloo.rloo_loss)
group_advantages = jax.jit(grpo_rloo.group_advantages)
leave_one_out_advantages = jax.jit(grpo_rloo.leave_one_out_advantages)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def close(got, want, what, atol=1e-5):
    got = np.asarray(got, np.float64)
    assert np.allclose(got, want, rtol=1e-5, atol=atol), f"{what}: got {np.round(got, 6)}, want {np.round(want, 6)}"


# ================================================================ PPO (ppo_losses.py)


def test_kl_estimators_by_hand():
    l = jnp.array([0.5, -1.0, 2.0, 0.0])  # the log-ratio log pi - log pi_ref of four samples
    want = {
        "k1": [0.5, -1.0, 2.0, 0.0],  # l itself
        "k2": [0.125, 0.5, 2.0, 0.0],  # l^2 / 2
        # (e^-l - 1) + l:  e^-0.5 - 0.5 = 0.1065307,  e^1 - 2 = 0.7182818,  e^-2 + 1 = 1.1353353,  0
        "k3": [0.1065307, 0.7182818, 1.1353353, 0.0],
    }
    for name, values in want.items():
        close(ppo_losses.kl_estimate(l, name), values, f"{name} at log-ratios {l.tolist()} "
              f"(k1 = l, k2 = l^2 / 2, k3 = (e^-l - 1) + l)", atol=1e-6)


def test_kl_shaped_rewards_by_hand():
    """Two rows, T = 5, prompt at column 0. Row 0 ends with EOS at column 3 (column 4 is padding); row 1 is
    cut off at the last column. beta = 0.1, k1, so each real token pays -0.1 * (log pi - log pi_ref)."""
    mask = jnp.array([[False, True, True, True, False],
                      [False, False, True, True, True]])
    log_ratio = jnp.array([[J, 0.5, -0.2, 0.1, J],
                           [J, J, 0.3, 0.0, -0.4]])
    scores = jnp.array([2.0, -1.0])
    want = np.array([
        [0.0, -0.05, 0.02, -0.01 + 2.0, 0.0],   # the score 2.0 lands on the EOS at column 3
        [0.0, 0.0, -0.03, 0.0, 0.04 - 1.0],     # the score -1.0 lands on the last column, the cut
    ])
    got = kl_shaped_rewards(scores, log_ratio, jnp.zeros_like(log_ratio), mask, 0.1, estimator="k1")
    close(got, want, "r_t = -beta kl_t on real tokens, + score at the last real token, 0 on prompt and padding")
    # With k3 the price per token is 0.1 * ((e^-l - 1) + l): at l = 0.5 that is 0.1 * 0.1065307.
    got3 = kl_shaped_rewards(scores, log_ratio, jnp.zeros_like(log_ratio), mask, 0.1, estimator="k3")
    assert float(got3[0, 1]) == pytest.approx(-0.01065307, abs=1e-6), "the `estimator` argument must choose the KL"


# GAE, Schulman et al. 2016, eq. 16, as an explicit sum rather than a recurrence:
#   A_t = sum_{l >= 0} (gamma lam)^l delta_{t+l},  delta_t = r_t + gamma V_{t+1} - V_t,  V after the episode = 0.
def gae_by_sum(rewards, values, mask, gamma, lam):
    adv = np.zeros(rewards.shape)
    for b in range(rewards.shape[0]):
        steps = [t for t in range(rewards.shape[1]) if mask[b, t]]  # one episode: the real response tokens
        deltas = []
        for i, t in enumerate(steps):
            next_value = values[b, steps[i + 1]] if i + 1 < len(steps) else 0.0
            deltas.append(rewards[b, t] + gamma * next_value - values[b, t])
        for i, t in enumerate(steps):
            adv[b, t] = sum((gamma * lam) ** l * d for l, d in enumerate(deltas[i:]))
    return adv, np.where(mask, adv + values, 0.0)


def test_gae_by_hand():
    """gamma = 0.9, lam = 0.5 (so gamma lam = 0.45). Row 0: three real tokens then padding; row 1 is cut off.

    Row 0, V = (0.5, 0.4, 0.2), r = (0, 0, 1), backwards:
      t=3: delta = 1 - 0.2 = 0.8                    A = 0.8                        R = 0.8 + 0.2 = 1.0
      t=2: delta = 0 + 0.9*0.2 - 0.4 = -0.22        A = -0.22 + 0.45*0.8 = 0.14    R = 0.54
      t=1: delta = 0 + 0.9*0.4 - 0.5 = -0.14        A = -0.14 + 0.45*0.14 = -0.077 R = 0.423
    Row 1, V = (0.3, 0.1, 0.6), r = (-0.1, 0, 0.5):
      t=4: delta = 0.5 - 0.6 = -0.1                 A = -0.1                       R = 0.5
      t=3: delta = 0.9*0.6 - 0.1 = 0.44             A = 0.44 - 0.45*0.1 = 0.395    R = 0.495
      t=2: delta = -0.1 + 0.9*0.1 - 0.3 = -0.31     A = -0.31 + 0.45*0.395 = -0.13225   R = 0.16775
    """
    mask = np.array([[False, True, True, True, False], [False, False, True, True, True]])
    rewards = np.array([[J, 0.0, 0.0, 1.0, J], [J, J, -0.1, 0.0, 0.5]], np.float32)
    values = np.array([[J, 0.5, 0.4, 0.2, 5.0], [J, J, 0.3, 0.1, 0.6]], np.float32)  # V = 5 on padding: no bootstrap
    want_adv = np.array([[0, -0.077, 0.14, 0.8, 0], [0, 0, -0.13225, 0.395, -0.1]])
    want_ret = np.array([[0, 0.423, 0.54, 1.0, 0], [0, 0, 0.16775, 0.495, 0.5]])
    adv, ret = gae(rewards, values, mask, 0.9, 0.5)
    close(adv, want_adv, "GAE advantages (gamma 0.9, lam 0.5): is lam used, and V after the last real token 0?")
    close(ret, want_ret, "returns R_t = A_t + V_t on real tokens, 0 elsewhere")
    # The hand numbers also pin the sum-form reference used on random inputs below.
    np.testing.assert_allclose(gae_by_sum(rewards, values, mask, 0.9, 0.5)[0], want_adv, atol=1e-6)


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.8, 0.3)])
def test_gae_matches_the_papers_sum(gamma, lam):
    rng = np.random.default_rng(7)
    rewards, values = rng.normal(size=(2, 5, 9)).astype(np.float32)
    lengths = [1, 3, 6, 6, 2]  # real tokens after a 3-token prompt; row 2 and 3 reach the last column
    mask = np.zeros((5, 9), bool)
    for b, n in enumerate(lengths):
        mask[b, 3:3 + n] = True
    adv, ret = gae(rewards, values, mask, gamma, lam)
    want_adv, want_ret = gae_by_sum(rewards, values, mask, gamma, lam)
    close(adv, want_adv, f"GAE disagrees with sum_l (gamma lam)^l delta_(t+l) at gamma={gamma}, lam={lam}", atol=1e-4)
    close(ret, want_ret, "returns should be advantages + values", atol=1e-4)


# Clipped surrogate, eps = 0.2, per token: max(-A rho, -A clip(rho, 0.8, 1.2)).
POLICY_CASES = [  # (A, rho, loss, d loss / d log pi, which regime)
    (1.0, 1.1, -1.1, -1.1, "A > 0, inside: -1.1 vs -1.1"),
    (1.0, 1.5, -1.2, 0.0, "A > 0, above: -1.5 vs -1.2, the clip binds (no gradient)"),
    (1.0, 0.5, -0.5, -0.5, "A > 0, below: -0.5 vs -0.8, unclipped is the larger"),
    (-2.0, 0.9, 1.8, 1.8, "A < 0, inside: 1.8 vs 1.8"),
    (-2.0, 1.5, 3.0, 3.0, "A < 0, above: 3.0 vs 2.4, unclipped is the larger"),
    (-2.0, 0.5, 1.6, 0.0, "A < 0, below: 1.0 vs 1.6, the clip binds (no gradient)"),
]


POLICY_A = np.array([[c[0] for c in POLICY_CASES] + [J]], np.float32)  # the six regimes in one row, then padding
POLICY_LOGPROBS = np.log(np.array([[c[1] for c in POLICY_CASES] + [7.0]], np.float32))  # log pi_old = 0: log pi = log rho
policy_loss_and_grad = jax.jit(jax.value_and_grad(
    lambda lp, mask: ppo_losses.policy_loss(lp, jnp.zeros_like(lp), POLICY_A, mask, 0.2), has_aux=True))


@pytest.mark.parametrize("i", range(len(POLICY_CASES)), ids=[c[4].split(":")[0] for c in POLICY_CASES])
def test_policy_loss_in_each_regime(i):
    _, _, want, want_grad, regime = POLICY_CASES[i]
    mask = jnp.arange(7)[None, :] == i  # only token i is real: the loss is its term, the gradient its own
    (loss, _), grad = policy_loss_and_grad(POLICY_LOGPROBS, mask)
    assert float(loss) == pytest.approx(want, abs=1e-5), (
        f"{regime}: loss {float(loss):.4f}, want {want}. The loss is the max (the pessimistic one) of -A rho "
        f"and -A clip(rho, 1 - eps, 1 + eps), not the min")
    assert float(grad[0, i]) == pytest.approx(want_grad, abs=1e-5), (
        f"{regime}: d loss / d log pi should be {want_grad} (-A rho where the unclipped term wins, 0 where the clip binds)")


def test_policy_loss_batch_and_metrics():
    """The six regimes above in one row, plus a padded token of junk.

    loss = mean(-1.1, -1.2, -0.5, 1.8, 3.0, 1.6) = 3.6 / 6 = 0.6
    clipfrac: the clipped term is strictly larger at rho = 1.5, A > 0 and rho = 0.5, A < 0: 2 / 6
    approxkl = 1/2 mean(log(rho)^2) = 1/2 (0.0953^2 + 0.4055^2 + 0.6931^2 + 0.1054^2 + 0.4055^2 + 0.6931^2) / 6
             = 1/2 * 1.3098948 / 6 = 0.1091579
    val/ratio = mean(1.1, 1.5, 0.5, 0.9, 1.5, 0.5) = 1.0
    """
    (loss, metrics), _ = policy_loss_and_grad(POLICY_LOGPROBS, jnp.arange(7)[None, :] < 6)
    assert float(loss) == pytest.approx(0.6, abs=1e-5), f"policy loss {float(loss):.5f}, want 3.6 / 6 = 0.6"
    assert float(metrics["policy/clipfrac"]) == pytest.approx(2 / 6), "clipfrac: share of real tokens the clip cut"
    assert float(metrics["policy/approxkl"]) == pytest.approx(0.1091579, abs=1e-6), "approxkl = 1/2 mean(log ratio^2)"
    assert float(metrics["val/ratio"]) == pytest.approx(1.0, abs=1e-6), "val/ratio is the mean ratio over real tokens"


def test_value_loss_with_both_branches_of_the_max():
    """eps_v = 0.2; per token (clip(V, V_old +- 0.2) - R)^2 against (V - R)^2, the larger wins.

      V_old  V     R     clipped V   (V - R)^2   (clipped - R)^2   max
      0      0.5   1.0   0.2         0.25        0.64              0.64   clipped branch
      0      0.5   0.0   0.2         0.25        0.04              0.25   unclipped branch
      1.0    1.1   0.6   1.1         0.25        0.25              0.25   inside the clip
      0     -0.6   0.3  -0.2         0.81        0.25              0.81   unclipped branch
    loss = 1/2 * (0.64 + 0.25 + 0.25 + 0.81) / 4 = 1/2 * 0.4875 = 0.24375;  val/clipfrac = 1/4
    (Always clipped would give 0.1475, always unclipped 0.195, the min 0.09875.)
    """
    old = jnp.array([[0.0, 0.0, 1.0, 0.0, J]])
    values = jnp.array([[0.5, 0.5, 1.1, -0.6, -J]])
    returns = jnp.array([[1.0, 0.0, 0.6, 0.3, J]])
    mask = jnp.array([[True, True, True, True, False]])
    loss, metrics = value_loss(values, old, returns, mask, 0.2)
    assert float(loss) == pytest.approx(0.24375, abs=1e-6), (
        f"value loss {float(loss):.5f}, want 0.24375: per token it is the max of the clipped and the unclipped "
        f"squared error (0.1475 means always clipped, 0.195 always unclipped), halved, averaged over real tokens")
    assert float(metrics["val/clipfrac"]) == pytest.approx(0.25), "val/clipfrac: tokens where the clipped error is larger"


def test_masked_whitening_by_hand():
    """x = (1, 2, 3, 6) on real tokens: mean 3, var (4 + 1 + 0 + 9) / 4 = 3.5, std 1.8708287,
    so (x - 3) / 1.8708287 = (-1.0690450, -0.5345225, 0, 1.6035675); padding stays 0."""
    x = jnp.array([[1.0, 2.0, J], [3.0, 6.0, -J]])
    mask = jnp.array([[True, True, False], [True, True, False]])
    want = np.array([[-1.0690450, -0.5345225, 0.0], [0.0, 1.6035675, 0.0]])
    close(whiten(x, mask), want, "whitening uses the mean and the population variance of the real tokens only")
    close(whiten(x, mask, shift_mean=False), np.where(np.asarray(mask), want + 3.0, 0.0),
          "shift_mean=False adds the mean 3 back after scaling")


@pytest.mark.parametrize("kl, want", [
    (6.6, 0.1 * (1 + 0.10 * 64 / 1000)),    # e = 6.6 / 6 - 1 = 0.1:  beta = 0.1 * 1.0064 = 0.10064
    (6.3, 0.1 * (1 + 0.05 * 64 / 1000)),    # e = 0.05:               beta = 0.1 * 1.0032 = 0.10032
    (5.7, 0.1 * (1 - 0.05 * 64 / 1000)),    # e = -0.05:              beta = 0.1 * 0.9968 = 0.09968
    (6.0, 0.1),                             # on target: e = 0, beta stays
])
def test_adaptive_kl_controller_is_proportional(kl, want):
    cfg = ppo_losses.AdaptiveKLConfig(target=6.0, horizon=1000)
    beta = ppo_losses.adaptive_kl_controller(ppo_losses.KLState(0.1), kl, 64, cfg).beta
    assert beta == pytest.approx(want, rel=1e-9), (
        f"KL {kl} against target 6 with 64 episodes, horizon 1000: beta {beta:.6f}, want {want:.6f}. "
        f"beta <- beta (1 + e n / horizon) with e = KL / target - 1 itself (clipped only beyond +-0.2), not its sign")


# ================================================================ DPO, cDPO, IPO (dpo.py)


# One compiled (loss, d loss / dh) per loss type; beta and eps are traced, so every case below reuses it.
preference_loss_and_grad = jax.jit(jax.vmap(jax.value_and_grad(
    lambda h, beta, eps, loss_type: preference_loss(h, beta, loss_type, eps)), in_axes=(0, None, None, None)),
    static_argnums=3)


def test_dpo_loss_and_gradient_by_hand():
    """beta = 0.5. h = 2: beta h = 1, -log sigma(1) = log(1 + e^-1) = 0.3132617; h = -1: log(1 + e^0.5) = 0.9740770.
    d/dh = -beta sigma(-beta h): at h = 2, -0.5 sigma(-1) = -0.5 * 0.2689414 = -0.1344707;
                                 at h = -1, -0.5 sigma(0.5) = -0.5 * 0.6224593 = -0.3112297."""
    loss, grad = preference_loss_and_grad(jnp.array([2.0, -1.0]), 0.5, 0.0, "dpo")
    close(loss, [0.3132617, 0.9740770], "DPO loss -log sigma(beta h) at beta = 0.5")
    close(grad, [-0.1344707, -0.3112297], "d DPO / dh = -beta sigma(-beta h)")


def test_conservative_dpo_by_hand():
    """eps = 0.1, beta = 0.5, h = 2 (beta h = 1): -(0.9) log sigma(1) - 0.1 log sigma(-1)
    = 0.9 * 0.3132617 + 0.1 * 1.3132617 = 0.4132617  (= DPO + eps beta h, since -log sigma(-z) = z - log sigma(z)).
    Its gradient is DPO's plus eps beta: -0.1344707 + 0.05 = -0.0844707."""
    loss, grad = preference_loss_and_grad(jnp.array([2.0, -1.0]), 0.5, 0.1, "cdpo")
    close(loss[0], 0.4132617, "cDPO at h = 2: is eps on the flipped term, -eps log sigma(-beta h)?")
    close(grad[0], -0.0844707, "d cDPO / dh = -(1 - eps) beta sigma(-beta h) + eps beta sigma(beta h)")


@pytest.mark.parametrize("beta, h, want, want_grad", [
    (0.5, 3.0, 4.0, 4.0),     # target 1/(2 * 0.5) = 1: (3 - 1)^2 = 4, gradient 2 (3 - 1) = 4
    (0.5, -1.0, 4.0, -4.0),   # (-1 - 1)^2 = 4, gradient 2 (-2) = -4
    (0.25, 0.5, 2.25, -3.0),  # target 2: (0.5 - 2)^2 = 2.25, gradient 2 (-1.5) = -3
])
def test_ipo_away_from_its_root(beta, h, want, want_grad):
    loss, grad = (float(x[0]) for x in preference_loss_and_grad(jnp.array([h, 0.0]), beta, 0.0, "ipo"))
    assert loss == pytest.approx(want, abs=1e-5), f"IPO at beta={beta}, h={h}: {loss}, want (h - 1/(2 beta))^2 = {want}"
    assert grad == pytest.approx(want_grad, abs=1e-5), f"IPO gradient at h={h}: {grad}, want 2 (h - 1/(2 beta)) = {want_grad}"


# ================================================================ reward model (reward_model.py)


def test_bradley_terry_by_hand():
    """r_w = (2, -1), r_l = (1, 0.5): margins d = (1, -1.5).
    loss = mean(log(1 + e^-1), log(1 + e^1.5)) = (0.3132617 + 1.7014132) / 2 = 1.0073375
    d loss / d r_w = -sigma(-d) / 2 = (-0.2689414 / 2, -0.8175745 / 2) = (-0.1344707, -0.4087872)
    centering c = 0.01 adds 0.01 * mean(3^2, (-0.5)^2) = 0.01 * 4.625 = 0.04625."""
    r_w, r_l = jnp.array([2.0, -1.0]), jnp.array([1.0, 0.5])
    got, grad = bradley_terry_and_grad(r_w, r_l, 0.0)
    assert float(got) == pytest.approx(1.0073375, abs=1e-6), (
        f"Bradley-Terry {float(got):.6f}, want 1.0073375 = mean(-log sigma(r_chosen - r_rejected)); "
        f"0.7573375 means the sign is flipped")
    close(grad, [-0.1344707, -0.4087872], "d BT / d r_chosen = -sigma(-(r_w - r_l)) / B")
    got_c, _ = bradley_terry_and_grad(r_w, r_l, 0.01)
    assert float(got_c) == pytest.approx(1.0073375 + 0.04625, abs=1e-6), "centering term c * mean((r_w + r_l)^2)"


def test_normalize_folds_mean_and_std_into_the_head(monkeypatch):
    """Given SFT scores (1, 2, 3, 6): mean 3, population std sqrt(3.5) = 1.8708287.
    A head (w = 0.5 everywhere, b = 1) becomes w / std = 0.2672612, b = (1 - 3) / std = -1.0690450."""
    monkeypatch.setattr(reward_model, "score", lambda params, tokens, valid, cfg: jnp.array([1.0, 2.0, 3.0, 6.0]))
    params = {"lm": None, "head": {"w": jnp.full((3,), 0.5), "b": jnp.array(1.0)}}
    normalize = jax.jit(reward_model.normalize, static_argnames="cfg")  # traced here, with the stand-in scores
    head = normalize(params, np.zeros((4, 2), int), np.ones((4, 2), bool), cfg=None)["head"]
    close(head["w"], [0.2672612] * 3, "normalize: w / std with the population std of the given scores")
    close(head["b"], -1.0690450, "normalize: b -> (b - mean) / std")


def test_accuracy_tie_rule_and_gold_correlation(monkeypatch):
    """Five pairs with given RM scores (pair 1 an exact RM tie, pair 1 also a gold tie).

      rm diff    (1, 0, -0.2, 0.6, 1)         labels: right, half (tie), wrong, right, right -> 3.5 / 5 = 0.7
      gold diff  (1.2, 0, -1.2, 1.3, -0.5)    gold-distinct pairs 0, 2, 3, 4: signs agree on 0, 2, 3 -> 3 / 4
    corr_gold is Pearson's r over all ten (score, gold) points, written out as a loop below.
    """
    r_c, r_r = np.array([1.0, 0.5, 0.2, 0.9, -1.0]), np.array([0.0, 0.5, 0.4, 0.3, -2.0])
    pairs = {"gold_chosen": np.array([0.8, 0.8, -0.4, 1.0, 0.2]), "gold_rejected": np.array([-0.4, 0.8, 0.8, -0.3, 0.7])}
    monkeypatch.setattr(reward_model, "score_pairs", lambda params, pairs, cfg: (r_c, r_r))
    acc = reward_model.accuracy(None, pairs, None)
    assert acc["accuracy_labels"] == pytest.approx(0.7), "an exact RM tie counts half right against the labels"
    assert acc["accuracy_gold"] == pytest.approx(0.75), "gold ties are left out of accuracy_gold (3 of 4 distinct)"
    x = list(r_c) + list(r_r)
    y = list(pairs["gold_chosen"]) + list(pairs["gold_rejected"])
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    r = cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
    assert acc["corr_gold"] == pytest.approx(r, abs=1e-9), "corr_gold: Pearson r of every score with its own gold"


# ================================================================ GRPO and RLOO (grpo_rloo.py)


def test_group_and_leave_one_out_advantages_by_hand():
    """One group r = (1, 2, 3, 6): mean 3, population std 1.8708287.
    GRPO: (r - 3) / (1.8708287 + 1e-4) = (-1.0689878, -0.5344939, 0, 1.6034817)
    RLOO: r_i - mean of the other three: 1 - 11/3, 2 - 10/3, 3 - 9/3, 6 - 6/3 = (-2.6666667, -1.3333333, 0, 4)."""
    r = jnp.array([[1.0, 2.0, 3.0, 6.0]])
    close(group_advantages(r), [[-1.0689878, -0.5344939, 0.0, 1.6034817]],
          "GRPO advantage (r - group mean) / (population std + STD_EPS)")
    close(leave_one_out_advantages(r), [[-8 / 3, -4 / 3, 0.0, 4.0]], "RLOO advantage r_i - mean_{j != i} r_j")


def test_grpo_loss_by_hand():
    """eps = 0.2, beta = 0.1. Response 0: A = +1, two real tokens (rho 1.5, 0.9), log pi - log pi_ref = (ln 2, 0).
    Response 1: A = -0.5, three tokens (rho 0.5, 1.0, 1.1), log pi - log pi_ref = (0, -ln 2, 0).

      k3(ln 2) = 1/2 - 1 + ln 2 = 0.1931472,   k3(-ln 2) = 2 - 1 - ln 2 = 0.3068528
      response 0: surrogates max(-1.5, -1.2) = -1.2 (clip binds), -0.9;   mean (-1.2 + 0.0193147 - 0.9) / 2 = -1.0403426
      response 1: max(0.25, 0.4) = 0.4 (clip binds), 0.5, 0.55;            mean (0.4 + 0.5 + 0.0306853 + 0.55) / 3 = 0.4935618
      loss = (-1.0403426 + 0.4935618) / 2 = -0.2733904   (without the clip: -0.3733904)
      loss/policy = (-1.05 + 0.4833333) / 2 = -0.2833333;  clipfrac (|rho - 1| > 0.2) = 2 / 5;  objective/k3 = 0.25
    """
    ln2 = math.log(2)
    lp = jnp.array([[math.log(1.5), math.log(0.9), J], [math.log(0.5), 0.0, math.log(1.1)]])
    old = jnp.array([[0.0, 0.0, -J], [0.0, 0.0, 0.0]])
    ref = lp - jnp.array([[ln2, 0.0, 3.0], [0.0, -ln2, 0.0]])
    mask = jnp.array([[True, True, False], [True, True, True]])
    loss, metrics = grpo_loss(lp, old, ref, jnp.array([1.0, -0.5]), mask, 0.2, 0.1)
    assert float(loss) == pytest.approx(-0.2733904, abs=1e-5), (
        f"GRPO loss {float(loss):.6f}, want -0.2733904: per token max(-A rho, -A clip(rho)) + beta k3, averaged over "
        f"each response's tokens, then over responses (-0.3733904 means the clip is missing)")
    assert float(metrics["loss/policy"]) == pytest.approx(-0.2833333, abs=1e-5), "loss/policy: the surrogate alone"
    assert float(metrics["policy/clipfrac"]) == pytest.approx(0.4, abs=1e-6), "clipfrac over the 5 real tokens"
    assert float(metrics["objective/k3"]) == pytest.approx(0.25, abs=1e-5), "objective/k3: mean per-response summed k3"


def test_rloo_loss_by_hand():
    """Per-SEQUENCE ratio rho = exp(sum of log pi - log pi_old over the response), eps = 0.2.

      log-ratio sums   rho         A     max(-A rho, -A clip(rho, 0.8, 1.2))
      0.1 + 0.2        1.3498588   1     max(-1.3498588, -1.2) = -1.2
      -0.5 + 0 + 0.1   0.6703200   2     max(-1.3406401, -1.6) = -1.3406401
      -0.4             0.6703200   -1    max(0.6703200, 0.8)   = 0.8
      0.05             1.0512711   0.5   -0.5256355 (inside)
    loss = (-1.2 - 1.3406401 + 0.8 - 0.5256355) / 4 = -0.5665689;  clipfrac = 3 / 4
    """
    d = jnp.array([[0.1, 0.2, J], [-0.5, 0.0, 0.1], [-0.4, J, J], [0.05, J, J]])
    mask = jnp.array([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 0, 0]], bool)
    loss, metrics = rloo_loss(d, jnp.zeros_like(d), jnp.array([1.0, 2.0, -1.0, 0.5]), mask, 0.2)
    assert float(loss) == pytest.approx(-0.5665689, abs=1e-5), (
        f"RLOO loss {float(loss):.6f}, want -0.5665689: the ratio is of whole sequences (sum the masked log-ratios), "
        f"clipped like PPO's")
    assert float(metrics["policy/clipfrac"]) == pytest.approx(0.75), "three of the four sequence ratios leave [0.8, 1.2]"


def test_rloo_folds_the_kl_into_the_reward(monkeypatch):
    """make_group_batch with the model replaced by given log-probs. Two prompts, G = 2, beta = 0.5, and per
    response the summed log pi - log pi_ref over real tokens = (0.2 + 0.4, 0.1 - 0.1 + 0.4, 1.0, 0) = (0.6, 0.4, 1, 0).

      scores             (1.0, 0.0, 0.5, 0.5)
      R = s - 0.5 kl     (0.7, -0.2, 0.0, 0.5)
      RLOO A (G = 2)     R_i - R_other = (0.9, -0.9, -0.5, 0.5)     (without the KL it would be (1, -1, 0, 0))
      GRPO A             from scores alone: (+-0.5) / (0.5 + 1e-4) = +-0.9998000, then (0, 0)
    """
    monkeypatch.setattr(policy_gradient, "forward", lambda params, tokens, valid, cfg: transformer.Forward(params, None))
    monkeypatch.setattr(policy_gradient, "token_logprobs", lambda logits, tokens, temperature=1.0: logits)
    valid = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]], bool)  # column 0 is the prompt
    ref = jnp.full((4, 4), -1.0)
    policy = ref + jnp.array([[J, 0.2, 0.4, J], [J, 0.1, -0.1, 0.4], [J, 1.0, J, J], [J, 0.0, 0.0, 0.0]])
    scores = jnp.array([1.0, 0.0, 0.5, 0.5])
    reward_fn = lambda reward_params, tokens, valid: reward_params
    # Compile the plain function afresh, so the stand-in model is what gets traced (not a cached real one).
    make = jax.jit(grpo_rloo.make_group_batch.__wrapped__, static_argnames=("reward_fn", "model_cfg"))
    for algorithm, want in (("rloo", [0.9, -0.9, -0.5, 0.5]), ("grpo", [0.9998000, -0.9998000, 0.0, 0.0])):
        cfg = grpo_rloo.GroupConfig(algorithm=algorithm, group_size=2, batch_size=4, minibatches=1, beta=0.5,
                                    response_width=3)
        batch, metrics = make({"policy": policy}, ref, scores, jnp.zeros((4, 4), int), valid, reward_fn=reward_fn, model_cfg=None, cfg=cfg)
        close(batch.advantages, want, f"{algorithm} advantages: RLOO's reward is score - beta * summed k1 KL, "
                                      f"GRPO's is the score alone (its KL is in the loss)", atol=1e-4)
        assert float(metrics["objective/kl"]) == pytest.approx(0.5, abs=1e-5), "objective/kl = mean(0.6, 0.4, 1, 0)"
        assert float(metrics["objective/rlhf_reward"]) == pytest.approx(0.25, abs=1e-5), "mean(0.7, -0.2, 0, 0.5)"


# ================================================================ labelers and pairs (gold.py, preferences.py)


@pytest.mark.parametrize("labeler, a, b, want", [
    # d / T = 0.2 / 0.5 = 0.4, sigma(0.4) = 0.5986877:  0.8 * 0.5986877 + 0.2 * 0.4013123 = 0.5592126
    (preferences.Labeler(temperature=0.5, flip_prob=0.2), 0.8, 0.6, 0.5592126),
    # d / T = -1 / 0.15, sigma = 0.0012706:  0.95 * 0.0012706 + 0.05 * 0.9987294 = 0.0511435
    (preferences.Labeler(), -0.5, 0.5, 0.95 * sigmoid(-1 / 0.15) + 0.05 * (1 - sigmoid(-1 / 0.15))),
    # a huge gap: the labeler still errs at the flip rate, P = 1 - 0.05
    (preferences.Labeler(), 1.0, -1.0, 0.95 * sigmoid(2 / 0.15) + 0.05 * (1 - sigmoid(2 / 0.15))),
])
def test_preference_prob_with_flip_noise(labeler, a, b, want):
    got = preferences.preference_prob(labeler, a, b)
    assert got == pytest.approx(want, abs=1e-6), (
        f"P(a preferred) = {got:.6f}, want (1 - eps) sigma(d / T) + eps (1 - sigma(d / T)) = {want:.6f} "
        f"(eps = flip_prob {labeler.flip_prob}, T = {labeler.temperature})")
    assert preferences.preference_prob(labeler, 1.0, -1.0) < 1 - labeler.flip_prob + 1e-9, "flip noise caps P at 1 - eps"


RESPONSES = ["it is 7 .", "sorry i can not share that .", "definitely it is 9 .", "maybe it is 2 . and ok .",
             "it is blue .", "<user> what is"]


def test_make_pairs_keeps_each_gold_score_with_its_response(monkeypatch):
    """make_pairs with generation replaced by fixed responses: whichever of a and b the labeler chose, the gold
    score, the tokens and P(chosen) must travel together."""
    W = world.make_world()
    seen_prompts = []

    def recording_sample_prompts(*args, **kwargs):
        prompts = world.sample_prompts(*args, **kwargs)
        seen_prompts.extend(prompts)
        return prompts

    n = 24
    texts = [RESPONSES[i % len(RESPONSES)] for i in range(n)] + [RESPONSES[(i * 5 + 3) % len(RESPONSES)] for i in range(n)]

    def fixed_generate(params, prompt_tokens, prompt_valid, key, cfg, sample_cfg, eos, pad):
        data = encode_pairs(seen_prompts * 2, [t.split() for t in texts])  # row i: prompt i % n, then texts[i]
        return Generation(jnp.asarray(data["tokens"]), jnp.asarray(data["valid"]), jnp.zeros(data["tokens"].shape))

    monkeypatch.setattr(preferences, "sample_prompts", recording_sample_prompts)
    monkeypatch.setattr(preferences, "generate", fixed_generate)
    labeler = preferences.Labeler()
    pairs = preferences.make_pairs(jax.random.PRNGKey(0), None, W, None, n, labeler)
    chosen, rejected = decode_responses(pairs["chosen_tokens"]), decode_responses(pairs["rejected_tokens"])
    swapped = 0
    for k, prompt in enumerate(seen_prompts):
        g_c = gold.gold_reward(prompt, *chosen[k], W.secret)
        g_r = gold.gold_reward(prompt, *rejected[k], W.secret)
        assert pairs["gold_chosen"][k] == pytest.approx(g_c) and pairs["gold_rejected"][k] == pytest.approx(g_r), (
            f"pair {k}: gold_chosen/gold_rejected ({pairs['gold_chosen'][k]}, {pairs['gold_rejected'][k]}) are not "
            f"the scores of the chosen/rejected responses ({g_c}, {g_r}): swap the gold with the tokens")
        d = (g_c - g_r) / labeler.temperature
        want_p = (1 - labeler.flip_prob) * sigmoid(d) + labeler.flip_prob * (1 - sigmoid(d))
        assert pairs["prob_chosen"][k] == pytest.approx(want_p, abs=1e-6), f"pair {k}: prob_chosen is P(labeler picks chosen)"
        swapped += chosen[k][0] == texts[n + k].split() and g_c != g_r  # response b won, and it mattered
    assert swapped >= 3, f"only {swapped} pairs where response b won with a different gold: the test has no teeth"
