"""Iterated online RLHF end to end on tiny untrained models: the schema, the equal label budget, the union of the
rounds' pairs, the hack finder, the gold-free stop, the plot and the summary."""
import dataclasses
import json

import jax
import numpy as np
import pytest

from minirlhf import ppo, reward_model, transformer
from minirlhf.data import PROMPT_WIDTH, RESPONSE_WIDTH
from minirlhf.experiments import iterated as exp
from minirlhf.experiments import monitoring
from minirlhf.experiments.base import BaseModels
from minirlhf.pipeline import PipelineConfig, stage_keys
from minirlhf.preferences import make_pairs
from minirlhf.tokenizer import VOCAB_SIZE
from minirlhf.training import OptimConfig
from minirlhf.world import make_world

TINY = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=PROMPT_WIDTH + RESPONSE_WIDTH, d_model=16, n_layers=1,
                               n_heads=2, d_mlp=32)
SCHEMA = {"experiment", "config", "seeds", "aggregate"}
BUDGET, ROUNDS = 8, 2  # the tiny pipeline's RM has BUDGET pairs: the single pass reuses it, as the full run does


@pytest.fixture(scope="module")
def tiny_base():
    """Untrained tiny models in the BaseModels layout; the RM trains for two steps of four pairs."""
    key_lm, key_head = jax.random.split(jax.random.PRNGKey(0))
    lm = transformer.init_params(key_lm, TINY)
    rm_cfg = reward_model.RMConfig(n_pairs=BUDGET, n_heldout=8, n_normalize=8,
                                   optim=OptimConfig(steps=2, batch_size=4, warmup=1))
    cfg = PipelineConfig(model=TINY, rm=rm_cfg, ppo=ppo.PPOConfig(batch_size=8, minibatches=2, ppo_epochs=1))
    return BaseModels(cfg, make_world(), stage_keys(0), lm, lm,
                      {"lm": lm, "head": transformer.init_scalar_head(key_head, TINY)}, {}, {"accuracy_gold": 0.5})


@pytest.fixture(scope="module")
def tiny_cfg(tiny_base):
    return exp.Config(rounds=ROUNDS, label_budget=BUDGET, iterations=4, betas=(0.2, 0.0), n_eval=8, n_heldout=8,
                      pipeline=tiny_base.cfg)


@pytest.fixture(scope="module")
def tiny_run(tiny_base, tiny_cfg):
    kept = {}
    return exp.run(tiny_cfg, seeds=(0,), cache=None, bases={0: tiny_base}, keep=kept), kept


@pytest.fixture(scope="module")
def tiny_result(tiny_run):
    return tiny_run[0]


def test_kept_policies_are_each_runs_last_one(tiny_run, tiny_base):
    """run(keep=...) hands back the final policy of both runs at every beta: measured again, each gives the gold of
    its last round."""
    from minirlhf.experiments.toolkit import eval_prompts, measure
    result, kept = tiny_run
    assert set(kept) == {0} and set(kept[0]) == {"beta=0.2", "beta=0"}
    prompts = eval_prompts(tiny_base, result["config"]["n_eval"])
    for beta, runs in kept[0].items():
        assert set(runs) == set(exp.METHODS)
        for name, params in runs.items():
            last = result["seeds"]["0"]["runs"][beta][name]["rounds"][-1]
            assert measure(params, tiny_base, prompts)[0]["gold"] == last["gold"], (beta, name)
            moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(tiny_base.sft))]
            assert any(moved), f"{beta} {name}: the kept params are SFT's, not the trained policy's"


def test_tiny_iterated_result_structure(tiny_result):
    json.dumps(tiny_result)  # plain data only
    assert set(tiny_result) == SCHEMA and tiny_result["experiment"] == "iterated"
    runs = tiny_result["seeds"]["0"]["runs"]
    assert set(runs) == {"beta=0.2", "beta=0"}
    for run in runs.values():
        for method in exp.METHODS:
            rounds = run[method]["rounds"]
            assert [r["round"] for r in rounds] == [1, 2], f"{method}: one record per round"
            for r in rounds:
                assert {"gold", "gold_se", "kl", "proxy", "proxy_start", "per_kind", "rm", "hack", "proxy_slope",
                        "entropy"} <= set(r)
                assert set(r["rm"]) == {"on_start", "on_end", "on_sft"}
                assert not any(k.startswith("_") for k in r), "private fields (tokens, pairs) must not reach the result"
            assert len(run[method]["curves"]["gold"]) == 4, "one logged value per PPO iteration, all rounds together"
    agg = tiny_result["aggregate"]["beta=0"]
    assert set(agg["iterated"]) == {"1", "2"} and agg["final_gold_gap"]["seeds"] == 1


def test_tiny_iterated_summary_and_plot(tiny_result, tmp_path):
    text = exp.summary(tiny_result)
    assert "Equal label budget: 2 rounds x 4 pairs against 8 pairs" in text, "the summary should state the budgets"
    assert text.count("### beta=") == 2 and "**Hacks**" in text and "**Gold-free signals**" in text
    assert text.count("**Stopping without gold**") == 2, "each beta reports where the gold-free rule stops"
    path = tmp_path / "plot.png"
    exp.plot(tiny_result).savefig(path, dpi=40)
    assert path.stat().st_size > 1000, "plot() should draw every panel"


def test_equal_label_budget(tiny_result):
    """The iterated run labels budget / R pairs a round, reaching exactly the single pass's budget at the end."""
    runs = tiny_result["seeds"]["0"]["runs"]["beta=0"]
    assert [r["pairs"] for r in runs["iterated"]["rounds"]] == [BUDGET // ROUNDS * r for r in range(1, ROUNDS + 1)], (
        "round r's RM should be trained on the r * budget / R pairs labelled so far")
    assert all(r["pairs"] == BUDGET for r in runs["single"]["rounds"]), "the single pass spends its budget at once"


