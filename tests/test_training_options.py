"""The training loops' options, checked by value: PPO's adaptive KL controller, whitening, the k2/k3 estimators
and the temperature in a rollout, PPO's learning-rate decay, a beta sweep that compiles once, and DPO's IPO and
cDPO variants in train_dpo.

The PPO runs are test_ppo's tiny run (same model, config and trivial reward: the share of 'yes'), so in the full
suite they find its generation and update steps already compiled.
"""
from contextlib import contextmanager
from dataclasses import replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import policy_gradient, ppo, sampling, transformer
from minirlhf.data import PROMPT_WIDTH, encode_pairs, encode_prompts, response_mask
from minirlhf.dpo import DPOConfig, train_dpo
from minirlhf.ops import masked_mean
from minirlhf.ppo_losses import AdaptiveKLConfig
from minirlhf.sampling import SampleConfig, generate
from minirlhf.tokenizer import EOS_ID, PAD_ID, TOKEN_ID, VOCAB_SIZE
from minirlhf.training import OptimConfig
from minirlhf.world import make_world, math_prompt, sample_prompts

R = 8
TINY = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=PROMPT_WIDTH + R, d_model=32, n_layers=1, n_heads=2,
                               d_mlp=64)
BASE = ppo.PPOConfig(iterations=30, batch_size=32, ppo_epochs=2, minibatches=2, lr=3e-3, beta=0.01, response_width=R)
TARGET = TOKEN_ID["yes"]
forward = jax.jit(transformer.forward, static_argnames="cfg")


def fraction_of_target(reward_params, tokens, valid):
    """A trivial reward: the share of response tokens that are the word 'yes'."""
    return masked_mean(tokens == TARGET, response_mask(valid, tokens.shape[1] - R), axis=1)


