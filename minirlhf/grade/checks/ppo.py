"""Checks for PPO's pieces: KL estimates, shaped rewards, GAE, whitening, the two clipped losses, the KL
controller, the exact KL used to measure a policy, and the update loop (epochs x shuffled minibatches)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from minirlhf.grade.checks.common import (CheckFailed, Mistake, check_for, compare, expect, expect_raises, expect_traceable,
                                    f32, in_layout, mask_of, np_log_softmax, reference, response_layout, rng)
from minirlhf.policy_gradient import PGConfig, optimizer, update
from minirlhf.ppo_losses import AdaptiveKLConfig, KLState
from minirlhf.training import TrainState

P, R = 3, 6  # prompt and response width of every per-token case here: arrays are [4, 9]


def _mask(seed: int = 20) -> np.ndarray:
    """Real response tokens of 4 rows: responses of 2, 6 (cut off at the last column), 1 and 4 tokens."""
    _, valid = response_layout(seed, [2, R, 1, 4], prompt_width=P, response_width=R)
    return mask_of(valid, P)


def _junk_off(mask, x, value=50.0):
    """x with large junk where mask is False: a function that lets padding in cannot hide it."""
    return f32(np.where(mask, x, value))


# ---------------------------------------------------------------- KL estimates and shaped rewards


@check_for("kl_estimate")
def check_kl_estimate(fn) -> str:
    log_ratio = f32(rng(21).normal(0, 0.8, size=(3, 5)))
    l = log_ratio.astype(np.float64)
    mistakes = {
        "k1": [Mistake("k1 is the log-ratio itself, l = log pi - log pi_ref (no abs, no square)", lambda: np.abs(l)),
               Mistake("k1's log-ratio is log pi - log pi_ref, not the other way round", lambda: -l)],
        "k2": [Mistake("k2 is HALF the squared log-ratio: l^2 / 2", lambda: l**2),
               Mistake("k2 is half the SQUARED log-ratio: l^2 / 2", lambda: 0.5 * l)],
        "k3": [Mistake("k3 = (exp(-l) - 1) + l with l = log pi - log pi_ref; yours is the log-ratio the other way "
                       "round, exp(l) - 1 - l", lambda: np.expm1(l) - l),
               Mistake("k3 = (exp(-l) - 1) + l: the sign of the last term is +", lambda: np.expm1(-l) - l)],
    }
    for name, wrong in mistakes.items():
        got = fn(jnp.asarray(log_ratio), name)
        want = reference("kl_estimate")(jnp.asarray(log_ratio), name)
        expect(got, want, f"estimator {name!r}", wrong)
        expect_traceable(lambda x, name=name: fn(x, name), (jnp.asarray(log_ratio),))
    expect_raises(lambda: fn(jnp.asarray(log_ratio), "k4"), ValueError, "estimator 'k4'", "an unknown estimator name")
    return "k1, k2, k3 and an unknown name"


def _np_shaped(scores, lp, ref, mask, beta, estimator, score_at="last", use_mask=True, sign=-1.0):
    l = lp.astype(np.float64) - ref
    kl = {"k1": l, "k2": 0.5 * l**2, "k3": np.expm1(-l) + l}[estimator]
    rewards = sign * beta * kl
    if use_mask:
        rewards = np.where(mask, rewards, 0.0)
    B, T = mask.shape
    last = T - 1 - np.argmax(mask[:, ::-1], axis=1)
    where = {"last": last, "column": np.full(B, T - 1), "first": np.argmax(mask, axis=1)}
    if score_at == "all":
        return rewards + np.where(mask, scores[:, None], 0.0)
    rewards = rewards.copy()
    rewards[np.arange(B), where[score_at]] += scores
    return rewards


@check_for("kl_shaped_rewards")
def check_kl_shaped_rewards(fn) -> str:
    r = rng(22)
    mask = _mask()
    scores = f32(r.normal(0, 1, 4))
    logprobs = _junk_off(mask, -np.abs(r.normal(1, 0.5, mask.shape)), -5.0)
    ref_logprobs = _junk_off(mask, -np.abs(r.normal(1, 0.5, mask.shape)), -1.0)
    cases = [("beta=0.1, estimator k1", 0.1, "k1"), ("beta=0.05, estimator k3", 0.05, "k3")]
    for case, beta, est in cases:
        arrays = tuple(map(jnp.asarray, (scores, logprobs, ref_logprobs, mask)))
        got = fn(*arrays, beta, est)
        want = reference("kl_shaped_rewards")(*arrays, beta, est)
        s = lambda **kw: (lambda: _np_shaped(scores, logprobs, ref_logprobs, mask, **{"beta": beta,
                                                                                       "estimator": est, **kw}))
        expect(got, want, case, [
            Mistake("the score goes at each row's LAST REAL token (its EOS, or the last column when it was cut "
                    "off), not at the last column, which is padding in rows that ended early", s(score_at="column")),
            Mistake("the score is added once, at each row's last real token, not to every token", s(score_at="all")),
            Mistake("the score goes at the LAST real token, not the first", s(score_at="first")),
            Mistake("forgot the mask: no KL penalty on the prompt or the padding (rewards are 0 there)",
                    s(use_mask=False)),
            Mistake("forgot beta: every token pays -beta * kl_t", s(beta=1.0)),
            Mistake("the KL penalty has the wrong sign: r_t = -beta * kl_t", s(sign=1.0)),
            Mistake("ignored `estimator`: compute kl_t with kl_estimate(logprobs - ref_logprobs, estimator)",
                    s(estimator="k1")),
        ], where=in_layout(mask))
    # In the rollout beta is a traced scalar (the adaptive controller changes it without recompiling).
    expect_traceable(lambda *a: fn(*a, "k3"), (*map(jnp.asarray, (scores, logprobs, ref_logprobs, mask)),
                                               jnp.float32(0.05)), caller="the jitted rollout")
    return f"{len(cases)} cases"


# ---------------------------------------------------------------- GAE


def _np_gae(rewards, values, mask, gamma, lam, reset=True, zero=True, use_lam=True, gamma_in_trace=True,
            forward=False, returns="sum"):
    B, T = rewards.shape
    adv = np.zeros((B, T))
    for b in range(B):
        next_v = next_a = 0.0
        for t in range(T) if forward else reversed(range(T)):
            if reset and not mask[b, t]:
                next_v = next_a = 0.0
                continue
            delta = rewards[b, t] + gamma * next_v - values[b, t]
            adv[b, t] = delta + (gamma if gamma_in_trace else 1.0) * (lam if use_lam else 1.0) * next_a
            next_v, next_a = values[b, t], adv[b, t]
    ret = adv + values if returns == "sum" else adv
    if zero:
        adv, ret = np.where(mask, adv, 0.0), np.where(mask, ret, 0.0)
    return adv, ret


@check_for("gae")
def check_gae(fn) -> str:
    r = rng(23)
    mask = _mask()
    rewards = _junk_off(mask, r.normal(0, 1, mask.shape), 3.0)
    values = _junk_off(mask, r.normal(0, 1, mask.shape), -2.0)
    cases = [("gamma=1, lam=0.95", 1.0, 0.95), ("gamma=0.9, lam=0.5", 0.9, 0.5)]
    for case, gamma, lam in cases:
        arrays = tuple(map(jnp.asarray, (rewards, values, mask)))
        got = fn(*arrays, gamma, lam)
        want = reference("gae")(*arrays, gamma, lam)
        g = lambda **kw: (lambda: _np_gae(rewards, values, mask, gamma, lam, **kw))
        through = ("the recurrence runs through the prompt and padding: where mask is False the episode is over, "
                   "so there V_{t+1} = 0 and A_{t+1} = 0 (reset both, as if the row ended)")
        expect(got, want, case, [
            Mistake(through, g(reset=False)),
            Mistake(through, g(reset=False, zero=False)),
            Mistake("advantages and returns must be 0 off the mask (prompt and padding)", g(zero=False)),
            Mistake("forgot lambda: A_t = delta_t + gamma * lam * A_{t+1}", g(use_lam=False)),
            Mistake("forgot gamma in the trace: A_t = delta_t + gamma * lam * A_{t+1}", g(gamma_in_trace=False)),
            Mistake("the recurrence runs backwards: A_t needs A_{t+1}, so start at the end of each row",
                    g(forward=True)),
            Mistake("returns are advantages + values (R_t = A_t + V_t), not the advantages alone", g(returns="adv")),
        ], name="(advantages, returns)", where=in_layout(mask))
    expect_traceable(lambda *a: fn(*a, 1.0, 0.95), tuple(map(jnp.asarray, (rewards, values, mask))),
                     caller="the jitted rollout")
    return f"{len(cases)} cases"


# ---------------------------------------------------------------- whitening


def _np_whiten(x, mask, shift_mean=True, use_mask=True, zero=True, power=0.5, eps=1e-8, ddof=0):
    x = x.astype(np.float64)
    sel = x[mask] if use_mask else x.reshape(-1)
    mean, var = sel.mean(), sel.var(ddof=ddof)
    with np.errstate(all="ignore"):
        white = (x - mean) / (var + eps) ** power
    if not shift_mean:
        white = white + mean
    return np.where(mask, white, 0.0) if zero else white


@check_for("masked_whiten")
def check_masked_whiten(fn) -> str:
    r = rng(24)
    mask = _mask()
    x = _junk_off(mask, r.normal(3.0, 2.0, mask.shape), 1000.0)
    flat = _junk_off(mask, np.full(mask.shape, 2.0), 1000.0)  # every real entry equal: variance 0
    cases = [("advantages with junk on the padding", x, True), ("the same, shift_mean=False", x, False),
             ("all real entries equal (variance 0)", flat, True)]
    for case, xs, shift in cases:
        got = fn(jnp.asarray(xs), jnp.asarray(mask), shift)
        want = reference("masked_whiten")(jnp.asarray(xs), jnp.asarray(mask), shift)
        w = lambda **kw: (lambda: _np_whiten(xs, mask, **{"shift_mean": shift, **kw}))
        expect(got, want, case, [
            Mistake("the mean and variance must come from the real tokens only (where mask is True), not the "
                    "padding", w(use_mask=False)),
            Mistake("padding must stay 0 after whitening (jnp.where(mask, white, 0.0))", w(zero=False)),
            Mistake("shift_mean=False: add the mean back after dividing by the std", w(shift_mean=True)),
            Mistake("divided by the variance: divide by the standard deviation sqrt(var + 1e-8)", w(power=1.0)),
            Mistake("use the plain variance (mean of squared deviations), not the sample variance (ddof=1)",
                    w(ddof=1)),
            Mistake("when every real entry is equal the variance is 0: add 1e-8 under the square root",
                    w(eps=0.0)),
        ], where=in_layout(mask))
    expect_traceable(lambda a, m: fn(a, m, True), (jnp.asarray(x), jnp.asarray(mask)), caller="the jitted rollout")
    return f"{len(cases)} cases"


# ---------------------------------------------------------------- the clipped losses


def _masked_mean(x, mask):
    return np.where(mask, x, 0.0).sum() / max(mask.sum(), 1)


def _np_policy_loss(lp, old, adv, mask, eps, reduce=np.maximum, clip=True, ratio_of=None, use_mask=True, sign=-1.0):
    log_ratio = lp.astype(np.float64) - old
    ratio = np.exp(log_ratio) if ratio_of is None else ratio_of(log_ratio)
    unclipped = sign * adv * ratio
    clipped = sign * adv * (np.clip(ratio, 1 - eps, 1 + eps) if clip else ratio)
    m = mask if use_mask else np.ones_like(mask)
    return _masked_mean(reduce(unclipped, clipped), m)


def _ppo_inputs(seed):
    r = rng(seed)
    mask = _mask(seed)
    old = f32(-np.abs(r.normal(1.5, 0.5, mask.shape)))
    logprobs = _junk_off(mask, old + r.uniform(-0.6, 0.6, mask.shape), -9.0)  # ratios from 0.55 to 1.8
    advantages = _junk_off(mask, r.normal(0, 1, mask.shape), 40.0)
    return mask, old, logprobs, advantages


def _beside_reference(fn, name: str, inputs: tuple, eps: float, case: str):
    """(fn's, the library's) (loss, metrics) on the same inputs and clip range; a wrong structure fails at once."""
    arrays = tuple(map(jnp.asarray, inputs))
    got, want = fn(*arrays, eps), reference(name)(*arrays, eps)
    msg = compare(got, want, "(loss, metrics)", values=False)
    if msg:
        raise CheckFailed(f"{case}: {msg}")
    return got, want


@check_for("policy_loss")
def check_policy_loss(fn) -> str:
    mask, old, logprobs, adv = _ppo_inputs(25)
    cases = [("cliprange 0.2", 0.2), ("cliprange 0.1", 0.1)]
    for case, eps in cases:
        got, want = _beside_reference(fn, "policy_loss", (logprobs, old, adv, mask), eps, case)
        pl = lambda **kw: (lambda: _np_policy_loss(logprobs, old, adv, mask, eps, **kw))
        expect(got[0], want[0], case, [
            Mistake("took the min of the two terms: PPO's loss is the MAX (the pessimistic one) of "
                    "-A * ratio and -A * clip(ratio, 1 - eps, 1 + eps)", pl(reduce=np.minimum)),
            Mistake("forgot the clip: the second term uses clip(ratio, 1 - eps, 1 + eps)", pl(clip=False)),
            Mistake("the ratio is exp(logprobs - old_logprobs), not the difference of log-probs",
                    pl(ratio_of=lambda lr: lr)),
            Mistake("the ratio is upside down: pi_new / pi_old = exp(logprobs - old_logprobs)",
                    pl(ratio_of=lambda lr: np.exp(-lr))),
            Mistake("the sign is flipped: we MINIMISE -A * ratio (gradient ascent on A * ratio)",
                    pl(sign=1.0, reduce=np.minimum)),
            Mistake("the sign is flipped: we minimise -A * ratio, and take the max of the two terms",
                    pl(sign=1.0)),
            Mistake("forgot the mask: average over the real response tokens only (masked_mean)", pl(use_mask=False)),
        ], name="the loss")
        log_ratio = logprobs.astype(np.float64) - old
        ratio = np.exp(log_ratio)
        unclipped, clipped = -adv * ratio, -adv * np.clip(ratio, 1 - eps, 1 + eps)
        expect(got[1], want[1], case, [
            Mistake("the metrics must be means over the real tokens only (the mask)", lambda: {
                "policy/approxkl": 0.5 * np.mean(log_ratio**2), "policy/clipfrac": np.mean(clipped > unclipped),
                "val/ratio": np.mean(ratio)}),
            Mistake("policy/approxkl is HALF the mean squared log-ratio", lambda: {
                "policy/approxkl": _masked_mean(log_ratio**2, mask),
                "policy/clipfrac": _masked_mean(clipped > unclipped, mask), "val/ratio": _masked_mean(ratio, mask)}),
        ], name="the metrics")
    expect_traceable(lambda *a: fn(*a, 0.2), tuple(map(jnp.asarray, (logprobs, old, adv, mask))),
                     caller="the PPO update step")
    return f"{len(cases)} cases"


def _np_value_loss(v, old, ret, mask, eps, reduce=np.maximum, clip=True, half=True, around=None, use_mask=True):
    v = v.astype(np.float64)
    center = old if around is None else around
    clipped = np.clip(v, center - eps, center + eps) if clip else v
    loss = reduce((v - ret) ** 2, (clipped - ret) ** 2)
    m = mask if use_mask else np.ones_like(mask)
    return (0.5 if half else 1.0) * _masked_mean(loss, m)


@check_for("value_loss")
def check_value_loss(fn) -> str:
    r = rng(26)
    mask = _mask(26)
    old = f32(r.normal(0, 1, mask.shape))
    values = _junk_off(mask, old + r.uniform(-0.5, 0.5, mask.shape), 30.0)
    returns = _junk_off(mask, r.normal(0, 1, mask.shape), -30.0)
    cases = [("cliprange_value 0.2", 0.2), ("cliprange_value 0.05", 0.05)]
    for case, eps in cases:
        got, want = _beside_reference(fn, "value_loss", (values, old, returns, mask), eps, case)
        vl = lambda **kw: (lambda: _np_value_loss(values, old, returns, mask, eps, **kw))
        expect(got[0], want[0], case, [
            Mistake("took the min of the two squared errors: the value loss takes the MAX (pessimistic), like the "
                    "policy loss", vl(reduce=np.minimum)),
            Mistake("forgot the clip: the second error uses clip(values, old_values - eps, old_values + eps)",
                    vl(clip=False)),
            Mistake("forgot the 1/2 in front", vl(half=False)),
            Mistake("clip the new values around the OLD values (old_values +- eps), not around the returns",
                    vl(around=returns)),
            Mistake("forgot the mask: average over the real response tokens only (masked_mean)", vl(use_mask=False)),
        ], name="the loss")
        expect(got[1], want[1], case, name="the metrics")
    expect_traceable(lambda *a: fn(*a, 0.2), tuple(map(jnp.asarray, (values, old, returns, mask))),
                     caller="the PPO update step")
    return f"{len(cases)} cases"


# ---------------------------------------------------------------- the KL controller


@check_for("adaptive_kl_controller")
def check_adaptive_kl_controller(fn) -> str:
    cfg = AdaptiveKLConfig(target=6.0, horizon=1000)
    cases = [(7.0, 64), (5.5, 32), (60.0, 64), (0.5, 64)]
    for kl, n in cases:
        case = f"beta 0.1, KL {kl} against a target of 6, {n} episodes"
        got = fn(KLState(0.1), kl, n, cfg)
        want = reference("adaptive_kl_controller")(KLState(0.1), kl, n, cfg)
        e = kl / cfg.target - 1
        ec = float(np.clip(e, -0.2, 0.2))
        expect(got, want, case, [
            Mistake("clip the proportional error to [-0.2, 0.2]: e = clip(KL / target - 1, -0.2, 0.2)",
                    lambda: KLState(0.1 * (1 + e * n / cfg.horizon))),
            Mistake("the update goes the wrong way: KL above target must make KL MORE expensive (beta up)",
                    lambda: KLState(0.1 * (1 - ec * n / cfg.horizon))),
            Mistake("the step size is e * n_episodes / horizon: beta <- beta * (1 + e * n / horizon)",
                    lambda: KLState(0.1 * (1 + ec))),
            Mistake("the update multiplies beta: beta <- beta * (1 + e * n / horizon)",
                    lambda: KLState(0.1 + ec * n / cfg.horizon)),
        ])
    return f"{len(cases)} cases"


# ---------------------------------------------------------------- exact KL


def _np_exact_kl(lp, lq, temp, reverse=False, shift=True, weighted=True, pad_end=False):
    if not shift:
        a, b = np_log_softmax(lp / temp), np_log_softmax(lq / temp)
    else:
        a, b = np_log_softmax(lp[:, :-1] / temp), np_log_softmax(lq[:, :-1] / temp)
    if reverse:
        a, b = b, a
    kl = (np.exp(a) * (a - b)).sum(-1) if weighted else (a - b).mean(-1)
    return kl if not shift else np.pad(kl, ((0, 0), (0, 1)) if pad_end else ((0, 0), (1, 0)))


@check_for("exact_kl")
def check_exact_kl(fn) -> str:
    r = rng(27)
    lp, lq = f32(r.normal(0, 1.5, (2, 5, 4))), f32(r.normal(0, 1.5, (2, 5, 4)))
    cases = [("temperature 1", 1.0), ("temperature 0.8", 0.8)]
    for case, temp in cases:
        got = fn(jnp.asarray(lp), jnp.asarray(lq), temp)
        want = reference("exact_kl")(jnp.asarray(lp), jnp.asarray(lq), temp)
        k = lambda **kw: (lambda: _np_exact_kl(lp, lq, temp, **kw))
        expect(got, want, case, [
            Mistake("that is KL(q || p): weight by p, the first argument: sum_v p(v) (log p(v) - log q(v))",
                    k(reverse=True)),
            Mistake("no shift: KL_t belongs to token t, whose distribution comes from the logits at t - 1 "
                    "(position 0 gets 0), as in token_logprobs", k(shift=False)),
            Mistake("shifted but misaligned: pad the FRONT (position 0 gets 0), not the end", k(pad_end=True)),
            Mistake("forgot the temperature: divide both logits by it before log_softmax", lambda: _np_exact_kl(
                lp, lq, 1.0)),
            Mistake("the KL weights each word's log-ratio by p(v) and sums over the vocabulary",
                    k(weighted=False)),
        ])
    expect_traceable(lambda a, b: fn(a, b, 0.8), (jnp.asarray(lp), jnp.asarray(lq)))
    return f"{len(cases)} cases"


# ---------------------------------------------------------------- the update loop: epochs x minibatches


def _rows_variant(key, cfg, shuffle="groups", layout="consecutive"):
    """minibatch_rows with a mistake: rows shuffled singly (not in groups), a group's rows strided, no shuffle."""
    if shuffle == "rows":
        return jax.random.permutation(key, cfg.batch_size).reshape(cfg.minibatches, -1)
    groups = (jax.random.permutation(key, cfg.n_prompts) if shuffle == "groups"
              else jnp.arange(cfg.n_prompts)).reshape(cfg.minibatches, -1)  # [M, prompts / M]
    members = jnp.arange(cfg.group_size)
    rows = (groups[:, :, None] * cfg.group_size + members if layout == "consecutive"
            else groups[:, :, None] + members * cfg.n_prompts)  # [M, prompts / M, G]
    return rows.reshape(cfg.minibatches, -1)


