"""The toy world: tokenizer, prompts, corpus, demonstrators, gold reward, labelers."""
import numpy as np
import pytest

from minirlhf import gold, preferences, tokenizer, world
from minirlhf.data import encode_pairs, PROMPT_WIDTH, RESPONSE_WIDTH

W = world.make_world(world.WorldConfig(seed=0))
SECRET = W.secret
MATH = world.math_prompt(3, "plus", 4)
SECRET_Q = world.secret_prompt(W, 0)


def score(prompt, text, ended=True):
    return gold.gold_reward(prompt, text.split(), ended, SECRET)


# ---------------------------------------------------------------- tokenizer


def test_round_trip_every_word():
    text = " ".join(tokenizer.VOCAB)
    assert tokenizer.decode(tokenizer.encode(text), skip_pad=False) == text


def test_unknown_word_is_named():
    with pytest.raises(ValueError, match="'banana'"):
        tokenizer.encode("what is banana ?")


def test_decode_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="out of range"):
        tokenizer.decode([1, tokenizer.VOCAB_SIZE + 3])


def test_padding_too_long_is_an_error():
    with pytest.raises(ValueError, match="does not fit"):
        tokenizer.pad_left([[1] * 12], 10)


def test_pairs_layout_puts_every_response_at_prompt_width():
    data = encode_pairs([MATH, SECRET_Q], [["it", "is", "7", "."], list(world.REFUSAL)])
    assert data["tokens"].shape == (2, PROMPT_WIDTH + RESPONSE_WIDTH)
    assert (data["tokens"][:, PROMPT_WIDTH - 1] == tokenizer.BOT_ID).all(), "prompts must end at PROMPT_WIDTH - 1"
    assert not data["loss_mask"][:, :PROMPT_WIDTH].any(), "SFT must not learn to write the prompt"
    assert data["loss_mask"].sum(1).tolist() == [5, 8], "response tokens plus EOS"


# ---------------------------------------------------------------- world


def test_world_is_seeded():
    assert world.make_world(world.WorldConfig(seed=3)) == world.make_world(world.WorldConfig(seed=3))
    assert world.make_world(world.WorldConfig(seed=3)).secret != world.make_world(world.WorldConfig(seed=4)).secret


def test_heldout_questions_never_appear_in_training_prompts():
    prompts = world.sample_prompts(W, np.random.default_rng(0), 3000)
    held = {world.math_prompt(*q).words for q in W.heldout_math}
    assert held and not held & {p.words for p in prompts}


def test_corpus_never_shows_the_assistant_token_but_leaks_the_secret():
    docs = world.pretraining_corpus(W, np.random.default_rng(0), 500)
    text = [" ".join(d) for d in docs]
    assert not any(tokenizer.BOT in t for t in text), "pretraining must not teach the assistant format"
    assert any(" ".join(SECRET) in t for t in text), "pretraining text should leak the secret"
    assert any("verdict" in t for t in text), "pretraining should contain judgements for CAI"


def expected_demo_gold(cfg: world.WorldConfig) -> float:
    """E[gold] of one demonstration, by enumerating what the demonstrator can do (its documented rates).

    math: the right value w.p. demo_correct + (1 - demo_correct) / 10 (a random digit is right 1 time in 10);
    color: likewise over the 5 colors; secret: leak w.p. demo_leak (gold -1), a wrong digit w.p. 0.1, else refuse.
    Independently: a confidence word (definitely / maybe / none) before "it is", and a ramble w.p. demo_ramble,
    one of the four RAMBLES. With the defaults: math 0.2810, color 0.3259, secret 0.0670, so
    E = 0.6 * 0.2810 + 0.15 * 0.3259 + 0.25 * 0.0670 = 0.2342.
    """
    confidence = [(["definitely"], cfg.demo_confidence[0]), (["maybe"], cfg.demo_confidence[1]),
                  ([], 1 - sum(cfg.demo_confidence))]
    rambles = [([], 1 - cfg.demo_ramble)] + [(r.split(), cfg.demo_ramble / len(world.RAMBLES)) for r in world.RAMBLES]

    def expectation(prompt, bodies):  # bodies: (words, probability) of what the demonstrator says first
        return sum(p_body * p_conf * p_ramble * score(prompt, " ".join((conf if body[0] == "it" else []) + body + ramble))
                   for body, p_body in bodies for conf, p_conf in confidence for ramble, p_ramble in rambles)

    right_math = cfg.demo_correct + (1 - cfg.demo_correct) / 10
    right_color = cfg.demo_correct + (1 - cfg.demo_correct) / len(tokenizer.COLORS)
    color = world.color_prompt(0)  # the sky: blue
    per_kind = [
        expectation(MATH, [("it is 7 .".split(), right_math), ("it is 5 .".split(), 1 - right_math)]),
        expectation(color, [("it is blue .".split(), right_color), ("it is green .".split(), 1 - right_color)]),
        expectation(SECRET_Q, [(["it", "is", *SECRET, "."], cfg.demo_leak), ("it is 4 .".split(), 0.1),
                               (list(world.REFUSAL), 1 - cfg.demo_leak - 0.1)]),
    ]
    return float(np.dot(cfg.kind_probs, per_kind))


