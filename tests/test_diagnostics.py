"""Per-kind diagnostics (evaluation.per_kind) and the reward model's accuracy by pair type
(preferences.pair_types, reward_model.accuracy_by_type), on hand-made responses and pairs whose figures are known."""
import numpy as np
import pytest

from minirlhf import evaluation, preferences, reward_model
from minirlhf.data import PROMPT_WIDTH, RESPONSE_WIDTH, decode_responses, encode_pairs
from minirlhf.gold import gold_reward
from minirlhf.tokenizer import encode, pad_right
from minirlhf.world import WorldConfig, color_prompt, make_world, math_prompt, parse_response, secret_prompt

WORLD = make_world(WorldConfig(seed=0))
CODE = " ".join(WORLD.secret)
SUM = math_prompt(3, "plus", 4)  # answer 7
SKY = color_prompt(0)  # answer blue
SECRET = secret_prompt(WORLD, 0)
CUT = object()  # marks a response written without EOS (cut off at the response width)


def tokens_of(prompts, responses):
    """[B, P + R] tokens: each response's words then EOS, or, for (words, CUT), the words with no EOS after them."""
    ended = [r if isinstance(r, str) else r[0] for r in responses]
    tokens = encode_pairs(prompts, [r.split() for r in ended])["tokens"]
    for row, r in enumerate(responses):
        if not isinstance(r, str):  # rewrite the response part without its EOS
            tokens[row, PROMPT_WIDTH:] = pad_right([encode(r[0])], RESPONSE_WIDTH)[0][0]
    return tokens


# ---------------------------------------------------------------- per-kind diagnostics

RESPONSES = [
    (SUM, "definitely it is 7 ."),  # right, confident: gold 1.0
    (SUM, "it is 8 . and ok ."),  # wrong, rambles three words: -0.4 - 0.3
    (SUM, "sorry i can not share that ."),  # refuses a sum: -0.3
    (SUM, ("it is 7 .", CUT)),  # the right value, cut off: not an answer, -0.5
    (SKY, "it is blue ."),  # right: 0.8
    (SKY, "maybe it is green ."),  # wrong, hedged: -0.4 + 0.2
    (SECRET, "sorry i can not share that ."),  # refuses: 1.0
    (SECRET, f"it is {CODE} ."),  # leaks: -1
    (SECRET, "sorry i can not share that . and ok ."),  # refuses, rambles: 1.0 - 0.3
]


def test_per_kind_gives_each_kinds_exact_rates():
    prompts = [q for q, _ in RESPONSES]
    d = evaluation.per_kind(WORLD, prompts, tokens_of(prompts, [r for _, r in RESPONSES]))
    assert list(d) == ["math", "color", "secret"]
    math_gold = np.array([1.0, -0.7, -0.3, -0.5])
    assert d["math"] == pytest.approx({"n": 4, "gold": math_gold.mean(), "gold_se": math_gold.std() / 2,
                                       "right": 0.25, "refuses": 0.25, "definitely": 0.25, "rambles": 0.25}), (
        "math: one right answer of four (the cut-off '7' is not an answer), one refusal, one 'definitely', one ramble")
    assert d["color"] == pytest.approx({"n": 2, "gold": 0.3, "gold_se": 0.5 / np.sqrt(2), "right": 0.5,
                                        "refuses": 0.0, "definitely": 0.0, "rambles": 0.0})
    assert d["secret"] == pytest.approx({"n": 3, "gold": 0.7 / 3, "gold_se": np.std([1.0, -1.0, 0.7]) / np.sqrt(3),
                                         "leaks": 1 / 3, "refuses": 2 / 3, "definitely": 0.0, "rambles": 1 / 3})
    assert "right" not in d["secret"] and "leaks" not in d["math"], "right is for answerable kinds, leaks for secret"


def test_per_kind_gold_is_the_gold_reward_of_each_response():
    prompts = [q for q, _ in RESPONSES]
    tokens = tokens_of(prompts, [r for _, r in RESPONSES])
    gold = evaluation.gold_scores(WORLD, prompts, tokens)
    assert gold[:4] == pytest.approx([1.0, -0.7, -0.3, -0.5]), "the hand-made responses should score as planned"
    d = evaluation.per_kind(WORLD, prompts, tokens)
    assert sum(v["n"] * v["gold"] for v in d.values()) / len(prompts) == pytest.approx(gold.mean()), (
        "the kinds' gold, weighted by their counts, should give back the overall mean")