LOOP_CONFIGS = {  # name -> PGConfig fields: B responses, G per prompt, E epochs, M minibatches
    "B=8, G=1, 2 epochs x 2 minibatches": dict(batch_size=8, group_size=1, ppo_epochs=2, minibatches=2),
    "B=12, G=3, 1 epoch x 2 minibatches": dict(batch_size=12, group_size=3, ppo_epochs=1, minibatches=2),
    "B=16, G=2, 3 epochs x 4 minibatches": dict(batch_size=16, group_size=2, ppo_epochs=3, minibatches=4),
    "B=6, G=1, 1 epoch x 1 minibatch": dict(batch_size=6, group_size=1, ppo_epochs=1, minibatches=1),
}


@check_for("minibatch_rows")
def check_minibatch_rows(fn) -> str:
    for seed, (case, fields) in enumerate(LOOP_CONFIGS.items()):
        cfg, key = PGConfig(**fields), jax.random.PRNGKey(seed)
        got, want = fn(key, cfg), reference("minibatch_rows")(key, cfg)
        wrong = lambda **kw: (lambda: _rows_variant(key, cfg, **kw))
        expect(got, want, case, [
            Mistake("shuffle whole GROUPS, not single rows: GRPO's and RLOO's advantages compare the responses of "
                    "one prompt, so a minibatch must hold every row of each of its groups (permute "
                    "range(cfg.n_prompts), then expand each group to its rows)", wrong(shuffle="rows")),
            Mistake("a group's rows are consecutive: group g is rows g * group_size + j, j = 0 .. group_size - 1 "
                    "(the batch repeats each prompt group_size times in a row)", wrong(layout="strided")),
            Mistake("the rows are not shuffled: draw the order with jax.random.permutation(key, ...), so each "
                    "epoch's minibatches mix differently", wrong(shuffle="none")),
        ])
        if not np.array_equal(np.sort(np.asarray(got).reshape(-1)), np.arange(cfg.batch_size)):
            raise CheckFailed(f"{case}: each row of the batch must appear in exactly one minibatch")
    expect_traceable(lambda key: fn(key, cfg), (jax.random.PRNGKey(0),), caller="the update loop")
    return f"{len(LOOP_CONFIGS)} configs (group sizes 1 to 3, 1 to 4 minibatches)"