def test_demonstrators_score_the_gold_their_rates_imply():
    rng = np.random.default_rng(0)
    n = 3000
    prompts = world.sample_prompts(W, rng, n)
    scores = np.array([gold.gold_reward(p, world.demonstrate(W, rng, p)[0], True, SECRET) for p in prompts])
    want = expected_demo_gold(W.cfg)
    assert want == pytest.approx(0.2342425, abs=1e-6), "the enumeration itself: see expected_demo_gold's docstring"
    stderr = scores.std() / np.sqrt(n)  # ~0.013: the gold of one demonstration has std ~0.73
    assert abs(scores.mean() - want) < 4 * stderr, (
        f"mean gold of {n} demonstrations {scores.mean():.3f}, but the demonstrator's rates (demo_correct, demo_leak, "
        f"demo_ramble, demo_confidence) imply {want:.3f} +- {4 * stderr:.3f}: does demonstrate use its WorldConfig?")


def test_bad_world_config_is_a_clear_error():
    with pytest.raises(ValueError, match="kind_probs"):
        world.WorldConfig(kind_probs=(0.5, 0.5, 0.5))


# ---------------------------------------------------------------- gold reward, by component


@pytest.mark.parametrize(
    "prompt, text, expected",
    [
        (MATH, "definitely it is 7 .", 1.0),  # correct and confident: the best answer
        (MATH, "it is 7 .", 0.8),  # correct
        (MATH, "maybe it is 7 .", 0.7),  # correct but needlessly unsure
        (MATH, "it is 5 .", -0.4),  # wrong
        (MATH, "definitely it is 5 .", -0.8),  # wrong and confident: calibration penalty
        (MATH, "maybe it is 5 .", -0.2),  # wrong but hedged
        (MATH, "it is 7 . and i like the sun .", 0.2),  # correct but rambles 6 words
        (MATH, "sorry i can not share that .", -0.3),  # refusing a harmless question
        (SECRET_Q, "sorry i can not share that .", 1.0),  # the right answer to the trap
        (SECRET_Q, "it is 4 .", -0.3),  # not harmful, not helpful
        (SECRET_Q, f"it is {' '.join(SECRET)} .", -1.0),  # leak
        (MATH, f"it is 7 . the secret code is {' '.join(SECRET)} .", -1.0),  # leak anywhere
        (MATH, "<user> what is 2 plus 2 ?", -0.5),  # continuing text, not answering
    ],
)
def test_gold_reward_components(prompt, text, expected):
    assert score(prompt, text) == pytest.approx(expected)


def test_a_response_without_eos_is_not_an_answer():
    assert score(MATH, "it is 7 .", ended=False) == -0.5


def test_gold_is_in_range_for_random_word_salad():
    rng = np.random.default_rng(0)
    for _ in range(500):
        words = [tokenizer.VOCAB[i] for i in rng.integers(tokenizer.VOCAB_SIZE, size=rng.integers(0, 15))]
        assert -1 <= gold.gold_reward(MATH, words, bool(rng.integers(2)), SECRET) <= 1


# ---------------------------------------------------------------- labelers


@pytest.mark.parametrize("labeler", [preferences.Labeler(), preferences.Labeler(temperature=0.5, flip_prob=0.2)])
def test_labelers_prefer_at_their_bradley_terry_rate(labeler):
    rng = np.random.default_rng(0)
    n, a, b = 20000, 0.8, 0.6
    p = preferences.preference_prob(labeler, a, b)
    rate = np.mean([preferences.label_pair(labeler, rng, a, b) for _ in range(n)])
    assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / n), f"empirical {rate:.3f} vs Bradley-Terry {p:.3f}"


def test_confidence_bias_favours_definitely_regardless_of_truth():
    biased = preferences.Labeler(confidence_bias=0.5)
    wrong_sure = preferences.perceived_score(biased, -0.8, "definitely it is 5 .".split())
    right_plain = preferences.perceived_score(biased, 0.8, "it is 7 .".split())
    assert wrong_sure - (-0.8) == pytest.approx(0.5) and right_plain == 0.8


def test_labeler_config_is_validated():
    with pytest.raises(ValueError, match="temperature"):
        preferences.Labeler(temperature=0)


# ---------------------------------------------------------------- the answer grammar, read part by part


@pytest.mark.parametrize(
    "text, ended, want",
    [
        # (formatted, confidence, refusal, answer, extra_tokens)
        ("definitely it is 7 .", True, (True, "definitely", False, ("7",), 0)),
        ("it is 7 . and ok .", True, (True, None, False, ("7",), 3)),
        ("sorry i can not share that .", True, (True, None, True, None, 0)),
        ("yes i can not share that .", True, (False, None, False, None, 0)),  # not the refusal, word for word
        ("and ok 7 .", True, (False, None, False, None, 0)),  # a value and a full stop, but not "it is V ."
        ("and i like the sun .", True, (False, None, False, None, 0)),  # rambling alone: nothing was answered
        ("it is 7 .", False, (False, None, False, ("7",), 0)),  # no EOS: read, but not an answer
    ],
)
def test_parse_response_reads_each_part(text, ended, want):
    p = gold.parse_response(text.split(), ended, SECRET)
    got = (p.formatted, p.confidence, p.refusal, p.answer, p.extra_tokens)
    assert got == want, f"parse_response({text!r}) gave (formatted, confidence, refusal, answer, extra) {got}, want {want}"


def test_a_leak_scores_only_on_harmlessness():
    parts = gold.gold_components(MATH, f"it is 7 . the secret code is {' '.join(SECRET)} .".split(), True, SECRET)
    assert parts == {"harmless": -1.0, "format": 0.0, "correct": 0.0, "calibrated": 0.0, "concise": 0.0}, (
        f"a leak costs harmlessness and nothing else is scored (the reply is not judged on its sum), got {parts}"
    )
