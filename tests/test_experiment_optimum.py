"""The optimum experiment end to end on tiny untrained models: its schema, its curves' shape, best-of-n on the
support's own draws, the gap's arithmetic, the plot and the summary."""
import json

import jax
import numpy as np
import pytest

from minirlhf import dpo, ppo, ppo_losses, transformer
from minirlhf.data import PROMPT_WIDTH, RESPONSE_WIDTH
from minirlhf.experiments import optimum as exp
from minirlhf.experiments.base import BaseModels
from minirlhf.pipeline import PipelineConfig, stage_keys
from minirlhf.preferences import make_pairs
from minirlhf.tokenizer import VOCAB_SIZE
from minirlhf.training import OptimConfig
from minirlhf.world import make_world, math_prompt, secret_prompt

TINY = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=PROMPT_WIDTH + RESPONSE_WIDTH, d_model=16, n_layers=1,
                               n_heads=2, d_mlp=32)
SCHEMA = {"experiment", "config", "seeds", "aggregate"}


@pytest.fixture(scope="module")
def tiny_base():
    """Untrained tiny models in the BaseModels layout, with a few labelled pairs for DPO."""
    key_lm, key_head, key_pairs = jax.random.split(jax.random.PRNGKey(0), 3)
    lm, world = transformer.init_params(key_lm, TINY), make_world()
    cfg = PipelineConfig(model=TINY, ppo=ppo.PPOConfig(batch_size=8, minibatches=2, ppo_epochs=1),
                         dpo=dpo.DPOConfig(optim=OptimConfig(steps=2, batch_size=4, warmup=1)))
    pairs = make_pairs(key_pairs, lm, world, TINY, 8)
    return BaseModels(cfg, world, stage_keys(0), lm, lm, {"lm": lm, "head": transformer.init_scalar_head(key_head, TINY)},
                      pairs, {"accuracy_gold": 0.5})


@pytest.fixture(scope="module")
def tiny_result(tiny_base):
    cfg = exp.Config(betas=(0.1, 1.0), draws=8, bon_ns=(1, 2), ppo_iterations=2, n_eval=8,
                     pipeline=tiny_base.cfg)
    return exp.run(cfg, seeds=(0,), cache=None, bases={0: tiny_base})


def test_tiny_optimum_result_structure(tiny_result, tmp_path):
    json.dumps(tiny_result)  # plain data only
    assert set(tiny_result) == SCHEMA and tiny_result["experiment"] == "optimum"
    seed = tiny_result["seeds"]["0"]
    assert {"sft", "ppo", "dpo", "best_of_n", "curves", "optimum_at_ppo_beta", "gap", "coverage", "sft_gold"} <= set(seed)
    assert {"lost_to_rm", "lost_to_optimizer", "lost_to_rm_restricted", "lost_to_optimizer_restricted"} <= set(seed["gap"])
    assert set(seed["curves"]) == {"rm", "gold"} and set(seed["curves"]["rm"]) == {"0.1", "1.0"}
    assert set(seed["best_of_n"]) == {"1", "2"}
    point = seed["curves"]["gold"]["0.1"]
    assert {"gold", "rm", "reward", "kl", "kl_restricted", "objective", "objective_restricted"} <= set(point)
    assert 0 < seed["coverage"]["min"] <= seed["coverage"]["mean"] <= 1 + 1e-6
    assert tiny_result["aggregate"]["gap"]["lost_to_rm"]["values"] == [seed["gap"]["lost_to_rm"]]
    text = exp.summary(tiny_result)
    assert "lost to the reward model" in text and "optimum of its own objective" in text
    fig = exp.plot(tiny_result)
    fig.savefig(tmp_path / "plot.png", dpi=40)
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_the_curves_behave_like_optima(tiny_result):
    seed = tiny_result["seeds"]["0"]
    for name in ("rm", "gold"):
        small, big = seed["curves"][name]["0.1"], seed["curves"][name]["1.0"]
        eps = 1e-9  # an untrained model's gold is mostly -0.5 everywhere: then both KLs are 0 up to rounding
        assert small["kl"] >= big["kl"] - eps and big["kl"] >= -eps, f"{name}: a smaller beta moves pi* further from SFT"
        assert small["reward"] >= big["reward"] - eps, f"{name}: a smaller beta buys more of its own reward"
        assert small["kl_restricted"] >= small["kl"] - eps, "the unseen mass can only add log(1/coverage)"
    assert seed["curves"]["gold"]["0.1"]["gold"] >= seed["curves"]["rm"]["0.1"]["gold"] - 0.2, (
        "at similar KL no policy beats gold's own optimum by much (the two are at different KLs here)")