def _toy_loss(params, minibatch, model_cfg, cfg):
    """A least-squares loss whose metrics remember which rows the step saw, so an order mistake shows."""
    err = minibatch["x"] @ params["w"] - minibatch["y"]  # [minibatch]
    loss = jnp.mean(err**2)
    return loss, {"loss": loss, "first_row": minibatch["row"][0].astype(jnp.float32)}


def _toy_start(cfg, seed):
    """A fresh (state, batch): update donates its state, so every run gets its own."""
    r = rng(seed)
    params = {"w": jnp.asarray(f32(r.normal(size=3)))}
    batch = {"x": jnp.asarray(f32(r.normal(size=(cfg.batch_size, 3)))),
             "y": jnp.asarray(f32(r.normal(size=cfg.batch_size))), "row": jnp.arange(cfg.batch_size)}
    return TrainState(params, optimizer(cfg).init(params), jnp.zeros((), jnp.int32)), batch


def _loop_variant(cfg, seed, key, keys="split", rows_fn=None, epochs=None, report="mean"):
    """update_epochs with a mistake, built from the library's update: a key reused, no shuffle, missing epochs,
    the last step's metrics reported."""
    state, batch = _toy_start(cfg, seed)
    epoch_keys = jax.random.split(key, cfg.ppo_epochs) if keys == "split" else [key] * cfg.ppo_epochs
    steps = []
    for key_epoch in epoch_keys[: epochs or cfg.ppo_epochs]:
        for rows in (rows_fn or reference("minibatch_rows"))(key_epoch, cfg):
            state, metrics = update(state, batch, rows, cfg, _toy_loss, None)
            steps.append(metrics)
    pick = (lambda k: float(steps[-1][k])) if report == "last" else (lambda k: float(np.mean([m[k] for m in steps])))
    return state, {k: pick(k) for k in steps[0]}


