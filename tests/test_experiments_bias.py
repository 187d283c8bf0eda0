"""The labeler-bias experiment: answer edits that keep the value, biased labels, and a tiny end-to-end run."""
import json
from functools import partial

import numpy as np
import pytest

from minirlhf import gold, preferences
from minirlhf.data import encode_pairs
from minirlhf.experiments import answer_probes as probes
from minirlhf.experiments import labeler_bias as lb
from minirlhf.world import RAMBLES, WorldConfig, demonstrate, make_world, math_prompt, sample_prompts

WORLD = make_world(WorldConfig(seed=0))


def demonstrations(n: int, seed: int = 0):
    """n (prompt, response words) from the imperfect demonstrators: every shape of answer the world has."""
    rng = np.random.default_rng(seed)
    prompts = sample_prompts(WORLD, rng, n)
    return [(p, demonstrate(WORLD, rng, p)[0]) for p in prompts]


def test_confidence_edit_keeps_the_answer_and_round_trips():
    for p, words in demonstrations(300):
        before = gold.parse_response(words, True, WORLD.secret)
        for confidence in (None, "definitely", "maybe"):
            edited = probes.with_confidence(words, confidence)
            after = gold.parse_response(edited, True, WORLD.secret)
            assert (after.answer, after.refusal, after.extra_tokens) == (before.answer, before.refusal, before.extra_tokens), \
                f"inserting {confidence!r} changed the answer: {words} -> {edited}"
            assert probes.confidence_of(edited) == confidence
            assert probes.with_confidence(edited, probes.confidence_of(words)) == words, "the edit does not undo: words were lost"


def test_ramble_edit_keeps_the_answer_and_round_trips():
    for p, words in demonstrations(300, seed=1):
        before = gold.parse_response(words, True, WORLD.secret)
        extra = " ".join(words[len(words) - before.extra_tokens:]) or None
        edited = probes.with_ramble(words, RAMBLES[0])
        after = gold.parse_response(edited, True, WORLD.secret)
        assert (after.answer, after.confidence, after.refusal) == (before.answer, before.confidence, before.refusal)
        assert after.extra_tokens == len(RAMBLES[0].split())
        assert probes.with_ramble(edited, extra, WORLD.secret) == words


def test_edits_reject_what_they_cannot_keep():
    with pytest.raises(ValueError, match="confidence"):
        probes.with_confidence("it is 7 .".split(), "surely")
    with pytest.raises(ValueError, match="not an answer"):
        probes.with_ramble("hello . and ok .".split(), None)


def test_perceived_shift_is_gold_shift_plus_the_bias():
    cfg = lb.Config()
    prompts = [math_prompt(3, "plus", 4), math_prompt(5, "minus", 1)]
    bare = ["it is 7 .".split(), "it is 9 .".split()]
    right = np.array([True, False])
    gold_shift = probes.edit_shifts(partial(probes.gold_of, WORLD), prompts, bare, right)
    assert gold_shift["definitely_right"] == pytest.approx(0.2) and gold_shift["definitely_wrong"] == pytest.approx(-0.4)
    for name, edit, bias in [("confident", "definitely", cfg.confidence_bias), ("long", "ramble", None)]:
        rater = lb.labeler(cfg, name)
        shift = probes.edit_shifts(partial(probes.perceived_of, WORLD, rater), prompts, bare, right)
        for which in ("right", "wrong"):
            expected = bias if bias is not None else cfg.length_bias * len(RAMBLES[0].split())
            if name == "long" and which == "wrong":
                expected = cfg.length_bias * len(RAMBLES[1].split())  # the second answer gets the second ramble
            assert shift[f"{edit}_{which}"] - gold_shift[f"{edit}_{which}"] == pytest.approx(expected)


@pytest.mark.parametrize("name, feature", [("confident", lambda w: "definitely" in w), ("long", len)])
def test_biased_labelers_pick_the_favoured_response_more_often(name, feature):
    """Same pairs, same random draws: the bias must move the labels toward its favourite, by about what
    Bradley-Terry predicts (within 4 standard errors)."""
    cfg = lb.Config()
    rng = np.random.default_rng(2)
    pairs = []  # two demonstrations for one prompt, differing in the feature the bias likes
    for p in sample_prompts(WORLD, rng, 3000):
        a, b = demonstrate(WORLD, rng, p)[0], demonstrate(WORLD, rng, p)[0]
        if feature(a) != feature(b):
            pairs.append((p, a, b) if feature(a) > feature(b) else (p, b, a))  # a is the favoured one
    rates = {}
    for rater_name in ("unbiased", name):
        rater, draws = lb.labeler(cfg, rater_name), np.random.default_rng(3)
        picked, expected = [], []
        for p, a, b in pairs:
            sa, sb = (preferences.perceived_score(rater, gold.gold_reward(p, w, True, WORLD.secret), w) for w in (a, b))
            picked.append(preferences.label_pair(rater, draws, sa, sb))
            expected.append(preferences.preference_prob(rater, sa, sb))
        rate, p_mean, n = np.mean(picked), np.mean(expected), len(picked)
        assert abs(rate - p_mean) < 4 * np.sqrt(p_mean * (1 - p_mean) / n), f"{rater_name}: {rate:.3f} vs {p_mean:.3f}"
        rates[rater_name] = rate
    assert rates[name] > rates["unbiased"] + 0.1, f"the {name} labeler does not favour its feature enough: {rates}"