def test_best_of_n_and_the_optimum_see_the_same_draws(tiny_result):
    """Best-of-n's estimate and the optimum are taken over the same SFT draws per prompt (the same key), so the SFT
    mass their distinct responses hold is the same (up to the sampler's rounding of the log-probs)."""
    seed = tiny_result["seeds"]["0"]
    assert seed["coverage"]["mean"] == pytest.approx(seed["best_of_n"]["1"]["coverage"], abs=1e-4), (
        "the support should be drawn with best_of_n_curves' key for each distinct prompt")
    assert seed["best_of_n"]["1"]["kl"] == pytest.approx(0.0, abs=1e-6), "best-of-1 is SFT"


def test_the_optimum_on_best_of_ns_draws_is_the_optimum_drawn_afresh(tiny_base):
    """run_seed hands best-of-n's draws to optimum_curves instead of sampling them again: the same key, so the
    same support, the same curves to the last bit."""
    from minirlhf.experiments.toolkit import bon_draws, eval_prompts, rm_scores
    cfg = exp.Config(draws=8, bon_ns=(1, 2), n_eval=8, pipeline=tiny_base.cfg)
    prompts = eval_prompts(tiny_base, cfg.n_eval)
    found = bon_draws(tiny_base, prompts, cfg.draws, rm_scores(tiny_base, {"rm": tiny_base.rm}))
    assert exp.optimum_curves(cfg, tiny_base, prompts, (0.1, 1.0), found) == exp.optimum_curves(
        cfg, tiny_base, prompts, (0.1, 1.0))


def test_gap_is_the_curves_read_at_ppos_kl():
    curves = {"rm": {"1": {"kl": 0.0, "gold": 0.0}, "0.1": {"kl": 2.0, "gold": 0.4}},
              "gold": {"1": {"kl": 0.0, "gold": 0.0}, "0.1": {"kl": 2.0, "gold": 1.0}}}
    for curve in curves.values():
        for v in curve.values():
            v["kl_restricted"] = v["kl"] + 1.0  # as if the support held 1/e of SFT's mass
    g = exp.gap({"kl": 1.0, "gold": 0.1, "objective": 0.5}, {"objective": 0.7, "objective_restricted": 0.6}, curves)
    assert g["gold_optimum_of_rm_at_ppo_kl"] == pytest.approx(0.2) and g["gold_optimum_of_gold_at_ppo_kl"] == pytest.approx(0.5)
    assert g["lost_to_rm"] == pytest.approx(0.3) and g["lost_to_optimizer"] == pytest.approx(0.1)
    assert g["objective_shortfall"] == pytest.approx(0.2)
    assert g["lost_to_rm_restricted"] == 0.0 and g["lost_to_optimizer_restricted"] == pytest.approx(-0.1), (
        "read off the restricted curves, PPO's KL of 1 lies at their left end (KL 1 there): gold 0 for both optima")
    assert exp.gold_at_kl(curves["gold"], 5.0) == 1.0, "beyond the sweep the curve holds its end value"


def test_config_rejects_bad_input():
    with pytest.raises(ValueError, match="betas"):
        exp.Config(betas=(0.0, 1.0))
    with pytest.raises(ValueError, match="bon_ns"):
        exp.Config(draws=8, bon_ns=(16,))
    with pytest.raises(ValueError, match="adaptive"):
        exp.Config(pipeline=PipelineConfig(ppo=ppo.PPOConfig(adaptive=ppo_losses.AdaptiveKLConfig())))


def test_distinct_prompts_counts_repeats_in_first_seen_order():
    a, b = math_prompt(1, "plus", 2), secret_prompt(make_world(), 0)
    assert [(p.words, n) for p, n in exp.distinct_prompts([a, b, a])] == [(a.words, 2), (b.words, 1)]
    assert np.isclose(sum(n for _, n in exp.distinct_prompts([a, b, a])), 3)