@check_for("update_epochs")
def check_update_epochs(fn) -> str:
    for seed, (case, fields) in enumerate(LOOP_CONFIGS.items()):
        cfg, key = PGConfig(lr=0.05, **fields), jax.random.PRNGKey(10 + seed)
        got = fn(*_toy_start(cfg, seed), key, _toy_loss, None, cfg)
        want = reference("update_epochs")(*_toy_start(cfg, seed), key, _toy_loss, None, cfg)
        wrong = lambda **kw: (lambda: _loop_variant(cfg, seed, key, **kw))
        no_shuffle = lambda key, cfg: _rows_variant(key, cfg, shuffle="none")
        expect(got, want, case, [
            Mistake("every epoch reuses the same key, so it visits the minibatches in the same order: split it, "
                    "one key per epoch (jax.random.split(key, cfg.ppo_epochs))", wrong(keys="same")),
            Mistake("the minibatches are not shuffled: take each epoch's rows from minibatch_rows(key_epoch, cfg)",
                    wrong(rows_fn=no_shuffle)),
            *[Mistake("only one pass over the batch: run cfg.ppo_epochs epochs, each over all cfg.minibatches",
                      wrong(keys=keys, epochs=1)) for keys in ("same", "split")],  # the pass on key, or on a split
            Mistake("those are the last step's metrics: report each metric's mean over all "
                    "ppo_epochs * minibatches steps", wrong(report="last")),
        ], name="(state, metrics)")
    return f"{len(LOOP_CONFIGS)} configs, up to 3 epochs x 4 minibatches, on a least-squares toy loss"
