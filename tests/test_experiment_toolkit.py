"""The experiment toolkit: the reading of what a response does the experiments use (evaluation's), one result
schema, one formatter, the gold-free stop and the curve's peak the experiments share, no experiment importing
another."""
import ast
from pathlib import Path

import numpy as np
import pytest

from minirlhf.data import encode_pairs
from minirlhf import evaluation
from minirlhf.experiments import EXPERIMENTS, monitoring, report, seed_spread, toolkit
from minirlhf.tokenizer import PAD_ID
from minirlhf.world import make_world, math_prompt, parse_response, secret_prompt

WORLD = make_world()
PACKAGE = Path(__file__).resolve().parents[1] / "minirlhf" / "experiments"


def tokens_of(prompts, texts, cut=()):
    """The shared layout for these responses; rows in `cut` lose their EOS (cut off by the response width)."""
    batch = encode_pairs(prompts, [t.split() for t in texts])
    tokens = np.array(batch["tokens"])
    for i in cut:
        tokens[i, np.flatnonzero(batch["valid"][i])[-1]] = PAD_ID  # the last valid token, EOS, becomes padding
    return tokens


def test_a_cut_off_reply_is_not_an_answer_but_its_leak_counts():
    math, secret = math_prompt(3, "plus", 4), secret_prompt(WORLD, 0)
    code = " ".join(WORLD.secret)
    prompts = [math, math, secret, secret]
    texts = ["definitely it is 7 .", "definitely it is 7 .", f"it is {code} .", "sorry i can not share that ."]
    b = evaluation.behaviour(WORLD, prompts, tokens_of(prompts, texts, cut=(1, 2)))
    assert b["right_answerable"] == 0.5, (
        "of the two math replies only the finished one is right: a cut-off reply is not an answer (gold scores it "
        f"-0.5 whatever it says), got {b['right_answerable']}")
    assert b["definitely"] == 0.25, "only the finished 'definitely' reply says definitely"
    assert b["leaks"] == 0.5, "the cut-off reply that wrote the code leaks it: gold charges a leak either way"
    assert b["refuses_secret"] == 0.5 and b["answer_rate"] == 0.5


def test_the_predicates_read_the_answer_grammar():
    p = parse_response("maybe it is 7 .".split(), True, WORLD.secret)
    assert evaluation.answered_right(math_prompt(3, "plus", 4), p) and not evaluation.says_definitely(p)
    assert not evaluation.answered_right(math_prompt(3, "plus", 5), p), "a wrong value is not right"
    r = parse_response("sorry i can not share that .".split(), True, WORLD.secret)
    assert evaluation.refused(r) and not evaluation.leaked(r)


def test_a_share_of_nothing_is_nan():
    assert np.isnan(evaluation.share([])) and evaluation.share([True, False]) == 0.5


def test_fmt_is_mean_std_min_max():
    s = seed_spread([0.1, 0.3])
    assert report.fmt(s) == "0.200 ± 0.141 [0.100, 0.300]"
    assert report.fmt(s, 2, signed=True) == "+0.20 ± 0.14 [+0.10, +0.30]"
    assert report.fmt(None) == "n/a"
    assert report.fmt(seed_spread([0.25]), signed=True) == "+0.250", "one seed has no spread to print"
    assert report.fmt(seed_spread([0.75, 0.7500001, 0.75])) == "0.750 on every seed", (
        "a figure equal on every seed at the digits shown is written once, not as '± 0.000 [x, x]'")


def test_spread_tree_keeps_the_shape_and_drops_what_is_not_a_number():
    trees = [{"a": {"b": 1.0, "text": "x"}, "curve": [1, 2], "n": 2, "flag": True}, {"a": {"b": 3.0}, "curve": [3], "n": 4}]
    out = report.spread_tree(trees)
    assert set(out) == {"a", "n"} and set(out["a"]) == {"b"}, "texts, curves, bools and keys a seed lacks are left out"
    assert out["a"]["b"]["mean"] == 2.0 and out["n"]["values"] == [2.0, 4.0]
    assert report.at(out, "a/b/mean") == 2.0 and report.at(out, "a/c") is None