def test_round_one_is_the_same_at_every_beta(tiny_result):
    """Round 1 labels SFT's samples with the same keys at every beta, so its RM (hence its proxy of SFT) is the same."""
    runs = tiny_result["seeds"]["0"]["runs"]
    first = [runs[b]["iterated"]["rounds"][0]["proxy_start"] for b in runs]
    assert first[0] == first[1], "round 1's RM should be trained once, on SFT's pairs, for every beta"


def test_union_concatenates_every_round_in_order(tiny_base):
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    sets = [make_pairs(k, tiny_base.sft, tiny_base.world, TINY, n) for k, n in zip(keys, (2, 3, 4))]
    pairs = exp.union(sets)
    assert set(pairs) == set(sets[0])
    for k in pairs:
        assert len(pairs[k]) == 9, f"{k}: the union should hold 2 + 3 + 4 pairs"
        assert np.array_equal(pairs[k], np.concatenate([s[k] for s in sets])), f"{k}: rows out of round order"
    assert np.array_equal(pairs["chosen_tokens"][2:5], sets[1]["chosen_tokens"]), "round 2's pairs sit after round 1's"
    with pytest.raises(ValueError, match="same arrays"):
        exp.union([sets[0], {k: v for k, v in sets[1].items() if k != "kind"}])


def test_rm_steps_keep_the_pipelines_passes_over_the_data(tiny_base):
    base = tiny_base._replace(cfg=dataclasses.replace(tiny_base.cfg, rm=reward_model.RMConfig()))  # 2000 pairs, 300 steps
    assert [exp.rm_config(base, n).optim.steps for n in (500, 1000, 2000)] == [75, 150, 300]
    assert exp.rm_config(base, 500).n_pairs == 500 and exp.rm_config(base, 1).optim.steps == 1


def test_find_hack_picks_the_most_common_over_rated_bad_response_of_a_kind():
    text = ["sorry .", "it is 2 .", "sorry .", "it is 3 .", "blah", "blah", "blah", "sorry ."]
    kinds = ["math", "math", "math", "math", "color", "color", "color", "secret"]
    gold = np.array([-0.5, 1.0, -0.5, -0.4, -0.5, -0.5, -0.5, 1.0])  # the refusal is right for the secret only
    scores = np.array([0.9, 1.2, 0.8, 0.1, -0.2, -0.3, -0.1, 2.0])  # "blah" is common but the RM already dislikes it
    hack = monitoring.find_hack(text, kinds, gold, scores)
    assert (hack["kind"], hack["text"]) == ("math", "sorry ."), f"the refusal on sums is the hack, got {hack}"
    assert hack["share"] == pytest.approx(2 / 4), "share among math replies: 2 of 4"
    assert hack["gold"] == -0.5, "gold of the hack on math prompts only, not the secret's +1"
    assert monitoring.find_hack(text, kinds, np.ones(8), scores) is None, "no response with gold < 0: no hack"
    assert monitoring.margin_over_good(text, kinds, gold, scores, hack) == pytest.approx(0.85 - 1.2), (
        "the margin compares the hack with the good replies to prompts of its own kind")
    ev = {"text": text, "kind": kinds, "gold": gold, "scores": scores}
    next_text = ["it is 7 .", "sorry .", "it is 7 .", "it is 7 .", "blah", "blah", "blah", "sorry ."]
    followed = monitoring.follow_hack(hack, ev, scores - 1.0, next_text)
    assert followed["margin_next_rm"] == pytest.approx(0.85 - 1.2), "a shift of every score leaves the margin"
    assert followed["share_next"] == pytest.approx(1 / 4), "the next policy says the hack on 1 of the 4 sums"
    assert "-> next round's RM -0.35, next policy says it 25%" in monitoring.hack_text(followed)
    assert "share_next" not in monitoring.follow_hack(hack, ev), "the last round has no next round to follow it into"


def test_label_stop_keeps_the_round_before_the_rm_loses_the_labelers():
    """The gold-free rule on a run: the RM's agreement with the labelers on the policy's fresh pairs falls below its
    agreement on SFT's by more than twice the noise (0.089 on 250 pairs each) at round 2, so round 1 is kept."""
    cfg = {"iterations_per_round": 10, "n_heldout": 250}
    acc = lambda on_end: {"on_sft": {"labels": 0.70}, "on_end": {"labels": on_end}}
    rounds = [{"round": r, "gold": g, "kl": k, "rm": acc(a)}
              for r, g, k, a in ((1, 0.30, 1.0, 0.65), (2, 0.40, 2.0, 0.60), (3, 0.10, 4.0, 0.50))]
    stop = exp.label_stop({"gold": 0.05, "kl": 0.0}, rounds, cfg)
    assert (stop["index"], stop["iteration"], stop["gold"]) == (1, 10, 0.30), (
        f"a drop of 0.10 (> 0.089) at round 2 should stop there and keep round 1 (iteration 10), got {stop}")
    assert (stop["best_iteration"], stop["best_gold"]) == (20, 0.40) and stop["regret"] == pytest.approx(0.10)
    never = [dict(r, rm=acc(0.69)) for r in rounds]
    assert exp.label_stop({"gold": 0.05, "kl": 0.0}, never, cfg)["index"] == 3, "no alarm: the last round is kept"


def test_config_rejects_budgets_that_do_not_split_into_rounds():
    with pytest.raises(ValueError, match="split evenly"):
        exp.Config(rounds=3, label_budget=2000)
    with pytest.raises(ValueError, match="split evenly"):
        exp.Config(rounds=4, iterations=30)
    with pytest.raises(ValueError, match="betas"):
        exp.Config(betas=())
