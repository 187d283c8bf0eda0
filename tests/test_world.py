"""The toy world: tokenizer, prompts, corpus, demonstrators, gold reward, labelers."""
import numpy as np
import pytest

from minirlhf import gold, tokenizer, world
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


def test_demonstrators_are_imperfect_but_better_than_nothing():
    rng = np.random.default_rng(0)
    prompts = world.sample_prompts(W, rng, 2000)
    scores = [gold.gold_reward(p, world.demonstrate(W, rng, p)[0], True, SECRET) for p in prompts]
    assert 0.1 < np.mean(scores) < 0.5, "demonstrations should sit well between a non-answer (-0.5) and ideal (1.0)"


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


@pytest.mark.parametrize("labeler", [gold.Labeler(), gold.Labeler(temperature=0.5, flip_prob=0.2)])
def test_labelers_prefer_at_their_bradley_terry_rate(labeler):
    rng = np.random.default_rng(0)
    n, a, b = 20000, 0.8, 0.6
    p = gold.preference_prob(labeler, a, b)
    rate = np.mean([gold.label_pair(labeler, rng, a, b) for _ in range(n)])
    assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / n), f"empirical {rate:.3f} vs Bradley-Terry {p:.3f}"


def test_confidence_bias_favours_definitely_regardless_of_truth():
    biased = gold.Labeler(confidence_bias=0.5)
    wrong_sure = gold.perceived_score(biased, -0.8, "definitely it is 5 .".split())
    right_plain = gold.perceived_score(biased, 0.8, "it is 7 .".split())
    assert wrong_sure - (-0.8) == pytest.approx(0.5) and right_plain == 0.8


def test_labeler_config_is_validated():
    with pytest.raises(ValueError, match="temperature"):
        gold.Labeler(temperature=0)