def test_table_is_markdown():
    assert report.table(["x", "y"], [["1", "2"]]) == ["| x | y |", "|---|---|", "| 1 | 2 |"]


def test_merge_pools_seeds_and_remakes_the_aggregate():
    one = lambda seed, x: {"config": {"a": 1}, "seeds": {str(seed): {"gold": x}}, "aggregate": None}
    merged = report.merge([one(2, 0.5), one(0, -0.5)], lambda per_seed: report.spread_tree(list(per_seed.values())))
    assert list(merged["seeds"]) == ["0", "2"], "seeds in numeric order"
    assert merged["aggregate"]["gold"]["values"] == [-0.5, 0.5]
    with pytest.raises(ValueError, match="same Config"):
        report.merge([one(0, 0.0), {**one(1, 0.0), "config": {"a": 2}}], dict)


def test_check_counts_names_the_bad_field():
    from minirlhf.experiments import iterated
    with pytest.raises(ValueError, match="Config.n_heldout must be >= 1, got 0"):
        iterated.Config(n_heldout=0)
    iterated.Config(n_heldout=1)  # 1 is a count


def test_stop_report_keeps_the_checkpoint_before_the_alarm():
    curve = {"iteration": [0, 1, 4, 16], "gold": [0.0, 0.3, 0.5, 0.2], "kl": [0.0, 0.5, 2.0, 8.0]}
    stop = monitoring.stop_report(curve, [0.1, 0.15, 0.3, 0.4], alarm=0.2)
    assert (stop["index"], stop["iteration"], stop["gold"], stop["kl"]) == (1, 1, 0.3, 0.5), (
        f"the signal first exceeds the alarm at iteration 4, so the rule keeps iteration 1, got {stop}")
    assert (stop["best_iteration"], stop["best_gold"]) == (4, 0.5) and stop["regret"] == pytest.approx(0.2), (
        "the best checkpoint is the one with the highest gold; the regret is its gold minus the stop's")
    assert monitoring.stop_report(curve, [0.0] * 4, alarm=0.2)["iteration"] == 16, "no alarm: keep the last"
    assert monitoring.stop_cells(stop) == ["1", "+0.300", "0.50", "4", "+0.500", "0.200"]


def test_bon_curve_weights_each_prompt_by_how_often_it_occurs():
    """Two prompts, two draws each, the second draw scored higher; the first prompt occurs three times."""
    half = np.log([0.5, 0.5])
    draws = [{"count": 3, "gold": np.array([0.0, 1.0]), "scores": np.array([0.0, 1.0]), "logprobs": half,
              "keep": np.array([0, 1])},
             {"count": 1, "gold": np.array([1.0, 0.0]), "scores": np.array([0.0, 1.0]), "logprobs": half,
              "keep": np.array([0, 1])}]
    curve = toolkit.bon_curve(draws, lambda scores: scores, (1, 2))
    assert curve["gold"] == pytest.approx([0.5, 0.75]), (
        "best-of-2 picks the second draw: gold 1 on the prompt that occurs 3 times, 0 on the other -> 0.75")
    assert curve["proxy"] == pytest.approx([0.5, 1.0]) and curve["kl"][0] == pytest.approx(0.0)


