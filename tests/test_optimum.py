"""The KL-regularised optimum on a finite support: pi* ∝ pi_sft exp(r / beta), its KL, its limits, the support."""
import jax
import numpy as np
import pytest

from minirlhf import optimum, reward_model, transformer
from minirlhf.best_of_n import distinct_responses
from minirlhf.data import PROMPT_WIDTH, RESPONSE_WIDTH
from minirlhf.sampling import sample
from minirlhf.tokenizer import VOCAB_SIZE
from minirlhf.world import math_prompt

# A hand-made support: four responses holding 0.9 of SFT's mass (0.4, 0.3, 0.15, 0.05), with their rewards.
PI = np.array([0.4, 0.3, 0.15, 0.05])
LOGPROBS = np.log(PI)
REWARDS = np.array([0.2, 1.0, -0.5, 0.9])


def brute_force(beta):
    """pi* by the definition, with plain exp and a sum: pi_sft / c times exp(r / beta), divided by the total."""
    unnorm = (PI / PI.sum()) * np.exp(REWARDS / beta)
    return unnorm / unnorm.sum()


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_weights_are_the_softmax_of_log_pi_plus_r_over_beta(beta):
    w = np.exp(optimum.log_weights(LOGPROBS, REWARDS, beta))
    assert np.allclose(w, brute_force(beta), atol=1e-12), (
        f"pi* should be pi_sft(y) exp(r(y)/beta) normalised over the support, got {w} not {brute_force(beta)}: "
        "check the sign of r/beta, and that the normaliser is a log-sum-exp over the support")
    assert np.isclose(w.sum(), 1.0)


def test_a_huge_beta_gives_back_sft_renormalised_with_no_kl():
    log_w = optimum.log_weights(LOGPROBS, REWARDS, 1e9)
    assert np.allclose(np.exp(log_w), PI / PI.sum(), atol=1e-8), "beta -> infinity: the penalty wins, pi* = pi_sft"
    assert abs(optimum.kl_to_sft(log_w, LOGPROBS)) < 1e-8, "KL to the reference itself is 0"


def test_a_tiny_beta_puts_all_weight_on_the_best_response_without_overflow():
    w = np.exp(optimum.log_weights(LOGPROBS, REWARDS, 1e-6))  # r / beta ~ 1e6: exp would overflow
    assert np.all(np.isfinite(w)) and w[np.argmax(REWARDS)] > 1 - 1e-12, (
        f"beta -> 0: pi* is the argmax of r, got {w}; exp(r / beta) overflows unless the max is taken out first")
    kl = optimum.kl_to_sft(np.log(np.maximum(w, 1e-300)), LOGPROBS)
    assert np.isclose(kl, -np.log(PI[1] / PI.sum()), atol=1e-9), "all mass on one response: KL = -log pi~(it)"


def test_ties_at_the_top_share_in_proportion_to_sft():
    w = np.exp(optimum.log_weights(LOGPROBS, np.array([1.0, 1.0, 0.0, 0.0]), 1e-6))
    assert np.allclose(w[:2], [0.4 / 0.7, 0.3 / 0.7], atol=1e-9)


@pytest.mark.parametrize("beta", [0.3, 1.0, 3.0])
def test_kl_is_expected_reward_over_beta_minus_log_z(beta):
    """KL(pi* || pi~) = E_pi*[r] / beta - log Z~ (with pi~ = pi_sft renormalised on the support): the identity
    the direct sum must agree with; a Z over the raw pi_sft (mass 0.9) would be off by log 0.9."""
    log_w = optimum.log_weights(LOGPROBS, REWARDS, beta)
    direct = optimum.kl_to_sft(log_w, LOGPROBS)
    identity = optimum.expect(log_w, REWARDS) / beta - optimum.log_partition(LOGPROBS, REWARDS, beta)
    assert np.isclose(direct, identity, atol=1e-12), f"direct sum {direct} vs E[r]/beta - log Z {identity}"
    w = brute_force(beta)
    assert np.isclose(direct, np.sum(w * np.log(w / (PI / PI.sum())))), "KL is to pi_sft renormalised on the support"


