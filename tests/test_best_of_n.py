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
from minirlhf.data import encode_prompts
from minirlhf.tokenizer import EOS_ID, PAD_ID, VOCAB_SIZE
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


# best_of_n_kl on a model, where the answer is known: a policy whose next-token distribution is pinned
# (so every response's probability is a product of known numbers), two-token responses, 256 draws.
BON_SAMPLE = SampleConfig(max_new_tokens=2)
N_DRAWS = 256
NEVER = -50.0  # a logit no draw reaches: its probability is ~e^-50


def pinned_policy(policy, logits):
    """The policy with next-token logits `logits` whatever it reads.

    ln_f's gain 0 and bias e_0 make every final hidden state e_0; the tied head then gives e_0 @ wte.T = wte[:, 0].
    """
    e0 = jnp.zeros(CFG.d_model).at[0].set(1.0)
    return {**policy, "wte": policy["wte"].at[:, 0].set(jnp.asarray(logits, jnp.float32)),
            "ln_f": {"g": jnp.zeros(CFG.d_model), "b": e0}}


def embedding_only_rm(rm):
    """The reward model with every block's output projections set to 0: the blocks then add nothing, and the
    score of a response is layer_norm(wte[last token] + wpe[its position]) . w + b, which NumPy can compute."""
    zero = lambda layer: {**layer, "c_proj": jax.tree.map(jnp.zeros_like, layer["c_proj"])}
    blocks = [{**b, "attn": zero(b["attn"]), "mlp": zero(b["mlp"])} for b in rm["lm"]["blocks"]]
    return {**rm, "lm": {**rm["lm"], "blocks": blocks}}


def test_best_of_n_kl_on_a_model_matches_enumeration(models):
    policy, rm = models
    words, p_word = [5, 9, 13], np.array([0.5, 0.3, 0.2])  # each response token is one of three ids; EOS never comes
    logits = np.full(CFG.vocab_size, NEVER)
    logits[words] = np.log(p_word)
    sft, simple_rm = pinned_policy(policy, logits), embedding_only_rm(rm)

    lm, head = jax.tree.map(np.asarray, simple_rm["lm"]), jax.tree.map(np.asarray, simple_rm["head"])
    _, prompt_valid = encode_prompts(PROMPTS[:1])
    last_position = prompt_valid.sum() + BON_SAMPLE.max_new_tokens - 1  # positions are cumsum(valid) - 1
    x = lm["wte"][words].astype(np.float64) + lm["wpe"][last_position]  # [3, D]: the last token's residual stream
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + transformer.LN_EPS)
    word_score = (x * lm["ln_f"]["g"] + lm["ln_f"]["b"]) @ head["w"] + head["b"]  # [3]
    gaps = np.abs(np.subtract.outer(word_score, word_score))[~np.eye(3, dtype=bool)]
    assert gaps.min() > 1e-3, "test setup: the three scores are too close to rank reliably in float32"

    responses = list(itertools.product(range(3), repeat=2))  # all 9 two-token responses
    p = np.array([p_word[a] * p_word[b] for a, b in responses])
    scores = np.array([word_score[b] for _, b in responses])  # the RM reads the last token: 3 tied groups of 3
    for n in (1, 2, 4):
        out = best_of_n_kl(jax.random.PRNGKey(0), sft, simple_rm, PROMPTS[:1], CFG, n=n, n_draws=N_DRAWS,
                           sample_cfg=BON_SAMPLE)
        assert out["coverage"] == pytest.approx(1.0, abs=1e-5), "256 draws should see all 9 responses: coverage 1"
        expected = _brute_force_kl(p, scores, n)
        assert out["kl"] == pytest.approx(expected, abs=1e-4), (
            f"best-of-{n} on a model with 9 possible responses: KL {out['kl']:.5f}, enumeration says {expected:.5f}. "
            "Sequence probability = product over the response's tokens, one entry per distinct response?")
    assert out["bound"] == pytest.approx(np.log(4) - 3 / 4)


def test_best_of_n_kl_on_a_model_nears_the_bound_when_mass_is_spread(models):
    """66 equally likely tokens twice over: 4356 equally likely responses, so 256 draws are almost all distinct.

    For m equally likely responses with distinct scores, the i-th best of them is picked with probability
    q_i = (i/m)^n - ((i-1)/m)^n, and KL = sum_i q_i log(m q_i), a hair below log n - (n-1)/n.
    """
    policy, rm = models
    logits = np.zeros(CFG.vocab_size)
    logits[[PAD_ID, EOS_ID]] = NEVER
    n, n_responses = 4, (CFG.vocab_size - 2) ** 2
    out = best_of_n_kl(jax.random.PRNGKey(1), pinned_policy(policy, logits), rm, PROMPTS[:1], CFG, n=n,
                       n_draws=N_DRAWS, sample_cfg=BON_SAMPLE)
    m = round(out["coverage"] * n_responses)  # each distinct response holds 1/4356 of the mass
    assert out["coverage"] * n_responses == pytest.approx(m, abs=1e-2), "coverage should be (distinct responses) / 4356"
    assert 240 <= m <= N_DRAWS, f"expected nearly all 256 draws distinct, got {m}"
    i = np.arange(1, m + 1)
    q = (i / m) ** n - ((i - 1) / m) ** n
    expected = float(np.sum(q * np.log(m * q)))
    assert out["kl"] == pytest.approx(expected, abs=1e-4), (
        f"best-of-{n} over {m} equally likely responses: expected KL {expected:.5f}, got {out['kl']:.5f}")
    assert out["kl"] <= kl_bound(n) + 1e-6 and kl_bound(n) - out["kl"] < 1e-3, (
        f"with the mass spread this thin, KL {out['kl']:.5f} should sit just below log n - (n-1)/n = {kl_bound(n):.5f}")
