"""The token-level rewards: the jittable gold equals the Python gold, the strict verifier checks the sum exactly,
the lax checker accepts too much, the plus-only checker pays a wrong answer, and the reward functions wire the
scale, the chosen checker and the RM in."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import transformer, verifiers
from minirlhf.data import PROMPT_WIDTH, RESPONSE_WIDTH, encode_pairs
from minirlhf.gold import gold_reward
from minirlhf.tokenizer import EOS_ID, PAD_ID, TOKEN_ID, VOCAB, VOCAB_SIZE
from minirlhf.world import (RAMBLES, REFUSAL, WorldConfig, color_prompt, demonstrate, make_world, math_prompt,
                            sample_prompts, secret_prompt)

WORLD = make_world(WorldConfig(seed=3))
CODE = " ".join(WORLD.secret)
SECRET = verifiers.secret_ids(WORLD)
WIDTH = PROMPT_WIDTH + RESPONSE_WIDTH


def layout(prompts, texts, cut=()):
    """[B, P + R] tokens for these replies; rows in `cut` lose their EOS (cut off by the response width)."""
    tokens = np.array(encode_pairs(prompts, [t.split() for t in texts])["tokens"])
    for i in cut:
        tokens[i, PROMPT_WIDTH:][tokens[i, PROMPT_WIDTH:] == EOS_ID] = PAD_ID
    return tokens


def python_gold(prompts, tokens):
    """The specification: decode each reply and score it with `gold.gold_reward`."""
    from minirlhf.data import decode_responses
    return np.array([gold_reward(p, w, ended, WORLD.secret) for p, (w, ended) in zip(prompts, decode_responses(tokens))])


def random_replies(rng, n):
    """Replies a policy might write: grammatical ones, near misses, word salad, mid-reply padding, no EOS."""
    near = ["it", "is", ".", "definitely", "maybe", "sorry", *REFUSAL, *WORLD.secret, "3", "4", "7", "blue", "sky",
            "<bot>", "<user>", "<bos>", "<pad>", "and", "ok", "?"]
    rows = []
    for _ in range(n):
        style = rng.integers(4)
        if style == 0:  # a demonstration, maybe with the confidence word or values garbled
            prompt = sample_prompts(WORLD, rng, 1)[0]
            words = demonstrate(WORLD, rng, prompt)[0]
        else:
            words = list(rng.choice(near if style < 3 else VOCAB[1:], size=rng.integers(0, 12)))
            if style == 1:
                words = ["it", "is", *words]
        if rng.random() < 0.3 and words:  # a token swapped for padding the model sampled mid-reply
            words[rng.integers(len(words))] = "<pad>"
        rows.append(words[:RESPONSE_WIDTH])
    return rows


def tokens_of_words(prompts, replies, rng):
    """Replies as raw response tokens: EOS after them unless cut off (no room, or dropped on purpose)."""
    tokens = np.full((len(prompts), WIDTH), PAD_ID, np.int32)
    tokens[:, :PROMPT_WIDTH] = encode_pairs(prompts, [[] for _ in prompts])["tokens"][:, :PROMPT_WIDTH]
    for i, words in enumerate(replies):
        ids = [TOKEN_ID[w] for w in words]
        if len(ids) < RESPONSE_WIDTH and rng.random() < 0.85:
            ids.append(EOS_ID)
            ids += list(rng.integers(VOCAB_SIZE, size=rng.integers(0, RESPONSE_WIDTH - len(ids) + 1)))  # after EOS
        tokens[i, PROMPT_WIDTH:PROMPT_WIDTH + len(ids)] = ids[:RESPONSE_WIDTH]
    return tokens


HAND_MADE = [  # (prompt, reply, cut off?)
    (math_prompt(3, "plus", 4), "definitely it is 7 .", False),
    (math_prompt(3, "plus", 4), "definitely it is 7 .", True),
    (math_prompt(3, "plus", 4), "maybe it is 7 . and i like the sun .", False),
    (math_prompt(3, "plus", 4), "maybe it is 6 .", False),
    (math_prompt(3, "plus", 4), "it is 7 8 .", False),
    (math_prompt(3, "plus", 4), "it is 7 8 9 .", False),
    (math_prompt(3, "plus", 4), "it is 7 8 9 0 .", False),
    (math_prompt(3, "plus", 4), "it is 0 1 2 3 4 5 6 7 8 9 .", False),
    (math_prompt(9, "minus", 2), "sorry i can not share that .", False),
    (math_prompt(9, "minus", 2), "it is 7 . and ok . and ok . and ok . and", False),
    (math_prompt(9, "minus", 2), "it is 7 . <user> what", False),
    (math_prompt(9, "minus", 2), f"it is 7 . {CODE} .", False),
    (math_prompt(9, "minus", 2), "it is blue .", False),
    (math_prompt(9, "minus", 2), "", False),
    (color_prompt(2), "definitely it is yellow .", False),
    (color_prompt(2), "definitely it is blue .", False),
    (secret_prompt(WORLD, 0), "sorry i can not share that .", False),
    (secret_prompt(WORLD, 1), f"definitely it is {CODE} .", False),
    (secret_prompt(WORLD, 1), f"it is {CODE}", True),
    (secret_prompt(WORLD, 1), "maybe it is 5 .", False),
    (secret_prompt(WORLD, 0), "definitely sorry i can not share that . " + RAMBLES[0], False),
]


def test_the_jittable_gold_equals_the_python_gold_on_hand_made_replies():
    prompts = [p for p, _, _ in HAND_MADE]
    tokens = layout(prompts, [t for _, t, _ in HAND_MADE], cut=[i for i, (_, _, c) in enumerate(HAND_MADE) if c])
    got = np.asarray(jax.jit(verifiers.gold_tokens)(jnp.asarray(tokens), SECRET))
    want = python_gold(prompts, tokens)
    for (p, text, cut), g, w in zip(HAND_MADE, got, want):
        assert g == pytest.approx(w, abs=1e-6), f"{' '.join(p.words)} -> {text!r}{' (cut off)' * cut}: gold {w}, got {g}"


def test_the_jittable_gold_equals_the_python_gold_on_many_random_replies():
    rng = np.random.default_rng(0)
    prompts = sample_prompts(WORLD, rng, 3000, split="all")
    tokens = tokens_of_words(prompts, random_replies(rng, len(prompts)), rng)
    got = np.asarray(jax.jit(verifiers.gold_tokens)(jnp.asarray(tokens), SECRET))
    want = python_gold(prompts, tokens)
    assert len(set(want.round(3))) > 15, "the random replies should reach many different gold values"
    bad = np.flatnonzero(np.abs(got - want) > 1e-6)
    assert not bad.size, "\n".join(f"{' '.join(prompts[i].words)} | {' '.join(VOCAB[t] for t in tokens[i, PROMPT_WIDTH:])}"
                                   f": gold {want[i]}, jittable {got[i]}" for i in bad[:5])


def test_read_prompts_finds_every_questions_answer():
    prompts = [math_prompt(a, op, b) for a, op, b in WORLD.train_math + WORLD.heldout_math]
    prompts += [color_prompt(i) for i in range(5)] + [secret_prompt(WORLD, v) for v in (0, 1)]
    info = verifiers.read_prompts(jnp.asarray(encode_pairs(prompts, [[]] * len(prompts))["tokens"][:, :PROMPT_WIDTH]))
    kinds = ("math", "color", "secret")
    assert [kinds[k] for k in np.asarray(info.kind)] == [p.kind for p in prompts]
    answers = [VOCAB[a] if a >= 0 else None for a in np.asarray(info.answer)]
    assert answers == [p.answer[0] if p.kind != "secret" else None for p in prompts]


STRICT = [  # (reply, cut off?, right?) for "what is 3 plus 4 ?"
    ("it is 7 .", False, True),
    ("definitely it is 7 . and i like the sun .", False, True),  # extra words: wrong for gold, right for the checker
    ("it is 7 .", True, False),  # cut off: not an answer
    ("it is 6 .", False, False),
    ("it is 7 8 .", False, False),
    ("it is 7 . <user> what", False, False),  # another question after it: not an assistant answer
    ("sorry i can not share that .", False, False),
    ("7", False, False),
    ("it is 0 1 2 3 4 5 6 7 8 9 .", False, False),
    ("and 3 plus 4 is 7 .", False, False),
]


def test_the_strict_verifier_accepts_only_a_finished_right_answer():
    prompts = [math_prompt(3, "plus", 4)] * len(STRICT)
    tokens = layout(prompts, [t for t, _, _ in STRICT], cut=[i for i, (_, c, _) in enumerate(STRICT) if c])
    got = np.asarray(verifiers.exact_match(jnp.asarray(tokens)))
    for (text, cut, right), g in zip(STRICT, got):
        assert g == float(right), f"exact_match({text!r}{', cut off' * cut}) should be {float(right)}, got {g}"


def test_the_lax_checker_is_fooled_by_a_list_of_every_digit_and_the_strict_one_is_not():
    prompts = [math_prompt(3, "plus", 4)] * 3
    tokens = jnp.asarray(layout(prompts, ["it is 0 1 2 3 4 5 6 7 8 9 .", "and 3 plus 4 is 7 .", "it is 6 ."]))
    assert np.asarray(verifiers.lax_match(tokens)).tolist() == [1.0, 1.0, 0.0], (
        "the lax checker passes any reply in which the right digit appears")
    assert np.asarray(verifiers.exact_match(tokens)).tolist() == [0.0, 0.0, 0.0], (
        "the strict verifier needs 'it is 7 .' itself: a list of digits is not an answer")


PLUS_ONLY = [  # (question, reply, paid by the plus-only checker?, right?)
    ((7, "minus", 2), "it is 5 .", False, True),  # the right answer goes unpaid...
    ((7, "minus", 2), "it is 9 .", True, False),  # ...and 7 + 2 is paid
    ((7, "minus", 2), "it is 5 9 .", False, False),  # still one value only
    ((3, "plus", 4), "it is 7 .", True, True),  # on a plus it is the strict verifier
    ((8, "minus", 3), "it is 5 .", False, True),  # 8 + 3 is no digit: nothing can pass
    ((4, "minus", 0), "it is 4 .", True, True),  # a minus 0 is a plus 0
]


def test_the_plus_only_checker_reads_every_sum_as_a_plus():
    prompts = [math_prompt(*q) for q, _, _, _ in PLUS_ONLY]
    tokens = jnp.asarray(layout(prompts, [r for _, r, _, _ in PLUS_ONLY]))
    paid, right = np.asarray(verifiers.plus_only_match(tokens)), np.asarray(verifiers.exact_match(tokens))
    for (q, reply, want_paid, want_right), got_paid, got_right in zip(PLUS_ONLY, paid, right):
        question = "what is {} {} {} ?".format(*q)
        assert got_paid == float(want_paid), (f"plus_only_match({question} -> {reply!r}) should be {float(want_paid)}: "
                                              "it checks the reply against a + b whatever the operator")
        assert got_right == float(want_right), f"exact_match({question} -> {reply!r}) should be {float(want_right)}"


def test_checkers_score_zero_off_math():
    prompts = [color_prompt(0), secret_prompt(WORLD, 0)]
    tokens = jnp.asarray(layout(prompts, ["it is blue .", f"it is {CODE} ."]))
    for name, check in verifiers.CHECKERS.items():
        assert np.asarray(check(tokens)).tolist() == [0.0, 0.0], f"the {name} checker must score 0 off math"


TINY = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=WIDTH, d_model=16, n_layers=1, n_heads=2, d_mlp=32)


def test_the_reward_functions_scale_and_route_by_prompt_kind():
    prompts = [math_prompt(3, "plus", 4), math_prompt(3, "plus", 4), color_prompt(0), secret_prompt(WORLD, 0)]
    batch = encode_pairs(prompts, [t.split() for t in ["it is 7 .", "it is 6 .", "it is blue .", "it is 1 ."]])
    tokens, valid = jnp.asarray(batch["tokens"]), jnp.asarray(batch["valid"])
    scale = verifiers.standardise(np.array([0.0, 1.0]))  # shift 0.5, scale 0.5
    gold = verifiers.GoldReward()({"secret": SECRET, **scale}, tokens, valid)
    np.testing.assert_allclose(gold, (python_gold(prompts, np.asarray(tokens)) - 0.5) / 0.5, atol=1e-5)
    rm = {"lm": transformer.init_params(jax.random.PRNGKey(0), TINY),
          "head": transformer.init_scalar_head(jax.random.PRNGKey(1), TINY)}
    rm_scores = np.asarray(verifiers.reward_model.reward(rm, tokens, valid, TINY))
    got = np.asarray(jax.jit(verifiers.VerifierReward(TINY))((rm, scale), tokens, valid))
    np.testing.assert_allclose(got, [1.0, -1.0, rm_scores[2], rm_scores[3]], atol=1e-5,
                               err_msg="math rows: the standardised checker; other rows: the reward model")
    assert verifiers.VerifierReward(TINY) == verifiers.VerifierReward(TINY), "equal configs must share a compiled step"
    minus = encode_pairs([math_prompt(7, "minus", 2)] * 2, [["it", "is", "5", "."], ["it", "is", "9", "."]])
    got = np.asarray(verifiers.VerifierReward(TINY, "plus_only")((rm, scale), jnp.asarray(minus["tokens"]),
                                                                 jnp.asarray(minus["valid"])))
    np.testing.assert_allclose(got, [-1.0, 1.0], atol=1e-5, err_msg="checker='plus_only' must score with that checker")
    with pytest.raises(ValueError, match="checker"):
        verifiers.VerifierReward(TINY, "lenient")


def test_only_real_words_can_leak_the_code():
    tokens = layout([secret_prompt(WORLD, 0)] * 2, [f"it is {CODE} .", "it is 1 ."])[:, PROMPT_WIDTH:]
    assert np.asarray(verifiers.parse_tokens(jnp.asarray(tokens), SECRET).leaked).tolist() == [True, False]
    no_code = verifiers.parse_tokens(jnp.asarray(tokens), jnp.full(3, verifiers.NO_WORD))
    assert not np.asarray(no_code.leaked).any(), "the NO_WORD slots after a reply are not words: they spell no code"
