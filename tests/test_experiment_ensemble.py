"""The ensemble experiment end to end on tiny untrained models: its schema, its curves, the members it trains and
caches, the stop it reads, the plot and the summary."""
import json

import jax
import numpy as np
import pytest

from minirlhf import ppo, reward_model, transformer
from minirlhf.data import PROMPT_WIDTH, RESPONSE_WIDTH
from minirlhf.experiments import ensemble as exp
from minirlhf.experiments import load
from minirlhf.experiments.base import BaseModels
from minirlhf.experiments.toolkit import best_of_n_curves, eval_prompts
from minirlhf.pipeline import PipelineConfig, stage_keys
from minirlhf.preferences import make_pairs
from minirlhf.tokenizer import VOCAB_SIZE
from minirlhf.training import OptimConfig
from minirlhf.world import make_world

TINY = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=PROMPT_WIDTH + RESPONSE_WIDTH, d_model=16, n_layers=1, n_heads=2,
                               d_mlp=32)
SCHEMA = {"experiment", "config", "seeds", "aggregate"}


@pytest.fixture(scope="module")
def tiny_base():
    """Untrained tiny models in the BaseModels layout, with a few labelled pairs for the members to train on."""
    key_lm, key_head, key_pairs = jax.random.split(jax.random.PRNGKey(0), 3)
    lm, world = transformer.init_params(key_lm, TINY), make_world()
    rm_cfg = reward_model.RMConfig(n_pairs=8, n_heldout=8, n_normalize=8,
                                   optim=OptimConfig(steps=2, batch_size=4, warmup=1))
    cfg = PipelineConfig(model=TINY, rm=rm_cfg, ppo=ppo.PPOConfig(batch_size=8, minibatches=2, ppo_epochs=1))
    pairs = make_pairs(key_pairs, lm, world, TINY, 8)
    rm = {"lm": lm, "head": transformer.init_scalar_head(key_head, TINY)}
    return BaseModels(cfg, world, stage_keys(0), lm, lm, rm, pairs, {"accuracy_gold": 0.5})


@pytest.fixture(scope="module")
def tiny_run(tiny_base, tmp_path_factory):
    cfg = exp.Config(k=3, objectives=(("mean", 0.0), ("mean_minus_std", 1.0)), ppo_iterations=2, n_checkpoints=2,
                     n_eval=8, bon_ns=(1, 2, 4), bon_draws=4, pipeline=tiny_base.cfg)
    cache = tmp_path_factory.mktemp("cache")
    return cfg, cache, exp.run(cfg, seeds=(0,), cache=cache, bases={0: tiny_base})


def test_tiny_ensemble_result_structure(tiny_run, tmp_path):
    cfg, cache, result = tiny_run
    json.dumps(result)  # plain data only
    assert set(result) == SCHEMA and result["experiment"] == "ensemble"
    seed = result["seeds"]["0"]
    names = ["single", "mean", "mean - 1 std"]
    assert list(seed["ppo"]) == names and list(seed["bon"]) == names
    curve = seed["ppo"]["mean"]
    assert curve["iteration"] == [0, 1, 2]
    for key in ("gold", "kl", "proxy", "disagreement", "alarm_share", "entropy", "proxy_slope", "d"):
        assert len(curve[key]) == 3, f"{key} should have one value per checkpoint (SFT included)"
    assert curve["alarm_share"][0] == pytest.approx(1 - cfg.alarm_quantile), "SFT's share is 1 - quantile by design"
    assert {"index", "iteration", "gold", "best_gold", "regret"} <= set(curve["stop"])
    assert curve["stop"]["regret"] >= 0, "no checkpoint's gold beats the best checkpoint's"
    assert seed["bon"]["single"]["n"] == [1, 2, 4] and len(seed["bon"]["mean"]["kl"]) == 3
    assert np.isclose(seed["bon"]["mean"]["kl"][0], 0, atol=1e-9), "best-of-1 is SFT itself: KL 0"
    assert len(seed["members"]) == 3 and seed["members"][0]["seconds"] is None, "member 0 is the pipeline's RM"
    assert len(list(cache.glob("rm_member-*.npz"))) == 2, "the k - 1 extra members are kept in the cache"
    agg = result["aggregate"]
    assert agg["ppo mean"]["gold_peak"]["values"] == [curve["peak"]["gold_peak"]]
    assert agg["ppo single"]["stop"]["regret"]["values"] == [seed["ppo"]["single"]["stop"]["regret"]]
    text = exp.summary(result)
    assert "Stopping without gold" in text and "minus the single RM's" in text
    fig = exp.plot(result)
    fig.savefig(tmp_path / "plot.png", dpi=40)
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_the_single_rms_best_of_n_is_the_toolkits(tiny_run, tiny_base):
    """One best-of-n: the ensemble's curve for the pipeline's RM alone is `toolkit.best_of_n_curves`' (same draws)."""
    cfg, _, result = tiny_run
    prompts = eval_prompts(tiny_base, cfg.n_eval)
    want = best_of_n_curves(tiny_base, {"rm": tiny_base.rm}, prompts, cfg.bon_ns, cfg.bon_draws)["rm"]
    for k in ("gold", "proxy", "kl"):
        assert result["seeds"]["0"]["bon"]["single"][k] == want[k], (
            f"best-of-n's {k} by the single RM differs between the ensemble and the toolkit: not the same draws?")


def test_members_come_back_from_the_cache_unchanged(tiny_run, tiny_base):
    cfg, cache, _ = tiny_run
    again, info = exp.members(cfg, tiny_base, cache)
    assert info[1]["seconds"] > 0, "a cached member keeps the seconds its training took"
    first = exp.members(cfg, tiny_base, cache)[0]
    for a, b in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(first)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(again[1]["head"]["w"], again[2]["head"]["w"]), "members must differ (own keys)"


def test_registered_and_config_rejects_bad_input():
    assert load("ensemble") is exp
    with pytest.raises(ValueError, match="k"):
        exp.Config(k=1)
    with pytest.raises(ValueError, match="objectives"):
        exp.Config(objectives=(("max", 0.0),))
    with pytest.raises(ValueError, match="bon_ns"):
        exp.Config(bon_ns=(1, 2048))