@contextmanager
def backend_compiles():
    """Collects the name of every function XLA compiles inside the block (jax's public monitoring events)."""
    names = []

    def listen(event, duration, fun_name="?", **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(fun_name.removeprefix("jit(").removesuffix(")"))  # "jit(make_rollout)" -> "make_rollout"

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


@pytest.fixture(scope="module")
def world():
    return make_world()


@pytest.fixture(scope="module")
def policy():
    return jax.jit(transformer.init_params, static_argnums=1)(jax.random.PRNGKey(0), TINY)


def run(policy, world, cfg):
    return ppo.train_ppo(jax.random.PRNGKey(1), policy, policy, fraction_of_target, None,
                         partial(sample_prompts, world), TINY, cfg)


@pytest.fixture(scope="module")
def base_run(policy, world):
    """test_ppo's tiny run: fixed beta, whitened advantages, k1, temperature 1."""
    return run(policy, world, BASE)


# ---------------------------------------------------------------- the adaptive KL controller in a run


def test_adaptive_controller_moves_beta_by_its_formula_on_the_logged_kl(policy, world):
    adaptive = AdaptiveKLConfig(target=0.5, horizon=BASE.batch_size)  # n / horizon = 1: up to 20% per iteration
    _, history = run(policy, world, replace(BASE, adaptive=adaptive))
    kl, beta = history["objective/kl"], history["beta"]
    # lm-human-preferences: after iteration i, e = clip(KL_i / target - 1, -0.2, 0.2), beta <- beta (1 + e n / horizon),
    # KL_i = the rollout's mean summed KL (what is logged), n = the batch's episodes.
    want = [BASE.beta]
    for k in kl[:-1]:
        error = min(max(k / adaptive.target - 1.0, -0.2), 0.2)
        want.append(want[-1] * (1.0 + error * BASE.batch_size / adaptive.horizon))
    want = np.array(want)
    wrong = np.flatnonzero(~np.isclose(beta, want, rtol=1e-5, atol=0))
    assert wrong.size == 0, (
        f"beta at iteration {wrong[0]} is {beta[wrong[0]]:.6g} but the controller's formula applied to the logged KL "
        f"{np.round(kl[:wrong[0]], 3)} gives {want[wrong[0]]:.6g}. Is the error clipped to +-0.2, its sign "
        f"KL/target - 1, and n the batch's episode count?"
    )
    above, below = kl[:-1] > adaptive.target, kl[:-1] < adaptive.target
    assert above.any() and below.any(), "the run should see KL on both sides of the target (test set-up)"
    step = np.diff(beta)
    assert np.all(step[above] > 0) and np.all(step[below] < 0), "KL above target must raise beta, below must lower it"
    assert beta.max() > 3 * beta.min(), f"beta should move over the run, got {beta.min():.4f}..{beta.max():.4f}"
    np.testing.assert_allclose(history["objective/rlhf_reward"], history["objective/scores"] - beta * kl, rtol=1e-4,
                               atol=1e-5, err_msg=("the rollout must price KL at the controller's current beta "
                                                   "(rlhf_reward = score - beta * KL), not at the initial one"))


# ---------------------------------------------------------------- a beta sweep compiles once


def test_a_beta_sweep_compiles_nothing_new(policy, world, base_run):
    """beta is a traced argument, so a second run at another beta finds every step compiled."""
    cache = ppo.make_rollout._cache_size(), policy_gradient.update._cache_size(), sampling._generate._cache_size()
    with backend_compiles() as compiled:
        _, history = run(policy, world, replace(BASE, beta=0.05))
    assert history["beta"][0] == 0.05
    steps = {"make_rollout", "update", "_generate"}
    assert not steps & set(compiled), (
        f"a run that differs only in beta compiled {sorted(steps & set(compiled))} again: is beta (or the config "
        f"that holds it) a static argument of a jitted step?"
    )
    after = ppo.make_rollout._cache_size(), policy_gradient.update._cache_size(), sampling._generate._cache_size()
    assert after == cache, f"jit caches of make_rollout, policy_gradient.update, generate grew from {cache} to {after}"

    def probe(x):
        return x * 3 + 1

    with backend_compiles() as compiled:  # the listener does hear compiles, under the function's name
        jax.jit(probe)(jnp.ones(3)).block_until_ready()
    assert "probe" in compiled, f"the compile listener heard {compiled}: jax's monitoring events have changed"


# ---------------------------------------------------------------- whitening


def handmade_responses(world, seed):
    """Real prompts, then responses of random words (about 40% 'yes') ending in EOS at lengths 1..R."""
    rng = np.random.default_rng(seed)
    prompt_tokens, prompt_valid = encode_prompts(sample_prompts(world, rng, BASE.batch_size))
    words = np.where(rng.random((BASE.batch_size, R)) < 0.4, TARGET, rng.integers(5, VOCAB_SIZE, (BASE.batch_size, R)))
    lengths = rng.integers(1, R + 1, BASE.batch_size)
    index = np.arange(R)
    words = np.where(index == lengths[:, None] - 1, EOS_ID, np.where(index < lengths[:, None], words, PAD_ID))
    tokens = np.concatenate([prompt_tokens, words], axis=1).astype(np.int32)
    return tokens, np.concatenate([prompt_valid, index < lengths[:, None]], axis=1)


def test_whiten_false_leaves_the_raw_gae_advantages(policy, world):
    """policy = reference and V = 0: r_t is the score at the last token, so A_t = lam^(last - t) * score."""
    tokens, valid = handmade_responses(world, 2)
    mask = valid & (np.arange(tokens.shape[1]) >= PROMPT_WIDTH)
    scores = (mask & (tokens == TARGET)).sum(1) / mask.sum(1)
    last = np.array([np.flatnonzero(row)[-1] for row in mask])
    raw = np.where(mask, BASE.lam ** (last[:, None] - np.arange(tokens.shape[1])) * scores[:, None], 0.0)
    values = ppo.init_value_params(policy, TINY)
    for whiten in (False, True):
        cfg = replace(BASE, beta=0.0, whiten_advantages=whiten)
        rollout, _ = ppo.make_rollout({"policy": policy, "value": values}, policy, None, jnp.asarray(tokens),
                                      jnp.asarray(valid), fraction_of_target, TINY, cfg)
        want = np.where(mask, (raw - raw[mask].mean()) / raw[mask].std(), 0.0) if whiten else raw
        np.testing.assert_allclose(rollout.advantages, want, atol=1e-4, err_msg=(
            f"whiten_advantages={whiten}: the advantages should be the GAE advantages "
            f"{'standardised over the real tokens' if whiten else 'as they are'}"))


def test_unwhitened_run_updates_differently_and_still_trains(policy, world, base_run):
    trained, history = run(policy, world, replace(BASE, whiten_advantages=False))
    gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree_util.tree_leaves(trained),
                                                              jax.tree_util.tree_leaves(base_run[0])))
    assert gap > 1e-3, "whiten_advantages=False trained exactly like the whitened run: the flag is ignored"
    scores = history["objective/scores"]
    assert scores[-3:].mean() > scores[:3].mean() + 0.3, (
        f"without whitening PPO should still learn to say 'yes': {scores[:3].mean():.2f} -> {scores[-3:].mean():.2f}")


# ---------------------------------------------------------------- KL estimators and temperature in the rollout


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def numpy_logprobs(params, tokens, valid, temperature):
    """log p(tokens[t] | tokens[:t]) at the given temperature, written out in NumPy (position 0 gets 0)."""
    logits = np.asarray(forward(params, jnp.asarray(tokens), jnp.asarray(valid), TINY)[0], np.float64)
    logp = log_softmax(logits[:, :-1] / temperature)
    picked = np.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
    return np.pad(picked, ((0, 0), (1, 0))), logits


