"""PPO's diagnostics: the value model's explained variance (against a numpy reference, with padding, on a
rollout), and `grade.mistakes.planted`, which runs the library with a catalogued mistake swapped in."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import ppo, transformer
from minirlhf.data import PROMPT_WIDTH, encode_prompts
from minirlhf.grade.mistakes import describe, planted
from minirlhf.sampling import SampleConfig, generate
from minirlhf.tokenizer import EOS_ID, PAD_ID, VOCAB_SIZE
from minirlhf.world import make_world, sample_prompts

R = 6  # response width: short, so the one compile stays small
TINY = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=PROMPT_WIDTH + R, d_model=16, n_layers=1, n_heads=2,
                               d_mlp=32)


def numpy_explained_variance(values, returns, mask):
    """1 - Var[R - V] / Var[R] over the real tokens, in float64; 0 when the returns do not vary."""
    v, r = np.asarray(values, np.float64)[mask], np.asarray(returns, np.float64)[mask]
    return 0.0 if np.var(r) <= ppo.NO_SPREAD else 1.0 - np.var(r - v) / np.var(r)


def masked_batch(seed, B=5, T=9):
    """values, returns and a mask with junk off it; row 0 is masked out entirely, row 1 is masked in entirely."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T - 2, size=B)
    start = 2
    mask = (np.arange(T) >= start) & (np.arange(T) < start + lengths[:, None])
    mask[0], mask[1] = False, True
    returns = rng.normal(0.5, 1.0, (B, T))
    values = returns + rng.normal(0, 0.6, (B, T))  # a value model that is partly right
    junk = rng.normal(0, 100, (B, T))
    return np.where(mask, values, junk), np.where(mask, returns, -junk), mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_explained_variance_matches_numpy_over_the_real_tokens_only(seed):
    values, returns, mask = masked_batch(seed)
    got = float(ppo.explained_variance(*map(jnp.asarray, (values, returns, mask))))
    want = numpy_explained_variance(values, returns, mask)
    assert np.isclose(got, want, atol=1e-4), (
        f"explained variance {got:.4f}, expected {want:.4f}: both variances are over the real response tokens "
        f"(mask) only; padding and prompt positions hold junk here")


def test_explained_variance_reads_1_for_a_perfect_value_model_0_for_the_mean_and_below_0_for_worse():
    _, returns, mask = masked_batch(3)
    ev = lambda v: float(ppo.explained_variance(jnp.asarray(v), jnp.asarray(returns), jnp.asarray(mask)))
    mean = returns[mask].mean()
    assert np.isclose(ev(returns), 1.0, atol=1e-6), "V = R explains all of the returns' variance"
    assert np.isclose(ev(np.full_like(returns, mean)), 0.0, atol=1e-5), "a constant V explains none of it"
    assert ev(2 * mean - returns) < 0, "a V that mirrors the returns is worse than a constant: below 0"


def test_constant_returns_give_0_not_nan():
    """Var[R] = 0 leaves nothing to explain (baselines' version returns NaN, which would stop training)."""
    _, _, mask = masked_batch(4)
    returns = np.full(mask.shape, 0.3, np.float32)  # 0.3 has no exact float: its mean can miss it by a rounding
    for values in (returns, np.zeros_like(returns), np.random.default_rng(0).normal(size=mask.shape)):
        got = float(ppo.explained_variance(jnp.asarray(values), jnp.asarray(returns), jnp.asarray(mask)))
        assert got == 0.0, f"constant returns should give explained variance 0 (nothing to explain), got {got}"


def test_make_rollout_logs_the_value_models_explained_variance():
    world = make_world()
    policy = transformer.init_params(jax.random.PRNGKey(0), TINY)
    value = ppo.init_value_params(policy, TINY)
    value["head"]["w"] = jnp.ones(TINY.d_model)  # a head that is not 0, so that V varies
    tokens, valid = map(jnp.asarray, encode_prompts(sample_prompts(world, np.random.default_rng(0), 8)))
    gen = generate(policy, tokens, valid, jax.random.PRNGKey(1), TINY, SampleConfig(max_new_tokens=R), EOS_ID, PAD_ID)
    length = lambda reward_params, tokens, valid: jnp.sum(valid, axis=1) / 10.0  # any score that varies
    cfg = ppo.PPOConfig(batch_size=8, response_width=R)
    rollout, metrics = ppo.make_rollout({"policy": policy, "value": value}, policy, None, gen.tokens, gen.valid,
                                        length, TINY, cfg)
    want = numpy_explained_variance(rollout.values, rollout.returns, np.asarray(rollout.mask))
    assert "val/explained_variance" in metrics, "make_rollout should log val/explained_variance"
    assert np.isclose(float(metrics["val/explained_variance"]), want, atol=1e-4), (
        f"val/explained_variance {float(metrics['val/explained_variance']):.4f}, expected {want:.4f} from the "
        f"rollout's values V_old and returns (before the update)")


def test_a_planted_mistake_runs_inside_the_with_only():
    scores, mask = jnp.array([1.0]), jnp.array([[False, True, True, False]])
    logprobs, ref_logprobs = jnp.full((1, 4), -1.0), jnp.full((1, 4), -2.0)  # k1 = +1 nat on every token
    shaped = lambda: np.asarray(ppo.kl_shaped_rewards(scores, logprobs, ref_logprobs, mask, 0.5))
    right = shaped()
    with planted("kl_shaped_rewards_sign_flipped") as wrong_fn:
        wrong = shaped()
    assert wrong_fn.__name__ == "kl_shaped_rewards" and wrong_fn is not ppo.kl_shaped_rewards
    np.testing.assert_allclose(right[0], [0, -0.5, 0.5, 0], err_msg="the library's: each token pays beta * k1")
    np.testing.assert_allclose(wrong[0], [0, 0.5, 1.5, 0], err_msg="planted: each token earns beta * k1")
    np.testing.assert_allclose(shaped(), right, err_msg="after the `with`, the library's function is back")
    assert "instead of subtracting" in describe("kl_shaped_rewards_sign_flipped")


def test_an_unknown_mistake_is_named_with_the_catalogue_before_anything_runs(monkeypatch, tmp_path):
    from minirlhf.grade import mistakes
    with pytest.raises(FileNotFoundError, match="the catalogue has .*kl_shaped_rewards_sign_flipped"):
        with planted("kl_shaped_rewards_typo"):
            pass
    monkeypatch.setattr(mistakes, "CATALOGUE", tmp_path / "missing")  # as after `pip install .`: no tests/ folder
    with pytest.raises(FileNotFoundError, match="ships with a clone"):
        describe("kl_shaped_rewards_sign_flipped")