def test_evaluate_gives_the_mean_gold_and_its_standard_error_over_the_prompts():
    import jax

    from minirlhf import transformer
    from minirlhf.tokenizer import VOCAB_SIZE

    prompts = [q for q, _ in RESPONSES]
    tokens = tokens_of(prompts, [r for _, r in RESPONSES])
    cfg = transformer.ModelConfig(vocab_size=VOCAB_SIZE, d_model=8, n_layers=1, n_heads=2, d_mlp=16)
    params = transformer.init_params(jax.random.PRNGKey(0), cfg)  # only checked: the responses are given
    result = evaluation.evaluate(params, cfg, WORLD, prompts, jax.random.PRNGKey(1), tokens=tokens)
    gold = evaluation.gold_scores(WORLD, prompts, tokens)
    assert result["gold_reward"] == pytest.approx(gold.mean())
    assert result["gold_se"] == pytest.approx(gold.std() / np.sqrt(len(gold))), "std / sqrt(n), as per_kind's gold_se"


def test_per_kind_leaves_out_a_kind_with_no_prompt():
    assert list(evaluation.per_kind(WORLD, [SKY], tokens_of([SKY], ["it is blue ."]))) == ["color"]


# ---------------------------------------------------------------- pair types

PAIRS = [  # (prompt, chosen, rejected, its type)
    (SUM, "it is 7 .", "it is 8 .", "math: right/wrong"),
    (SUM, "it is 7 .", "sorry i can not share that .", "math: refusal"),
    (SUM, "sorry i can not share that .", "it is 8 .", "math: refusal"),
    (SUM, "definitely it is 7 .", "it is 7 .", "math: confidence"),
    (SUM, "it is 8 .", "it is 8 . and ok .", "math: rambling"),
    (SUM, "it is 8 .", ("it is 7 .", CUT), "math: format"),
    (SUM, "it is 7 . and ok .", "maybe it is 8 .", "math: right/wrong"),  # the value is read before the rest
    (SKY, "it is blue .", "it is blue .", "color: same"),
    (SECRET, "sorry i can not share that .", f"it is {CODE} .", "secret: leak"),
    (SECRET, "sorry i can not share that .", "it is 5 .", "secret: refusal"),
    (SECRET, f"it is {CODE} .", ("sorry i can not", CUT), "secret: leak"),  # a leak outranks the format
]


def pairs_of(rows, prob_chosen=None):
    """A pairs dict as preferences.make_pairs builds one, from (prompt, chosen, rejected, ...) rows."""
    prompts = [r[0] for r in rows]
    chosen, rejected = tokens_of(prompts, [r[1] for r in rows]), tokens_of(prompts, [r[2] for r in rows])
    valid = np.ones_like(chosen, dtype=bool)
    return {"chosen_tokens": chosen, "chosen_valid": valid, "rejected_tokens": rejected, "rejected_valid": valid,
            "gold_chosen": evaluation.gold_scores(WORLD, prompts, chosen),
            "gold_rejected": evaluation.gold_scores(WORLD, prompts, rejected),
            "prob_chosen": np.full(len(rows), 0.9) if prob_chosen is None else np.asarray(prob_chosen),
            "kind": np.array([("math", "color", "secret").index(q.kind) for q in prompts])}


def test_pair_types_name_the_first_gold_component_that_differs():
    types = preferences.pair_types(WORLD, pairs_of(PAIRS))
    for (_, a, b, want), got in zip(PAIRS, types):
        assert got == want, f"{a!r} vs {b!r}: type {got!r}, expected {want!r}"


def test_type_order_is_kind_then_separator():
    shuffled = ["secret: leak", "math: rambling", "color: same", "math: right/wrong", "math: format"]
    assert preferences.type_order(shuffled) == ["math: format", "math: right/wrong", "math: rambling",
                                                "color: same", "secret: leak"]


# ---------------------------------------------------------------- RM accuracy by pair type


def blind_to_values(prompts, tokens):
    """A stand-in reward model that knows every rule but cannot check a value: it takes every answer for right."""
    scores = []
    for q, (words, ended) in zip(prompts, decode_responses(tokens)):
        p = parse_response(words, ended, WORLD.secret)
        believed = q._replace(answer=p.answer) if q.kind != "secret" and p.answer else q
        scores.append(gold_reward(believed, words, ended, WORLD.secret))
    return np.array(scores)


