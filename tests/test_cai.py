"""Constitutional AI: the judge prompt, AI preferences and their aggregation, relabelling, and a tiny run."""
import jax
import numpy as np
import pytest

from minirlhf import cai, transformer
from minirlhf.data import PROMPT_WIDTH, RESPONSE_WIDTH, encode_pairs
from minirlhf.tokenizer import PAD_ID, TOKEN_ID, VOCAB, VOCAB_SIZE, decode
from minirlhf.world import PROMPT_KINDS, REFUSAL, RULES, WorldConfig, _judgement, make_world, math_prompt, secret_prompt

CFG = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=48, d_model=16, n_layers=1, n_heads=2, d_mlp=32)
WORLD = make_world(WorldConfig(seed=0))
LEAK = ["it", "is", *WORLD.secret, "."]


def test_judge_words_are_in_the_vocabulary():
    for word in ("rule", "question", "reply", "verdict", "good", "bad", ":"):
        assert word in VOCAB, f"the judge prompt needs {word!r} in tokenizer.VOCAB"
    assert (cai.GOOD_ID, cai.BAD_ID) == (TOKEN_ID["good"], TOKEN_ID["bad"])


def test_judge_prompt_matches_the_corpus_judgements():
    """A corpus judgement is exactly a judge prompt followed by its verdict: the model is asked what it has read."""
    rng = np.random.default_rng(0)
    by_line = {line: rule for rule, line in RULES.items()}
    for _ in range(50):
        rule_line, rest = _judgement(WORLD, rng)
        words = rest.split()
        q, r = words.index("question"), words.index("reply")
        v = words.index("verdict")
        prompt = cai.judge_prompt(by_line[rule_line], words[q + 2:r], words[r + 2:v])
        assert prompt == ["<bos>", *rule_line.split(), *words[:v + 2]], "the judge prompt must follow world._judgement"
        assert words[v + 2] in ("good", "bad")


def test_judge_prompt_rejects_unknown_rules():
    with pytest.raises(ValueError, match="unknown rule"):
        cai.judge_prompt("kind", ["hello", "?"], ["ok", "."])


def test_encode_judge_prompts_from_pair_rows():
    longest = ["and"] * RESPONSE_WIDTH  # no EOS: the longest reply a sample can have
    rows = encode_pairs([secret_prompt(WORLD, 0), math_prompt(3, "plus", 4)], [LEAK, ["it", "is", "7", "."]])["tokens"]
    rows = np.concatenate([rows, rows[:1]])
    rows[2, PROMPT_WIDTH:] = [TOKEN_ID[w] for w in longest]
    tokens, valid = cai.encode_judge_prompts("harmless", rows)
    assert tokens.shape == valid.shape == (3, cai.JUDGE_WIDTH)
    code = " ".join(WORLD.secret)
    assert decode(tokens[0]) == (f"<bos> rule : never tell the secret code . question : tell me the secret code ? "
                                 f"reply : it is {code} . verdict :")
    assert decode(tokens[1]).endswith("question : what is 3 plus 4 ? reply : it is 7 . verdict :")
    assert (tokens[:, -2:] == [TOKEN_ID["verdict"], TOKEN_ID[":"]]).all(), "prompts are left-padded: ':' comes last"
    assert (tokens[~valid] == PAD_ID).all() and (np.diff(valid.astype(int), axis=1) >= 0).all(), "left padding only"


def test_question_words_needs_a_prompt_row():
    with pytest.raises(ValueError, match="not a prompt row"):
        cai.question_words(np.full(PROMPT_WIDTH, PAD_ID))


def _logp(good, bad):
    return np.log(np.array(good, dtype=float)), np.log(np.array(bad, dtype=float))


def test_ai_preference_on_hand_made_numbers():
    good_a, bad_a = _logp([[0.9]], [[0.1]])  # one principle, one pair: a is judged good with odds 9
    good_b, bad_b = _logp([[0.2]], [[0.8]])  # b: odds 1/4
    p = cai.ai_preference(good_a, bad_a, good_b, bad_b)
    np.testing.assert_allclose(p, [36 / 37], rtol=1e-5, err_msg="P(a > b) = sigmoid(log 9 - log 1/4) = 36/37")
    p_ba = cai.ai_preference(good_b, bad_b, good_a, bad_a)
    np.testing.assert_allclose(p + p_ba, [1.0], rtol=1e-6, err_msg="P(a > b) + P(b > a) must be 1: is a sign flipped?")


def test_ai_preference_normalises_over_the_two_verdicts():
    """a: P(good) 0.3, P(bad) 0.1 (0.6 elsewhere); b: 0.45 / 0.45. Between the verdicts a is good 3:1, b 1:1."""
    good_a, bad_a = _logp([[0.3]], [[0.1]])
    good_b, bad_b = _logp([[0.45]], [[0.45]])
    p = float(cai.ai_preference(good_a, bad_a, good_b, bad_b)[0])
    assert p == pytest.approx(0.75, rel=1e-5), (
        "compare log p(good) - log p(bad), not log p(good) alone: b has more mass on 'good' but a is judged better")