def test_the_optimum_beats_every_other_policy_on_its_objective():
    beta = 0.5
    best = optimum.optimum(LOGPROBS, REWARDS, beta)
    assert np.isclose(best["objective"], best["reward"] - beta * best["kl"]), "J(pi*) = beta log Z = E[r] - beta KL"
    rng = np.random.default_rng(0)
    ref = PI / PI.sum()
    for q in rng.dirichlet(np.ones(4), size=200):
        j = q @ REWARDS - beta * np.sum(q * np.log(q / ref))
        assert j <= best["objective"] + 1e-12, "no policy on the support has a higher E[r] - beta KL than pi*"


def test_optimum_reports_other_values_the_restricted_kl_and_rejects_beta_zero():
    gold = np.array([0.0, 1.0, 0.0, -1.0])
    out = optimum.optimum(LOGPROBS, REWARDS, 0.5, {"gold": gold})
    assert np.isclose(out["gold"], brute_force(0.5) @ gold)
    assert np.isclose(out["kl_restricted"] - out["kl"], -np.log(0.9)), (
        "as a policy that stays on the support, pi*'s KL to the full pi_sft is KL to pi~ plus log(1 / coverage)")
    assert np.isclose(out["objective_restricted"], out["reward"] - 0.5 * out["kl_restricted"])
    with pytest.raises(ValueError, match="beta > 0"):
        optimum.log_weights(LOGPROBS, REWARDS, 0.0)


def test_coverage_and_renormalised():
    assert np.isclose(optimum.coverage(LOGPROBS), 0.9), "coverage is the SFT mass the support holds"
    assert np.isclose(np.exp(optimum.renormalised(LOGPROBS)).sum(), 1.0)


# ---------------------------------------------------------------- the support of a real (tiny) model

TINY = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=PROMPT_WIDTH + RESPONSE_WIDTH, d_model=16, n_layers=1,
                               n_heads=2, d_mlp=32)


PROMPT = math_prompt(3, "plus", 4)


@pytest.fixture(scope="module")
def peaked():
    """A tiny untrained model made nearly deterministic (a large final layer-norm gain sharpens its logits), so
    64 draws repeat responses; its reward model; and the draw key."""
    key_lm, key_head, key_draw = jax.random.split(jax.random.PRNGKey(0), 3)
    lm = transformer.init_params(key_lm, TINY)
    lm = {**lm, "ln_f": {**lm["ln_f"], "g": lm["ln_f"]["g"] * 50.0}}
    return lm, {"lm": lm, "head": transformer.init_scalar_head(key_head, TINY)}, key_draw


def test_the_support_holds_each_drawn_response_once(peaked):
    lm, rm, key = peaked
    s = optimum.draw_support(key, lm, rm, PROMPT, TINY, draws=64)
    gen = sample(lm, TINY, [PROMPT] * 64, key)  # the same draws
    drawn = [tuple(row[PROMPT_WIDTH:]) for row in np.asarray(gen.tokens)]
    assert len(set(drawn)) < 64, "the test needs repeated draws (make the model more peaked)"
    assert sorted(tuple(row[PROMPT_WIDTH:]) for row in s.tokens) == sorted(set(drawn)), (
        "the support is every distinct response drawn, each exactly once")
    assert s.counts.sum() == 64 and all(s.counts[i] == drawn.count(tuple(row[PROMPT_WIDTH:]))
                                        for i, row in enumerate(s.tokens)), "counts: how many draws were each response"
    assert 0 < optimum.coverage(s.logprobs) <= 1 + 1e-6, (
        f"distinct responses hold at most all of SFT's mass, got coverage {optimum.coverage(s.logprobs)}: "
        "a response drawn twice was counted twice")


def test_the_support_log_probs_are_the_samplers_and_the_scores_the_rms(peaked):
    lm, rm, key = peaked
    s = optimum.draw_support(key, lm, rm, PROMPT, TINY, draws=64)
    gen = sample(lm, TINY, [PROMPT] * 64, key)
    keep = distinct_responses(np.asarray(gen.tokens))
    assert np.allclose(s.logprobs, np.asarray(gen.logprobs).sum(axis=1)[keep], atol=1e-4), (
        "log pi_sft(y|x) from the forward pass should equal the sum of the sampler's token log-probs (EOS "
        "included, prompt and padding not)")
    assert np.allclose(s.scores, np.asarray(reward_model.score(rm, gen.tokens, gen.valid, TINY))[keep], atol=1e-5)