ESTIMATORS = {"k1": lambda l: l, "k2": lambda l: 0.5 * l**2, "k3": lambda l: np.exp(-l) - 1 + l}


@pytest.fixture(scope="module")
def drifted(base_run, policy, world):
    """Samples from the PPO-trained policy, which is far (several nats) from its reference: log-ratios of order 1."""
    tokens, valid = encode_prompts(sample_prompts(world, np.random.default_rng(1), BASE.batch_size))
    gen = generate(base_run[0], jnp.asarray(tokens), jnp.asarray(valid), jax.random.PRNGKey(4), TINY,
                   SampleConfig(max_new_tokens=R), EOS_ID, PAD_ID)
    return dict(trained=base_run[0], ref=policy, tokens=np.asarray(gen.tokens), valid=np.asarray(gen.valid),
                values=ppo.init_value_params(policy, TINY), rollouts={})


def rollout_of(drifted, estimator, temperature):
    key = (estimator, temperature)
    if key not in drifted["rollouts"]:
        cfg = replace(BASE, beta=0.3, kl_estimator=estimator, temperature=temperature, whiten_advantages=False)
        drifted["rollouts"][key] = ppo.make_rollout(
            {"policy": drifted["trained"], "value": drifted["values"]}, drifted["ref"], None,
            jnp.asarray(drifted["tokens"]), jnp.asarray(drifted["valid"]), fraction_of_target, TINY, cfg), cfg
    return drifted["rollouts"][key]


@pytest.mark.parametrize("estimator, temperature", [("k2", 1.0), ("k3", 2.0)])
def test_rollout_kl_and_rewards_follow_the_estimator_and_temperature(drifted, estimator, temperature):
    (rollout, metrics), cfg = rollout_of(drifted, estimator, temperature)
    tokens, valid = drifted["tokens"], drifted["valid"]
    mask = valid & (np.arange(tokens.shape[1]) >= PROMPT_WIDTH)
    logprobs, _ = numpy_logprobs(drifted["trained"], tokens, valid, temperature)
    ref_logprobs, _ = numpy_logprobs(drifted["ref"], tokens, valid, temperature)
    np.testing.assert_allclose(np.where(mask, rollout.logprobs, 0), np.where(mask, logprobs, 0), atol=2e-4, err_msg=(
        f"the rollout's log pi_old should be log_softmax(logits / {temperature}) of the sampled tokens"))
    log_ratio = np.where(mask, logprobs - ref_logprobs, 0.0)
    assert np.abs(log_ratio).max() > 1, "test set-up: the trained policy should be far from its reference"
    kl_rows = (ESTIMATORS[estimator](log_ratio) * mask).sum(1)
    hints = {"k1": log_ratio.sum(1).mean()}
    if temperature != 1:
        at_one, _ = numpy_logprobs(drifted["ref"], tokens, valid, 1.0)
        stale = np.where(mask, logprobs - at_one, 0.0)
        hints["the reference scored at temperature 1"] = (ESTIMATORS[estimator](stale) * mask).sum(1).mean()
    hint = "; ".join(f"with {name} it would be {value:.3f}" for name, value in hints.items())
    assert np.isclose(metrics["objective/kl"], kl_rows.mean(), rtol=1e-3), (
        f"logged KL {float(metrics['objective/kl']):.3f}, but {estimator} of log pi - log pi_ref, both at temperature "
        f"{temperature}, summed over the response and averaged over rows, is {kl_rows.mean():.3f} ({hint})")
    # The shaped rewards: -beta kl_t per token plus the score at the last one. V = 0, so the GAE return is the
    # lam-discounted sum of rewards from t on.
    scores = (mask & (tokens == TARGET)).sum(1) / mask.sum(1)
    last = np.array([np.flatnonzero(row)[-1] for row in mask])
    rewards = np.where(mask, -0.3 * ESTIMATORS[estimator](log_ratio), 0.0)
    rewards[np.arange(len(last)), last] += scores
    returns = np.zeros_like(rewards)
    for t in reversed(range(tokens.shape[1])):
        later = returns[:, t + 1] if t + 1 < tokens.shape[1] else 0.0
        returns[:, t] = np.where(mask[:, t], rewards[:, t] + cfg.lam * later, 0.0)
    np.testing.assert_allclose(rollout.returns, returns, atol=1e-3, rtol=1e-3, err_msg=(
        f"the per-token rewards should be -beta * {estimator}(log-ratio at temperature {temperature}) plus the score "
        f"at the last token; the shaped rewards use a different KL"))