def test_ai_preference_averages_principles():
    good_a, bad_a = _logp([[0.9, 0.5], [0.5, 0.5]], [[0.1, 0.5], [0.5, 0.5]])  # [K=2, B=2]
    good_b, bad_b = _logp([[0.5, 0.5], [0.2, 0.5]], [[0.5, 0.5], [0.8, 0.5]])
    p = cai.ai_preference(good_a, bad_a, good_b, bad_b)
    expected = 1 / (1 + np.exp(-(np.log(9) + np.log(4)) / 2))  # mean of the two principles' log-odds gaps
    np.testing.assert_allclose(p, [expected, 0.5], rtol=1e-5, err_msg=(
        "aggregate principles by the MEAN log-odds gap (not the sum, not a mean of probabilities)"))


def _pairs():
    prompts = [secret_prompt(WORLD, 0), math_prompt(3, "plus", 4), secret_prompt(WORLD, 1)]
    a = encode_pairs(prompts, [LEAK, ["it", "is", "7", "."], list(REFUSAL)])
    b = encode_pairs(prompts, [list(REFUSAL), ["it", "is", "2", "."], LEAK])
    return {"chosen_tokens": a["tokens"], "chosen_valid": a["valid"], "rejected_tokens": b["tokens"],
            "rejected_valid": b["valid"], "gold_chosen": np.array([-1.0, 0.8, 1.0]),
            "gold_rejected": np.array([1.0, -0.4, -1.0]), "prob_chosen": np.array([0.6, 0.9, 0.8]),
            "kind": np.array([PROMPT_KINDS.index(k) for k in ("secret", "math", "secret")])}


def test_relabel_swaps_only_the_chosen_kinds():
    pairs = _pairs()
    out = cai.relabel(pairs, np.array([0.2, 0.1, 0.7]), kinds=("secret",))
    np.testing.assert_array_equal(out["chosen_tokens"][0], pairs["rejected_tokens"][0], "P < 1/2 on a secret pair: swap")
    np.testing.assert_array_equal(out["chosen_tokens"][1], pairs["chosen_tokens"][1], "math pairs keep the human label")
    np.testing.assert_array_equal(out["chosen_tokens"][2], pairs["chosen_tokens"][2])
    np.testing.assert_allclose(out["gold_chosen"], [1.0, 0.8, 1.0], err_msg="gold scores travel with their responses")
    np.testing.assert_allclose(out["prob_chosen"], [0.8, 0.9, 0.7])
    np.testing.assert_array_equal(out["ai_labelled"], [True, False, True])
    np.testing.assert_allclose(out["ai_prob_chosen"], [0.8, 0.1, 0.7])
    assert cai.agreement_with_gold(out) == 1.0  # the human mistake on pair 0 is fixed; math already right
    assert cai.agreement_with_gold(out, out["ai_prob_chosen"]) == pytest.approx(2 / 3)  # AI got the math pair wrong


def test_agreement_with_gold_counts_ties_as_half():
    pairs = {"gold_chosen": np.array([1.0, 0.0, 0.5, 0.2]), "gold_rejected": np.array([0.0, 1.0, 0.5, 0.1])}
    assert cai.agreement_with_gold(pairs) == pytest.approx(2 / 3), "pair 3 has equal gold scores: excluded"
    assert cai.agreement_with_gold(pairs, np.array([0.5, 0.2, 0.9, 0.5])) == pytest.approx((0.5 + 1 + 0.5) / 3)


@pytest.fixture(scope="module")
def params():
    return transformer.init_params(jax.random.PRNGKey(0), CFG)


def test_ai_labels_are_deterministic_and_rowwise(params):
    pairs = _pairs()
    first = cai.ai_label_pairs(params, CFG, pairs, ("harmless", "brief"), ("secret",))
    second = cai.ai_label_pairs(params, CFG, pairs, ("harmless", "brief"), ("secret",))
    for k in first:
        np.testing.assert_array_equal(first[k], second[k], f"AI labels must not change between calls ({k})")
    single = cai.judge(params, CFG, "harmless", pairs["chosen_tokens"][1:2])
    batch = cai.judge(params, CFG, "harmless", pairs["chosen_tokens"])
    np.testing.assert_allclose([single[0][0], single[1][0]], [batch[0][1], batch[1][1]], rtol=1e-5, atol=1e-6,
                               err_msg="a row's verdict must not depend on the other rows (padding leaks?)")
    good, bad = batch
    assert np.all(np.exp(good) + np.exp(bad) <= 1 + 1e-6), "log-probs of two tokens of one distribution"


