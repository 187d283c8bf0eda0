"""Reward model: where the score is read, the Bradley-Terry loss and its gradient, normalization, a toy fit, and
the scoring function PPO's jitted rollout takes as a static argument."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import transformer
from minirlhf.data import PROMPT_WIDTH, encode_pairs
from minirlhf.preferences import Labeler, label_noise_ceiling
from minirlhf.reward_model import (RMConfig, accuracy, bradley_terry, init_reward_model, last_index, loss, normalize,
                                   reward_fn, score)
from minirlhf.tokenizer import TOKEN_ID, VOCAB_SIZE
from minirlhf.training import OptimConfig, fit
from minirlhf.world import color_prompt, math_prompt

CFG = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=26, d_model=16, n_layers=1, n_heads=2, d_mlp=32)
reward = score  # the jitted reward_model.reward: same function, compiled once per shape (keeps the tests fast)
rm_loss = jax.jit(loss, static_argnames=("cfg", "centering"))


@pytest.fixture(scope="module")
def rm_params():
    lm = transformer.init_params(jax.random.PRNGKey(0), CFG)
    params = init_reward_model(jax.random.PRNGKey(1), lm, CFG)
    # A larger head than the init so scores differ visibly between sequences.
    return {**params, "head": {"w": jax.random.normal(jax.random.PRNGKey(2), (CFG.d_model,)), "b": jnp.zeros(())}}


def _batch(responses):
    prompts = [math_prompt(3, "plus", 4)] * len(responses)
    return encode_pairs(prompts, [r.split() for r in responses])


def test_last_index_finds_the_last_real_token():
    valid = np.array([[0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 1, 0, 0, 0]], bool)
    np.testing.assert_array_equal(last_index(jnp.asarray(valid)), [3, 5, 2])


def test_reward_ignores_padding_after_eos(rm_params):
    batch = _batch(["it is 7 .", "maybe it is 2 . and ok ."])
    r = reward(rm_params, jnp.asarray(batch["tokens"]), jnp.asarray(batch["valid"]), CFG)
    garbage = batch["tokens"].copy()
    after_eos = ~batch["valid"] & (np.arange(garbage.shape[1]) >= PROMPT_WIDTH)
    garbage[after_eos] = TOKEN_ID["secret"]  # any token id in the padded slots after EOS
    r_garbage = reward(rm_params, jnp.asarray(garbage), jnp.asarray(batch["valid"]), CFG)
    np.testing.assert_allclose(r, r_garbage, atol=1e-6, err_msg=(
        "the reward changed when only padding after EOS changed: read the head at the last *valid* "
        "position (last_index(valid)), not at the last column of the array"))


def test_reward_reads_the_last_real_token(rm_params):
    batch = _batch(["it is 7 ."])
    last = int(last_index(jnp.asarray(batch["valid"]))[0])
    assert last == PROMPT_WIDTH + 4, "the last real token of 'it is 7 . <eos>' is the EOS at P + 4"
    changed = batch["tokens"].copy()
    changed[0, last] = TOKEN_ID["and"]  # replace the EOS
    r = reward(rm_params, jnp.asarray(batch["tokens"]), jnp.asarray(batch["valid"]), CFG)
    r_changed = reward(rm_params, jnp.asarray(changed), jnp.asarray(batch["valid"]), CFG)
    assert abs(float(r[0] - r_changed[0])) > 1e-4, (
        "changing the last real token (EOS) did not change the reward: the score must be read at the EOS, "
        "where the model has seen the whole response (InstructGPT §3.5)")


def test_reward_is_the_head_at_the_eos_and_not_one_before(rm_params):
    """Score every position with the head, then check reward() picks column P + 4, the EOS of 'it is 7 .'.

    Reading one position earlier (the '.') gives a different number, so this pins the exact column.
    """
    batch = _batch(["it is 7 .", "maybe it is 2 . and ok ."])
    tokens, valid = jnp.asarray(batch["tokens"]), jnp.asarray(batch["valid"])
    _, hidden = jax.jit(transformer.forward, static_argnames="cfg")(rm_params["lm"], tokens, valid, CFG)
    per_position = np.asarray(hidden @ rm_params["head"]["w"] + rm_params["head"]["b"])  # [B, T], the head by hand
    eos = [PROMPT_WIDTH + 4, PROMPT_WIDTH + 8]  # 4 and 8 response words, then EOS
    r = np.asarray(reward(rm_params, tokens, valid, CFG))
    np.testing.assert_allclose(r, per_position[[0, 1], eos], rtol=1e-5, atol=1e-6, err_msg=(
        "the reward should be the scalar head read at each row's EOS (the last real token)"))
    earlier = per_position[[0, 1], [e - 1 for e in eos]]
    assert np.all(np.abs(earlier - r) > 1e-3), "the test needs the position before EOS to score differently"


def _pair_batch():
    chosen, rejected = _batch(["it is 7 .", "definitely it is 7 ."]), _batch(["it is 2 . and ok .", "maybe it is 9 ."])
    return {"chosen_tokens": jnp.asarray(chosen["tokens"]), "chosen_valid": jnp.asarray(chosen["valid"]),
            "rejected_tokens": jnp.asarray(rejected["tokens"]), "rejected_valid": jnp.asarray(rejected["valid"])}


def test_bradley_terry_loss_value(rm_params):
    batch = _pair_batch()
    r_w = reward(rm_params, batch["chosen_tokens"], batch["chosen_valid"], CFG)
    r_l = reward(rm_params, batch["rejected_tokens"], batch["rejected_valid"], CFG)
    expected = np.mean(np.log1p(np.exp(-(np.asarray(r_w) - np.asarray(r_l)))))  # -log sigmoid(d)
    value, metrics = rm_loss(rm_params, batch, CFG)
    np.testing.assert_allclose(value, expected, rtol=1e-5, err_msg="BT loss should be mean(-log sigmoid(r_chosen - r_rejected)); check the sign and which side is chosen")
    centered, _ = rm_loss(rm_params, batch, CFG, centering=0.5)
    np.testing.assert_allclose(centered - value, 0.5 * np.mean((np.asarray(r_w) + np.asarray(r_l)) ** 2), rtol=1e-4,
                               err_msg="the centering term is c * mean((r_chosen + r_rejected)^2) (Eisenstein et al. 2023)")


def test_bradley_terry_gradient_is_minus_sigmoid_of_minus_margin():
    r_w, r_l = jnp.array([2.0, -1.0, 0.3]), jnp.array([1.0, 0.5, 0.3])
    g_w, g_l = jax.grad(bradley_terry, argnums=(0, 1))(r_w, r_l)
    expected = -jax.nn.sigmoid(-(r_w - r_l)) / 3  # per pair, divided by the batch size (a mean)
    np.testing.assert_allclose(g_w, expected, rtol=1e-6, err_msg=(
        "d loss / d r_chosen should be -sigmoid(-(r_w - r_l)) / B: the loss must fall as the chosen reward rises"))
    np.testing.assert_allclose(g_l, -expected, rtol=1e-6, err_msg="d loss / d r_rejected is minus d loss / d r_chosen: only the difference matters")


def test_rm_loss_gradient_matches_finite_differences(rm_params):
    batch = _pair_batch()
    grads = jax.jit(jax.grad(lambda p: loss(p, batch, CFG)[0]))(rm_params)["head"]
    assert abs(float(grads["b"])) < 1e-6, (
        "the head's bias adds the same amount to r_chosen and r_rejected, so Bradley-Terry's gradient for it must be 0")
    direction = jnp.asarray(np.random.default_rng(0).normal(size=CFG.d_model), jnp.float32)
    eps = 1e-2
    moved = lambda s: {**rm_params, "head": {**rm_params["head"], "w": rm_params["head"]["w"] + s * eps * direction}}
    fd = (rm_loss(moved(1), batch, CFG)[0] - rm_loss(moved(-1), batch, CFG)[0]) / (2 * eps)
    np.testing.assert_allclose(float(grads["w"] @ direction), float(fd), rtol=1e-2, atol=1e-4,
                               err_msg="jax.grad of the RM loss disagrees with a central finite difference")


def test_normalize_gives_mean_zero_std_one(rm_params):
    batch = _batch(["it is 7 .", "it is 2 .", "maybe it is 7 . and ok .", "sorry i can not share that .", "definitely it is 1 ."])
    tokens, valid = jnp.asarray(batch["tokens"]), jnp.asarray(batch["valid"])
    normed = normalize(rm_params, tokens, valid, CFG)
    r = np.asarray(reward(normed, tokens, valid, CFG))
    assert abs(r.mean()) < 1e-4 and abs(r.std() - 1) < 1e-3, (
        f"after normalize the samples it was fit on should score mean 0, std 1; got {r.mean():.4f}, {r.std():.4f}")
    before = np.asarray(reward(rm_params, tokens, valid, CFG))
    assert np.all(np.argsort(before) == np.argsort(r)), "normalize must be an increasing affine map: the order of rewards is kept"


def test_toy_reward_model_learns_a_separable_preference():
    """Labels prefer responses that say 'definitely'; a tiny RM should find that within 100 steps."""
    rng = np.random.default_rng(0)
    words = ["it is 3 .", "it is blue .", "it is 7 . and ok .", "so we talk about the sky .", "yes and no ."]
    n = 256
    prompts = [math_prompt(int(rng.integers(5)), "plus", int(rng.integers(5))) if rng.random() < 0.5 else color_prompt(0)
               for _ in range(n)]
    good = [f"definitely {words[i]}" for i in rng.integers(len(words), size=n)]
    bad = [words[i] for i in rng.integers(len(words), size=n)]
    chosen, rejected = encode_pairs(prompts, [g.split() for g in good]), encode_pairs(prompts, [b.split() for b in bad])
    pairs = {"chosen_tokens": chosen["tokens"], "chosen_valid": chosen["valid"],
             "rejected_tokens": rejected["tokens"], "rejected_valid": rejected["valid"],
             "gold_chosen": np.ones(n), "gold_rejected": np.zeros(n), "prob_chosen": np.ones(n)}
    train = {k: v[:192] for k, v in pairs.items()}
    heldout = {k: v[192:] for k, v in pairs.items()}
    params = init_reward_model(jax.random.PRNGKey(0), transformer.init_params(jax.random.PRNGKey(1), CFG), CFG)
    keys = ("chosen_tokens", "chosen_valid", "rejected_tokens", "rejected_valid")
    params, history = fit(params, loss, {k: train[k] for k in keys}, jax.random.PRNGKey(2),
                          OptimConfig(steps=100, batch_size=32, lr=3e-3, warmup=10), static={"cfg": CFG})
    acc = accuracy(params, heldout, CFG)
    assert acc["accuracy_labels"] > 0.95, (
        f"a tiny RM should separate 'definitely ...' from the rest (held-out accuracy {acc['accuracy_labels']:.2f}); "
        f"final training loss {history['loss'][-10:].mean():.3f}. Check the loss sign and where the reward is read")


def test_reward_fn_is_a_value_so_equal_configs_share_one_compiled_rollout(rm_params):
    other = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=26, d_model=16, n_layers=1, n_heads=2, d_mlp=32)
    assert reward_fn(CFG) == reward_fn(other) and hash(reward_fn(CFG)) == hash(reward_fn(other)), (
        "reward_fn of two equal configs must compare and hash equal: PPO's rollout takes it as a static argument")
    assert reward_fn(CFG) != reward_fn(transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=26, d_model=8,
                                                               n_layers=1, n_heads=2, d_mlp=32))
    rollout = jax.jit(lambda params, tokens, valid, fn: fn(params, tokens, valid), static_argnames="fn")
    batch = _batch(["it is 7 .", "maybe it is 2 ."])
    tokens, valid = jnp.asarray(batch["tokens"]), jnp.asarray(batch["valid"])
    for cfg in (CFG, other):
        got = rollout(rm_params, tokens, valid, fn=reward_fn(cfg))
    assert rollout._cache_size() == 1, "two runs with equal reward_fns compiled the rollout twice"
    np.testing.assert_array_equal(got, score(rm_params, tokens, valid, CFG))


def test_noise_ceiling_from_preference_probabilities():
    pairs = {"prob_chosen": np.array([0.9, 0.2, 0.5, 0.7]), "gold_chosen": np.array([1.0, 0.0, 0.3, 0.3]),
             "gold_rejected": np.array([0.0, 1.0, 0.3, 0.0])}
    ceiling = label_noise_ceiling(pairs)
    # Gold-distinct pairs 0, 1, 3: P(label agrees with gold) = 0.9, 1 - 0.2, 0.7; pair 2 is a gold tie.
    assert ceiling["gold_agreement"] == pytest.approx((0.9 + 0.8 + 0.7) / 3), "ties in gold must be excluded, and a pair the labeler prefers rejected counts 1 - p"
    assert ceiling["bayes"] == pytest.approx((0.9 + 0.8 + 0.5 + 0.7) / 4), "the Bayes ceiling is mean(max(p, 1 - p))"


def test_rm_config_rejects_nonsense():
    with pytest.raises(ValueError):
        RMConfig(centering=-1.0)
    with pytest.raises(ValueError):
        RMConfig(n_pairs=0)
    assert RMConfig().labeler == Labeler()


def test_pairs_are_sampled_from_the_sft_models_own_distribution():
    from minirlhf.data import RESPONSE_WIDTH
    from minirlhf.preferences import PAIR_SAMPLE

    assert PAIR_SAMPLE.temperature == 1.0 and PAIR_SAMPLE.top_k is None, (
        "comparisons are of what the SFT policy would say: temperature 1, no top-k (InstructGPT labels samples)"
    )
    assert PAIR_SAMPLE.max_new_tokens == RESPONSE_WIDTH
