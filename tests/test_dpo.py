"""DPO / cDPO / IPO: the loss as a function of h, sequence log-probs, masking, a short training run, and a beta
sweep that compiles the training step once."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import dpo, transformer
from minirlhf.data import encode_pairs
from minirlhf.dpo import DPOConfig, loss, preference_loss, reference_logprobs, sequence_logprobs, train_dpo
from minirlhf.ops import token_logprobs
from minirlhf.tokenizer import TOKEN_ID, VOCAB_SIZE
from minirlhf.training import OptimConfig, train_step
from minirlhf.world import math_prompt

CFG = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=26, d_model=16, n_layers=1, n_heads=2, d_mlp=32)
seq_logps = jax.jit(sequence_logprobs, static_argnames="cfg")
jitted_loss = jax.jit(loss, static_argnames=("cfg", "loss_type"))


def dpo_loss(params, data, dpo_cfg: DPOConfig):
    return jitted_loss(params, data, CFG, dpo_cfg.loss_type, dpo_cfg.beta, dpo_cfg.label_smoothing)
H = jnp.linspace(-30.0, 30.0, 13)


@pytest.fixture(scope="module")
def params():
    return transformer.init_params(jax.random.PRNGKey(0), CFG)


def _pairs(n=4):
    prompts = [math_prompt(3, "plus", 4), math_prompt(5, "minus", 2)] * (n // 2)
    chosen = encode_pairs(prompts, [r.split() for r in ["it is 7 .", "definitely it is 3 ."] * (n // 2)])
    rejected = encode_pairs(prompts, [r.split() for r in ["maybe it is 2 . and ok .", "it is 9 ."] * (n // 2)])
    return {"chosen_tokens": chosen["tokens"], "chosen_valid": chosen["valid"],
            "rejected_tokens": rejected["tokens"], "rejected_valid": rejected["valid"]}


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_dpo_gradient_in_h_is_minus_beta_sigmoid(beta):
    grad = jax.vmap(jax.grad(lambda h: preference_loss(h, beta, "dpo")))(H)
    np.testing.assert_allclose(grad, -beta * jax.nn.sigmoid(-beta * H), rtol=1e-5, atol=1e-7, err_msg=(
        "d/dh of -log sigmoid(beta h) should be -beta sigmoid(-beta h): check that beta multiplies h inside the sigmoid"))


def test_dpo_loss_values():
    np.testing.assert_allclose(preference_loss(jnp.zeros(1), 0.1, "dpo"), [np.log(2)], rtol=1e-6,
                               err_msg="at h = 0 (policy equals reference) the DPO loss is log 2")
    assert float(preference_loss(jnp.array([10.0]), 0.1, "dpo")[0]) < np.log(2), (
        "a positive margin (chosen gained on rejected) must *lower* the loss: is the sign of h flipped?")


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_ipo_minimum_at_one_over_two_beta(beta):
    target = 1 / (2 * beta)
    at_target = float(preference_loss(jnp.array([target]), beta, "ipo")[0])
    assert at_target == pytest.approx(0.0, abs=1e-6), f"IPO's loss (h - 1/(2 beta))^2 is 0 at h = {target}"
    grad = jax.grad(lambda h: preference_loss(h, beta, "ipo")[0])(jnp.array([target]))
    assert abs(float(grad[0])) < 1e-5, "IPO's gradient must vanish at h = 1/(2 beta) (Azar et al. 2023, eq. 17)"
    assert jnp.all(preference_loss(H, beta, "ipo") >= 0), "IPO's loss is a square: never negative"


def test_label_smoothing_zero_is_plain_dpo():
    np.testing.assert_allclose(preference_loss(H, 0.3, "cdpo", 0.0), preference_loss(H, 0.3, "dpo"), rtol=1e-6,
                               err_msg="conservative DPO with eps = 0 must equal plain DPO")
    smooth = preference_loss(H, 0.3, "cdpo", 0.1)
    expected = -0.9 * jax.nn.log_sigmoid(0.3 * H) - 0.1 * jax.nn.log_sigmoid(-0.3 * H)
    np.testing.assert_allclose(smooth, expected, rtol=1e-6, err_msg="cDPO is -(1-eps) log sig(beta h) - eps log sig(-beta h)")


def test_sequence_logprob_is_a_sum_over_response_tokens(params):
    batch = encode_pairs([math_prompt(3, "plus", 4)] * 2, [["it", "is", "7", "."], ["it", "is", "7", ".", "and", "ok", "."]])
    tokens, valid = jnp.asarray(batch["tokens"]), jnp.asarray(batch["valid"])
    logits, _ = jax.jit(transformer.forward, static_argnames="cfg")(params, tokens, valid, CFG)
    per_token = np.asarray(token_logprobs(logits, tokens))
    resp = np.asarray(batch["loss_mask"])
    expected = (per_token * resp).sum(axis=1)
    got = np.asarray(seq_logps(params, tokens, valid, CFG))
    np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=(
        "log pi(y) is the SUM of response-token log-probs (EOS included, prompt excluded), not a mean"))
    assert not np.allclose(got, (per_token * resp).sum(1) / resp.sum(1)), "looks like a mean over tokens; DPO uses the sum"


def test_padding_changes_no_dpo_loss(params):
    batch = _pairs()
    ref = reference_logprobs(params, batch, CFG)
    data = {k: jnp.asarray(v) for k, v in {**batch, **ref}.items()}
    garbage = dict(data)
    for side in ("chosen", "rejected"):
        tok = np.array(batch[f"{side}_tokens"])
        tok[~batch[f"{side}_valid"]] = TOKEN_ID["secret"]  # prompt padding and padding after EOS
        garbage[f"{side}_tokens"] = jnp.asarray(tok)
    for loss_type in ("dpo", "ipo"):
        cfg = DPOConfig(loss_type=loss_type)
        shifted = {**params, "wte": params["wte"] * 1.5}  # a policy that differs from the reference
        a, _ = dpo_loss(shifted, data, cfg)
        b, _ = dpo_loss(shifted, garbage, cfg)
        np.testing.assert_allclose(a, b, rtol=1e-5, err_msg=(
            f"{loss_type}: the loss changed when only padded positions changed; mask with response_mask(valid)"))


def test_policy_equal_to_reference_gives_h_zero(params):
    batch = _pairs()
    data = {k: jnp.asarray(v) for k, v in {**batch, **reference_logprobs(params, batch, CFG)}.items()}
    value, metrics = dpo_loss(params, data, DPOConfig(beta=0.1))
    assert float(value) == pytest.approx(np.log(2), rel=1e-4), "with pi = pi_ref every h is 0 and the DPO loss is log 2"
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert abs(float(metrics[name])) < 1e-4, f"{name} is beta * log(pi / pi_ref), which is 0 when pi = pi_ref"
    assert set(metrics) >= {"rewards/accuracies", "logps/chosen", "logps/rejected"}


def test_implicit_rewards_margins_and_accuracies_by_hand(params):
    """Reference log-probs set so that log(pi / pi_ref) is (4, -2) for the chosen and (1, 2) for the rejected
    responses of two pairs, beta = 0.1 (the config test_policy_equal_to_reference compiled):

      rewards/chosen   = mean(0.1 * 4, 0.1 * -2) = mean(0.4, -0.2) = 0.1
      rewards/rejected = mean(0.1, 0.2) = 0.15
      rewards/margins  = mean(0.4 - 0.1, -0.2 - 0.2) = mean(0.3, -0.4) = -0.05
      rewards/accuracies = mean(0.4 > 0.1, -0.2 > 0.2) = 0.5
      loss (h = 3, -4) = mean(-log sigma(0.3), -log sigma(-0.4)) = mean(0.5543552, 0.9130153) = 0.7336852
    """
    batch = _pairs()
    policy = reference_logprobs(params, batch, CFG)  # the policy's own sequence log-probs (params is the policy)
    offsets = {"ref_chosen_logps": np.array([4.0, -2.0] * 2), "ref_rejected_logps": np.array([1.0, 2.0] * 2)}
    ref = {k: (policy[k] - offsets[k]).astype(np.float32) for k in policy}
    data = {k: jnp.asarray(v) for k, v in {**batch, **ref}.items()}
    value, metrics = dpo_loss(params, data, DPOConfig(beta=0.1))
    want = {"rewards/chosen": 0.1, "rewards/rejected": 0.15, "rewards/margins": -0.05, "rewards/accuracies": 0.5}
    for name, w in want.items():
        assert float(metrics[name]) == pytest.approx(w, abs=1e-4), (
            f"{name} = {float(metrics[name]):.4f}, want {w}: the implicit reward is beta * (log pi - log pi_ref) "
            f"of the summed response log-probs")
    assert float(value) == pytest.approx(0.7336852, abs=1e-4), "DPO loss mean(-log sigma(beta h)) with h = (3, -4)"


def test_dpo_training_raises_the_margin(params):
    pairs = _pairs(8)
    cfg = DPOConfig(beta=0.5, optim=OptimConfig(steps=25, batch_size=8, lr=3e-3, warmup=2))
    trained, history = train_dpo(jax.random.PRNGKey(0), params, pairs, CFG, cfg)
    assert history["rewards/margins"][-1] > history["rewards/margins"][0] + 0.1, (
        "after a few DPO steps the implicit reward margin should grow; check the sign of h")
    assert history["loss"][-1] < history["loss"][0], "DPO's loss should fall on a tiny fixed dataset"


@pytest.mark.parametrize("loss_type, first, second", [("dpo", (0.5, 0.0), (0.2, 0.0)), ("cdpo", (0.5, 0.1), (0.5, 0.3))])
def test_a_beta_or_smoothing_sweep_compiles_the_step_once(params, loss_type, first, second):
    pairs, optim = _pairs(8), OptimConfig(steps=4, batch_size=8, lr=3e-3, warmup=1)
    run = lambda beta, eps: train_dpo(jax.random.PRNGKey(1), params, pairs, CFG, DPOConfig(
        beta=beta, loss_type=loss_type, label_smoothing=eps, optim=optim))[1]
    history = run(*first)
    sizes = train_step._cache_size(), dpo._compiled_sequence_logprobs._cache_size()
    other = run(*second)
    now = train_step._cache_size(), dpo._compiled_sequence_logprobs._cache_size()
    assert now == sizes, (
        f"{loss_type}: a run that differs only in beta / label_smoothing {first} -> {second} compiled again (jit "
        f"caches of train_step and the reference log-probs grew from {sizes} to {now}): they must reach the step "
        f"as traced numbers, not inside a static config")
    assert not np.allclose(history["loss"][1:], other["loss"][1:]), (
        f"{loss_type}: runs at {first} and {second} logged the same losses: the step ignored the new value")


def test_config_rejects_smoothing_without_cdpo():
    with pytest.raises(ValueError, match="cdpo"):
        DPOConfig(loss_type="dpo", label_smoothing=0.1)
    with pytest.raises(ValueError):
        DPOConfig(loss_type="kto")