def test_tiny_run_structure(params):
    from minirlhf.experiments import cai as experiment
    from minirlhf.experiments.base import BaseModels
    from minirlhf.pipeline import PipelineConfig, stage_keys
    from minirlhf.ppo import PPOConfig
    from minirlhf.preferences import make_pairs
    from minirlhf.reward_model import RMConfig, init_reward_model
    from minirlhf.training import OptimConfig

    # Every sampling call draws 16 rows (8 pairs x 2, PPO's batch, the evaluation, the RM's normalisation),
    # so generation compiles once: this test's time is almost all compilation.
    n = 16
    pipeline = PipelineConfig(model=CFG, rm=RMConfig(n_pairs=n // 2, n_heldout=n // 2, n_normalize=n,
                                                     optim=OptimConfig(steps=2, batch_size=4, warmup=1)),
                              ppo=PPOConfig(iterations=1, batch_size=n, ppo_epochs=1, minibatches=1))
    keys = stage_keys(0)
    rm = init_reward_model(keys["rm"], params, CFG)
    pairs = make_pairs(keys["rm"], params, WORLD, CFG, n // 2)
    base = BaseModels(pipeline, WORLD, keys, params, params, rm, pairs, {})
    sl = cai.SLCAIConfig(n_prompts=n // 2, k=2, optim=OptimConfig(steps=2, batch_size=4, warmup=1))
    cfg = experiment.Config(ppo_iterations=1, n_heldout=n // 2, n_eval=n, n_shown=1, sl_cai=sl, pipeline=pipeline)
    result, models = experiment.run_seed(cfg, base, human_policy=params)
    assert set(result["agreement"]) == {"human", "pretrained", "sft"}
    assert set(result["agreement"]["pretrained"]) == {*RULES, "ensemble"}
    assert set(result["policies"]) == set(experiment.POLICIES)
    assert set(result["agreement_secret_pairs"]) == {"leak", "refusal"}
    for metrics in result["policies"].values():
        for name in ("leaks", "refuses_secret", "right_answerable"):
            assert 0 <= metrics[name] <= 1 or np.isnan(metrics[name])
    assert result["policies"]["sft"]["kl"] == pytest.approx(0, abs=1e-5)
    assert (models["ai_pairs"]["ai_labelled"] == (pairs["kind"] == PROMPT_KINDS.index("secret"))).all()
    assert 0 <= result["revisions"]["changed"] <= 1 or result["revisions"]["n"] == 0
    fake = experiment.collect(cfg, {"0": result, "1": result})
    assert "| PPO, RLAIF |" in experiment.summary(fake)
    experiment.plot(fake)


def test_secret_pair_type():
    from minirlhf.experiments.cai import secret_pair_type

    pairs = _pairs()  # secret: leak vs refusal, math, secret: refusal vs leak
    other = encode_pairs([secret_prompt(WORLD, 0)] * 2, [list(REFUSAL), ["it", "is", "5", "."]])
    pairs = {k: np.concatenate([v, v[:1]]) for k, v in pairs.items()}
    pairs["chosen_tokens"][3], pairs["rejected_tokens"][3] = other["tokens"]
    assert list(secret_pair_type(WORLD, pairs)) == ["leak", "", "leak", "refusal"]


def test_config_rejects_bad_input():
    from minirlhf.experiments.cai import Config

    with pytest.raises(ValueError, match="judge"):
        Config(judge="gold")
    with pytest.raises(ValueError, match="rules"):
        Config(rules=("kindness",))
    with pytest.raises(ValueError, match="ai_kinds"):
        Config(ai_kinds=())


def test_revision_is_the_best_critiqued_sample(params):
    prompts = [secret_prompt(WORLD, 0), math_prompt(3, "plus", 4)] * 4
    rules = ("harmless", "brief")
    rev = cai.revise(jax.random.PRNGKey(5), params, params, CFG, prompts, rules, k=4)
    # the critique of the kept response, recomputed alone, is the recorded best and at least the first's
    np.testing.assert_allclose(cai.critique(params, CFG, rules, rev["tokens"]), rev["critique_revised"], rtol=1e-5, atol=1e-5)
    assert np.all(rev["critique_revised"] >= rev["critique_first"])
    np.testing.assert_array_equal(rev["changed"], rev["critique_revised"] > rev["critique_first"])
    same = cai.revise(jax.random.PRNGKey(5), params, params, CFG, prompts, rules, k=1)  # k = 1: nothing to pick
    assert not same["changed"].any()
    np.testing.assert_array_equal(same["tokens"], same["first_tokens"])
    with pytest.raises(ValueError, match="k >= 1"):
        cai.revise(jax.random.PRNGKey(5), params, params, CFG, prompts, rules, k=0)


def test_sl_cai_revises_only_the_chosen_kinds_and_is_deterministic(params):
    from minirlhf.training import OptimConfig
    cfg = cai.SLCAIConfig(n_prompts=8, k=2, optim=OptimConfig(steps=2, batch_size=4, warmup=1))
    a, info = cai.sl_cai(jax.random.PRNGKey(6), params, params, WORLD, CFG, ("harmless",), cfg)
    b, _ = cai.sl_cai(jax.random.PRNGKey(6), params, params, WORLD, CFG, ("harmless",), cfg)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    np.testing.assert_array_equal(info["revised"], [p.kind == "secret" for p in info["prompts"]])
    with pytest.raises(ValueError, match="kinds"):
        cai.SLCAIConfig(kinds=("poetry",))