def test_update_scores_tokens_at_the_rollouts_temperature(drifted):
    """Before any update the new policy is the old one: ratio 1 only if the loss uses the rollout's temperature."""
    (rollout, _), cfg = rollout_of(drifted, "k3", 2.0)
    params = {"policy": drifted["trained"], "value": drifted["values"]}
    _, metrics = jax.jit(ppo.ppo_loss, static_argnames=("model_cfg", "cfg"))(params, rollout, TINY, cfg)
    assert abs(float(metrics["val/ratio"]) - 1) < 1e-4 and float(metrics["policy/approxkl"]) < 1e-6, (
        f"ratio {float(metrics['val/ratio']):.4f} at the rollout's own parameters: the loss scores tokens at another "
        f"temperature than the rollout did (cfg.temperature = {cfg.temperature})")
    mask = drifted["valid"] & (np.arange(drifted["tokens"].shape[1]) >= PROMPT_WIDTH)
    _, logits = numpy_logprobs(drifted["trained"], drifted["tokens"], drifted["valid"], 2.0)
    logp = log_softmax(logits[:, :-1] / 2.0)
    entropy = np.pad(-(np.exp(logp) * logp).sum(-1), ((0, 0), (1, 0)))
    assert np.isclose(metrics["policy/entropy"], entropy[mask].mean(), rtol=1e-3), (
        "policy/entropy should be the entropy of softmax(logits / temperature) over the response tokens")


# ---------------------------------------------------------------- PPO's learning rate


def test_ppo_learning_rate_decays_linearly_to_zero():
    """With a constant gradient Adam's step is exactly the learning rate, so each update reads the schedule."""
    cfg = replace(BASE, iterations=3, ppo_epochs=2, minibatches=2)  # 12 updates
    optimizer = policy_gradient.optimizer(cfg)
    params = {"w": jnp.zeros(1)}
    state = optimizer.init(params)
    grads = {"w": jnp.ones(1)}  # norm 1: the gradient clip leaves it alone
    update = jax.jit(optimizer.update)
    steps = []
    for _ in range(cfg.n_updates):
        updates, state = update(grads, state, params)
        steps.append(-float(updates["w"][0]))
    want = cfg.lr * (1 - np.arange(cfg.n_updates) / cfg.n_updates)
    np.testing.assert_allclose(steps, want, rtol=1e-4, err_msg=(
        f"update t should use lr * (1 - t / n_updates), from {cfg.lr} down to 0 at the end of the run"))


# ---------------------------------------------------------------- DPO's variants in train_dpo

DPO_CFG = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=26, d_model=16, n_layers=1, n_heads=2, d_mlp=32)


def one_pair_repeated(n=8):
    """Every row the same pair, so every h in a batch is equal and a batch mean is that one pair's value."""
    prompts = [math_prompt(3, "plus", 4)] * n
    chosen = encode_pairs(prompts, [["it", "is", "7", "."]] * n)
    rejected = encode_pairs(prompts, [["maybe", "it", "is", "2", "."]] * n)
    return {"chosen_tokens": chosen["tokens"], "chosen_valid": chosen["valid"],
            "rejected_tokens": rejected["tokens"], "rejected_valid": rejected["valid"]}


def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


@pytest.mark.parametrize("loss_type, smoothing", [("ipo", 0.0), ("cdpo", 0.2)])
def test_train_dpo_variants_log_their_own_loss(loss_type, smoothing):
    beta = 0.5
    params = transformer.init_params(jax.random.PRNGKey(0), DPO_CFG)
    cfg = DPOConfig(beta=beta, loss_type=loss_type, label_smoothing=smoothing,
                    optim=OptimConfig(steps=12, batch_size=4, lr=3e-3, warmup=2))
    _, history = train_dpo(jax.random.PRNGKey(0), params, one_pair_repeated(), DPO_CFG, cfg)
    h = np.asarray(history["rewards/margins"], np.float64) / beta  # margins = beta h; every row has the same h
    if loss_type == "ipo":  # Azar et al. 2023, eq. 17
        want, at_start, name = (h - 1 / (2 * beta)) ** 2, (1 / (2 * beta)) ** 2, "(h - 1/(2 beta))^2"
    else:  # conservative DPO
        want = -(1 - smoothing) * log_sigmoid(beta * h) - smoothing * log_sigmoid(-beta * h)
        at_start, name = np.log(2), "-(1-eps) log sig(beta h) - eps log sig(-beta h)"
    assert history["loss"][0] == pytest.approx(at_start, rel=1e-4), (
        f"{loss_type} at step 0 (policy = reference, h = 0) should be {at_start:.4f}, got {history['loss'][0]:.4f}; "
        f"does loss_type={loss_type!r} reach preference_loss?")
    assert abs(h[-1]) > 0.3, f"{loss_type} should move the margin h off 0 in a few steps, got {h[-1]:.3f}"
    np.testing.assert_allclose(history["loss"], want, rtol=1e-3, atol=1e-5, err_msg=(
        f"the logged {loss_type} loss should be {name} of the logged margin at every step"))