def test_label_preferences_and_policy_stats_on_known_responses():
    prompts = [math_prompt(3, "plus", 4)] * 3
    chosen = encode_pairs(prompts, ["definitely it is 7 .".split(), "it is 7 . and ok .".split(), "it is 7 .".split()])
    rejected = encode_pairs(prompts, ["it is 7 .".split(), "it is 7 .".split(), "definitely it is 2 .".split()])
    pairs = {"chosen_tokens": chosen["tokens"], "rejected_tokens": rejected["tokens"]}
    prefs = lb.label_preferences(WORLD, pairs)
    assert prefs["picks_definitely"] == pytest.approx(0.5) and prefs["picks_longer"] == pytest.approx(2 / 3)
    stats = lb.policy_stats(WORLD, prompts, rejected["tokens"])
    assert stats["says_definitely"] == pytest.approx(1 / 3) and stats["definitely_when_wrong"] == 1.0
    assert stats["math_accuracy"] == pytest.approx(2 / 3)


def test_config_is_validated():
    with pytest.raises(ValueError, match="labelers"):
        lb.Config(labelers=("sycophant",))
    with pytest.raises(ValueError, match="bias"):
        lb.Config(confidence_bias=-1.0)


def tiny_base(seed: int = 0):
    """Untrained one-layer models standing in for pretrain/SFT/RM: the run's plumbing, not its figures."""
    from minirlhf import ppo, reward_model, transformer
    from minirlhf.experiments.base import BaseModels
    from minirlhf.pipeline import PipelineConfig, stage_keys
    from minirlhf.tokenizer import VOCAB_SIZE
    from minirlhf.training import OptimConfig

    model = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=26, d_model=16, n_layers=1, n_heads=2, d_mlp=32)
    cfg = PipelineConfig(seed=seed, model=model,
                         rm=reward_model.RMConfig(n_pairs=32, n_heldout=32, n_normalize=32, optim=OptimConfig(steps=2, batch_size=16, warmup=1)),
                         ppo=ppo.PPOConfig(batch_size=32))
    keys = stage_keys(seed)
    sft_params = transformer.init_params(keys["sft"], model)
    rm = reward_model.init_reward_model(keys["rm"], sft_params, model)
    pairs = {k: v for k, v in encode_pairs([math_prompt(1, "plus", 1)], ["it is 2 .".split()]).items()}
    pairs = {"chosen_tokens": pairs["tokens"], "rejected_tokens": pairs["tokens"]}
    return BaseModels(cfg, make_world(WorldConfig(seed=seed)), keys, {}, sft_params, rm, pairs, {"accuracy_gold": 0.5})


def test_tiny_run_has_the_documented_structure(tmp_path):
    cfg = lb.Config(labelers=("unbiased", "confident"), ppo_iterations=1, n_probe=32, n_eval=32, n_shown=3)
    result = lb.run(cfg, seeds=(0,), cache=None, bases={0: tiny_base(0)})
    json.dumps(result)  # JSON-able
    assert set(result) == {"experiment", "config", "seeds", "aggregate"}, "the one result schema"
    seed = result["seeds"]["0"]
    assert set(seed["labelers"]) == {"unbiased", "confident"}
    for entry in seed["labelers"].values():
        assert {"labels", "labeler_shift", "rm_shift", "rm", "policy", "history"} <= set(entry)
        assert len(entry["history"]["gold"]) == cfg.ppo_iterations
        assert 0 <= entry["policy"]["answer_rate"] <= 1
    # the confident labeler's own taste, measured on the probes: exactly gold + the bias, right or wrong
    for which in ("right", "wrong"):
        shift = seed["labelers"]["confident"]["labeler_shift"][f"definitely_{which}"] - seed["gold_shift"][f"definitely_{which}"]
        assert shift == pytest.approx(cfg.confidence_bias)
    agg = result["aggregate"]["labelers"]["confident"]["policy"]["says_definitely"]
    assert set(agg) == {"mean", "std", "min", "max", "values"} and len(agg["values"]) == 1
    assert len(seed["samples"]) == 3 and set(seed["samples"][0]["responses"]) == {"SFT", "unbiased", "confident"}
    fig = lb.plot(result)
    assert len(fig.axes) == 6
    fig.savefig(tmp_path / "plot.png", dpi=40)
    assert (tmp_path / "plot.png").stat().st_size > 1000, "plot() should draw a figure that saves as a PNG"
    assert "confident" in lb.summary(result)


def test_merge_pools_seeds_run_separately():
    one = lambda seed, x: {"config": {"a": 1}, "seeds": {str(seed): {"sft": {"gold": x}}}}
    merged = lb.merge([one(2, 0.5), one(0, -0.5)])
    assert list(merged["seeds"]) == ["0", "2"]
    agg = merged["aggregate"]["sft"]["gold"]
    assert agg["mean"] == 0.0 and agg["values"] == [-0.5, 0.5]
    assert agg["std"] == pytest.approx(0.5 ** 0.5)  # the sample std (ddof = 1) of -0.5 and 0.5
    with pytest.raises(ValueError, match="same Config"):
        lb.merge([one(0, 0.0), {**one(1, 0.0), "config": {"a": 2}}])