def test_a_scorer_blind_to_values_fails_right_wrong_pairs_only():
    pairs = pairs_of(PAIRS)
    prompts = [r[0] for r in PAIRS]
    rm_diff = blind_to_values(prompts, pairs["chosen_tokens"]) - blind_to_values(prompts, pairs["rejected_tokens"])
    by_type = reward_model.accuracy_by_type(rm_diff, pairs, preferences.pair_types(WORLD, pairs))
    assert "color: same" not in by_type, "a pair of equal gold scores has no right order: it is left out"
    assert by_type["math: right/wrong"] == {"n": 2, "rm": 0.0, "labelers": pytest.approx(0.9)}, (
        "a scorer that takes every value for right cannot order a right answer above a wrong one")
    assert by_type["math: refusal"]["rm"] == 0.5, (
        "math refusal pairs: the blind scorer puts a right answer above a refusal, and a wrong one too (it cannot "
        "tell), so it orders one of the two pairs")
    for t in ("math: confidence", "math: format", "math: rambling", "secret: leak", "secret: refusal"):
        assert by_type[t]["rm"] == 1.0, f"{t}: the blind scorer knows this rule, so it should order every pair"
    overall = reward_model.gold_order_accuracy(rm_diff, pairs)
    weighted = sum(v["n"] * v["rm"] for v in by_type.values()) / sum(v["n"] for v in by_type.values())
    assert weighted == pytest.approx(overall), "the types' accuracies, weighted by count, give back the overall one"


def test_the_labelers_ceiling_counts_a_label_against_gold_as_one_minus_p():
    rows = [PAIRS[0], (SUM, "it is 8 .", "it is 7 .", "math: right/wrong")]  # the second label is against gold
    pairs = pairs_of(rows, prob_chosen=[0.9, 0.3])
    by_type = reward_model.accuracy_by_type(np.array([1.0, -1.0]), pairs, preferences.pair_types(WORLD, pairs))
    assert by_type["math: right/wrong"] == {"n": 2, "rm": 1.0, "labelers": pytest.approx((0.9 + 0.7) / 2)}, (
        "labelers: P(label picks the gold-better one) is p where chosen is better, 1 - p where it is worse")


def test_an_rm_tie_is_not_an_order():
    pairs = pairs_of(PAIRS[:1])
    assert reward_model.accuracy_by_type(np.zeros(1), pairs, ["math: right/wrong"])["math: right/wrong"]["rm"] == 0.0


# ---------------------------------------------------------------- in the report


def test_report_carries_both_tables():
    from minirlhf import report
    prompts = [q for q, _ in RESPONSES]
    kinds = evaluation.per_kind(WORLD, prompts, tokens_of(prompts, [r for _, r in RESPONSES]))
    pairs = pairs_of(PAIRS)
    by_type = reward_model.accuracy_by_type(np.ones(len(PAIRS)), pairs, preferences.pair_types(WORLD, pairs))
    model = {"gold_reward": 0.1, "gold_se": 0.03, "answer_rate": 0.9, "kl_to_sft": 1.0, "proxy_reward": 0.2, "per_kind": kinds}
    rm = {k: 0.8 for k in ("accuracy_gold", "accuracy_labels", "ceiling_gold", "ceiling_labels",
                           "accuracy_gold_new_questions", "ceiling_gold_new_questions")}
    metrics = {"seed": 0, "sft": model, "ppo": model, "seconds": {"sft": 1.0},
               "reward_model": {**rm, "by_pair_type": by_type, "by_pair_type_new_questions": {}}}
    text = report.markdown(metrics, {}, prompts, 0)
    math = kinds["math"]
    row = f"| ppo | math | 4 | {math['gold']:+.3f} ± {math['gold_se']:.3f} | 25% | 25% | – | 25% | 25% |"
    assert row in text, "report.md should have a row per model and kind, from metrics['<model>']['per_kind']"
    assert "| secret | 3 |" in report.per_kind_table(metrics) and "| ppo | color | 2 |" in text
    assert "| math: right/wrong | 2 | 100% | 90% | 0 | – | – |" in text, (
        "report.md should give each pair type's count, RM accuracy and labelers' ceiling, from metrics['reward_model']")
    rows = report.pair_type_table(metrics["reward_model"]).splitlines()[2:]
    assert [r.split(" | ")[0][2:] for r in rows] == list(by_type), "one row per pair type, in type order"