def test_with_peak_adds_the_distance_and_where_gold_peaks():
    curve = {"kl": [0.0, 1.0, 4.0, -1e-7], "gold": [0.0, 0.4, 0.1, 0.0], "proxy": [0.0, 1.0, 2.0, 3.0]}
    out = monitoring.with_peak(curve)
    assert out["d"] == [0.0, 1.0, 2.0, 0.0], "d = sqrt(KL), a slightly negative estimate read as 0"
    assert (out["peak"]["d_peak"], out["peak"]["gold_peak"], out["peak"]["proxy_end"]) == (1.0, 0.4, 3.0)
    assert "drop_se" not in out["peak"] and "drop_se" in monitoring.with_peak(curve | {"gold_se": [0.1] * 4})["peak"]


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_no_experiment_imports_another(name):
    tree = ast.parse((PACKAGE / f"{EXPERIMENTS[name]}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module.rsplit(".", 1)[-1]} | {f"{node.module}.{a.name}".rsplit(".", 1)[-1]
                                                             for a in node.names if node.module.endswith("experiments")}
        elif isinstance(node, ast.Import):
            imported |= {a.name.rsplit(".", 1)[-1] for a in node.names}
    others = imported & (set(EXPERIMENTS.values()) - {EXPERIMENTS[name]})
    assert not others, (f"experiments/{EXPERIMENTS[name]}.py imports the experiment(s) {sorted(others)}: what two "
                        f"experiments share belongs in experiments/toolkit.py")


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_committed_results_have_the_one_schema(name):
    import json
    result = json.loads((PACKAGE.parents[1] / "docs" / "experiments" / name / "result.json").read_text())
    assert set(result) - {"seconds"} == {"experiment", "config", "seeds", "aggregate"}, (
        f"docs/experiments/{name}/result.json has the keys {sorted(result)}: every result is "
        "{experiment, config, seeds, aggregate} (and the CLI's seconds), per-seed data under seeds")
    assert result["experiment"] == name and isinstance(result["seeds"], dict)


# ---------------------------------------------------------------- summaries that say how far apart


def test_grpo_rloo_gap_se_is_paired_over_seeds_and_over_prompts_for_one_seed():
    from minirlhf.experiments import grpo_rloo

    one = {"seeds": {"0": {"ppo": {"gold": 0.30, "gold_se": 0.03}, "rloo": {"gold": 0.34, "gold_se": 0.04}}}}
    assert grpo_rloo.gold_gap(one, "rloo", "ppo") == pytest.approx(0.04)
    assert grpo_rloo.gold_gap_se(one, "rloo", "ppo") == pytest.approx(0.05), "one seed: hypot of the two prompt SEs"
    gaps = [0.1, 0.2, 0.3]  # rloo - ppo on three seeds; the prompt SEs no longer enter
    three = {"seeds": {str(i): {"ppo": {"gold": 0.2, "gold_se": 9.0}, "rloo": {"gold": 0.2 + g, "gold_se": 9.0}}
                       for i, g in enumerate(gaps)}}
    assert grpo_rloo.gold_gap(three, "rloo", "ppo") == pytest.approx(0.2)
    assert grpo_rloo.gold_gap_se(three, "rloo", "ppo") == pytest.approx(0.1 / np.sqrt(3)), "std (ddof 1) / sqrt(n)"


def test_the_committed_summaries_say_which_differences_exceed_two_standard_errors():
    """On the committed results: small_vs_big's seed 2 margin (+0.027, SE about 0.043) is within noise, its other two
    are not; RLOO's highest mean gold is within 2 SE of PPO's (paired over the seeds), far from GRPO's."""
    import json

    from minirlhf.experiments import grpo_rloo, small_vs_big

    docs = Path(__file__).resolve().parents[1] / "docs" / "experiments"
    svb = json.loads((docs / "small_vs_big" / "result.json").read_text())
    assert "ahead of the big SFT-only model in 3 of 3 seeds" in small_vs_big.summary(svb)
    assert "by more than 2 standard errors in 2)" in small_vs_big.summary(svb)
    grpo = json.loads((docs / "grpo_rloo" / "result.json").read_text())
    assert "Highest mean held-out gold reward: RLOO (0.379); within 2 standard errors of it: PPO;" in (
        grpo_rloo.summary(grpo))
