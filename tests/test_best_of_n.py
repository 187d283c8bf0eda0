"""Best-of-n: it picks the reward model's argmax, n = 1 is plain sampling, and the KL estimate is right."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import transformer
from minirlhf.best_of_n import best_of_n, best_of_n_kl, finite_best_of_n_kl, kl_bound
from minirlhf.evaluation import sample
from minirlhf.reward_model import init_reward_model, score
from minirlhf.sampling import SampleConfig
from minirlhf.tokenizer import VOCAB_SIZE
from minirlhf.world import color_prompt, math_prompt

CFG = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=26, d_model=16, n_layers=1, n_heads=2, d_mlp=32)
PROMPTS = [math_prompt(3, "plus", 4), color_prompt(1), math_prompt(8, "minus", 5)]
SHORT = SampleConfig(max_new_tokens=6)  # short responses keep the tests quick; the logic does not care


@pytest.fixture(scope="module")
def models():
    policy = transformer.init_params(jax.random.PRNGKey(0), CFG)
    rm = init_reward_model(jax.random.PRNGKey(1), policy, CFG)
    rm = {**rm, "head": {"w": jax.random.normal(jax.random.PRNGKey(2), (CFG.d_model,)), "b": jnp.zeros(())}}
    return policy, rm


def test_best_of_n_picks_the_argmax(models):
    policy, rm = models
    n = 5
    out = best_of_n(jax.random.PRNGKey(3), policy, rm, PROMPTS, CFG, n, SHORT)
    B, T = len(PROMPTS), out.tokens.shape[1]
    assert out.candidates.shape == (B, n, T) and out.candidate_scores.shape == (B, n), "candidates are [B, n, T], scores [B, n]"
    flat, flat_valid = out.candidates.reshape(B * n, T), out.candidate_valid.reshape(B * n, T)
    np.testing.assert_allclose(out.candidate_scores, np.asarray(score(rm, flat, flat_valid, CFG)).reshape(B, n), rtol=1e-5,
                               err_msg="candidate_scores must be the reward model's scores of the candidates, row b*n+i -> [b, i]")
    np.testing.assert_array_equal(out.picks, np.argmax(out.candidate_scores, axis=1), err_msg="best-of-n keeps the highest-scoring candidate")
    for b in range(B):
        np.testing.assert_array_equal(out.tokens[b], out.candidates[b, int(out.picks[b])],
                                      err_msg="the returned tokens must be the picked candidate of the same prompt")
        assert float(out.scores[b]) == pytest.approx(float(np.max(out.candidate_scores[b]))), "scores is the best candidate's score"
    # Each prompt's candidates are answers to *that* prompt: the prompt part repeats n times.
    np.testing.assert_array_equal(out.candidates[:, :, :10], np.repeat(out.tokens[:, None, :10], n, axis=1))


def test_n_equal_one_is_plain_sampling(models):
    policy, rm = models
    key = jax.random.PRNGKey(7)
    out = best_of_n(key, policy, rm, PROMPTS, CFG, n=1, sample_cfg=SHORT)
    plain = sample(policy, CFG, PROMPTS, key, SHORT)
    np.testing.assert_array_equal(out.tokens, plain.tokens, err_msg="best-of-1 must be exactly one ordinary sample (same key, same draws)")
    np.testing.assert_array_equal(out.valid, plain.valid)


def _brute_force_kl(p, scores, n):
    """Enumerate all n-tuples of draws; the pick is the first draw with the highest score."""
    q = np.zeros(len(p))
    for tup in itertools.product(range(len(p)), repeat=n):
        best = max(tup, key=lambda i: scores[i])  # max() keeps the first of equal keys, like argmax
        q[best] += np.prod(p[list(tup)])
    keep = q > 0
    return float(np.sum(q[keep] * np.log(q[keep] / p[keep])))


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_finite_kl_matches_enumeration(n):
    p = np.array([0.45, 0.25, 0.2, 0.1])
    for scores in ([0.1, 0.7, 0.3, -1.0], [0.5, 0.5, 0.2, 0.9]):  # the second has a tie between two responses
        exact = _brute_force_kl(p, np.array(scores), n)
        got = finite_best_of_n_kl(np.log(p), np.array(scores), n)
        assert got == pytest.approx(exact, abs=1e-9), (
            f"n={n}, scores={scores}: q(y) = F(y)^n - F_-(y)^n over responses sorted by reward; ties share pro rata")


def test_finite_kl_respects_the_bound_and_reaches_it_when_mass_is_spread():
    rng = np.random.default_rng(0)
    for n in (2, 4, 16):
        for _ in range(5):
            p = rng.dirichlet(np.ones(20))
            assert finite_best_of_n_kl(np.log(p), rng.normal(size=20), n) <= kl_bound(n) + 1e-9, "KL(best-of-n || pi) <= log n - (n-1)/n"
        uniform = finite_best_of_n_kl(np.zeros(20000), rng.normal(size=20000), n)
        assert uniform == pytest.approx(kl_bound(n), abs=2e-3), "with many equally likely responses the bound is (nearly) tight"
    assert kl_bound(1) == 0.0


def test_best_of_n_kl_on_a_model(models):
    policy, rm = models
    one = best_of_n_kl(jax.random.PRNGKey(0), policy, rm, PROMPTS[:2], CFG, n=1, n_draws=64, sample_cfg=SHORT)
    assert one["kl"] == pytest.approx(0.0, abs=1e-9), "best-of-1 is the base policy: KL 0"
    four = best_of_n_kl(jax.random.PRNGKey(0), policy, rm, PROMPTS[:2], CFG, n=4, n_draws=64, sample_cfg=SHORT)
    assert 0 < four["kl"] <= four["bound"] + 1e-9, f"best-of-4's KL should be in (0, {four['bound']:.3f}], got {four['kl']}"
    assert 0 < four["coverage"] <= 1 + 1e-6, "coverage is the SFT mass of the distinct responses seen: in (0, 1]"
