"""Over-optimization and frontier experiments: the fitted forms, the best-of-n estimator, and tiny runs."""
import dataclasses
import itertools
import json

import jax
import numpy as np
import pytest

from minirlhf import ppo, transformer
from minirlhf.data import PROMPT_WIDTH, RESPONSE_WIDTH
from minirlhf.experiments import frontier
from minirlhf.experiments import overoptimization as oo
from minirlhf.experiments import small_vs_big as svb
from minirlhf.experiments.base import BaseModels
from minirlhf.experiments.toolkit import checkpoints
from minirlhf.pipeline import PipelineConfig, stage_keys
from minirlhf.tokenizer import VOCAB_SIZE
from minirlhf.world import make_world

# ---------------------------------------------------------------- the functional forms


@pytest.mark.parametrize("alpha, beta", [(0.5, 0.2), (0.3, 0.05), (1.0, 0.6)])
def test_fit_bon_recovers_alpha_and_beta(alpha, beta):
    d = np.linspace(0, 3, 25)
    noise = np.random.default_rng(0).normal(0, 1e-3, d.shape)
    got = oo.fit_bon(d, oo.bon_form(d, alpha, beta) + noise)
    assert np.allclose(got, (alpha, beta), atol=5e-3), (
        f"fit_bon gave (alpha, beta) = {got} for data made with {(alpha, beta)}: R_bon = alpha d - beta d^2 is "
        f"linear in (alpha, beta); are the features d and -d^2?")


@pytest.mark.parametrize("alpha, beta", [(0.5, 0.2), (0.3, 0.05), (1.0, 0.6)])
def test_fit_rl_recovers_alpha_and_beta(alpha, beta):
    d = np.linspace(0, 4, 25)  # includes d = 0, where d log d must be taken as 0
    noise = np.random.default_rng(1).normal(0, 1e-3, d.shape)
    got = oo.fit_rl(d, oo.rl_form(d, alpha, beta) + noise)
    assert np.all(np.isfinite(got)), "fit_rl produced NaN: d log d at d = 0 must be 0, not 0 * -inf"
    assert np.allclose(got, (alpha, beta), atol=5e-3), (
        f"fit_rl gave {got} for data made with {(alpha, beta)}: the features are d and -d log d")


def test_form_peaks_are_where_the_forms_are_highest():
    d = np.linspace(1e-4, 20, 200001)
    for form, fn, (alpha, beta) in (("bon", oo.bon_form, (0.5, 0.2)), ("rl", oo.rl_form, (0.5, 0.3))):
        want = d[np.argmax(fn(d, alpha, beta))]
        assert np.isclose(oo.form_peak(form, alpha, beta), want, atol=1e-3), f"{form}: peak should be at d = {want:.3f}"
    assert oo.form_peak("bon", 0.5, 0.0) == float("inf"), "beta = 0: the form never turns down"


def test_fits_need_two_points():
    with pytest.raises(ValueError, match="at least 2"):
        oo.fit_bon(np.array([1.0]), np.array([0.1]))


# ---------------------------------------------------------------- best-of-n from fixed draws


def test_best_of_n_mean_matches_every_subset():
    """The estimator is the exact average over all n-subsets of the draws (a plain-loop reference)."""
    rng = np.random.default_rng(2)
    m = 7
    scores, values = rng.normal(size=m), rng.normal(size=m)
    for n in range(1, m + 1):
        subsets = list(itertools.combinations(range(m), n))
        want = np.mean([values[list(s)][np.argmax(scores[list(s)])] for s in subsets])
        got = oo.best_of_n_mean(scores, values, n)
        assert np.isclose(got, want), f"n = {n}: {got:.5f} vs the average over all subsets {want:.5f}"
    assert np.isclose(oo.best_of_n_mean(scores, values, 1), values.mean()), "best-of-1 is the plain mean"
    with pytest.raises(ValueError):
        oo.best_of_n_mean(scores, values, m + 1)


def test_checkpoints_are_log_spaced_and_end_at_the_last_iteration():
    marks = checkpoints(150, 12)
    assert marks[0] == 1 and marks[-1] == 150 and marks == sorted(set(marks))
    assert np.diff(marks)[-1] > np.diff(marks)[0], "later checkpoints should be further apart"


def test_config_rejects_bad_input():
    with pytest.raises(ValueError):
        oo.Config(bon_ns=(1, 512), bon_draws=256)
    with pytest.raises(ValueError):
        oo.Config(ppo_runs=())
    with pytest.raises(ValueError):
        frontier.Config(dpo_betas=(0.0,))


def test_pareto_front_drops_dominated_points():
    s = lambda g, k: {"gold": {"mean": g}, "kl": {"mean": k}}
    means = {"sft": {"gold": {"mean": 0.0}}, "ppo": {"0.1": s(0.2, 3.0), "0.3": s(0.1, 1.0)},
             "dpo": {"0.3": s(0.15, 0.5)}, "best_of_n": {"4": s(0.3, 1.5)}}
    front = [(p["method"], p["setting"]) for p in frontier.pareto_front(means)]
    assert front == [("sft", ""), ("dpo", "0.3"), ("best_of_n", "4")], front


# ---------------------------------------------------------------- tiny runs

TINY = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=PROMPT_WIDTH + RESPONSE_WIDTH, d_model=16, n_layers=1,
                               n_heads=2, d_mlp=32)


@pytest.fixture(scope="module")
def tiny_base():
    """Untrained tiny models in the BaseModels layout: enough to run every code path quickly."""
    key_lm, key_head = jax.random.split(jax.random.PRNGKey(0))
    lm = transformer.init_params(key_lm, TINY)
    cfg = PipelineConfig(model=TINY, ppo=ppo.PPOConfig(batch_size=8, minibatches=2, ppo_epochs=1))
    return BaseModels(cfg, make_world(), stage_keys(0), lm, lm,
                      {"lm": lm, "head": transformer.init_scalar_head(key_head, TINY)}, {}, {"accuracy_gold": 0.5})


# Every batch holds 8 rows (PPO's, the evaluation's, best-of-n's draws), so each jitted function compiles once.
TINY_CFG = oo.Config(ppo_runs=((0.0, 3e-4), (0.1, 3e-4)), ppo_iterations=3, n_checkpoints=3, n_eval=8,
                     bon_ns=(1, 2, 4), bon_draws=8, rm_pairs=(), n_shown=3)


@pytest.fixture(scope="module")
def tiny_result(tiny_base):
    return oo.run(TINY_CFG, seeds=(0,), cache=None, bases={0: tiny_base})


def assert_plot_saves(fig, folder):
    """The figure draws and saves as a non-empty PNG (what `python -m minirlhf experiment` writes)."""
    import matplotlib.pyplot as plt
    path = folder / "plot.png"
    fig.savefig(path, dpi=40)
    plt.close(fig)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000, "plot() should draw a figure"


SCHEMA = {"experiment", "config", "seeds", "aggregate"}  # every experiment's result, per-seed data under "seeds"


def test_tiny_overoptimization_result_structure(tiny_result, tmp_path):
    json.dumps(tiny_result)  # plain data only
    assert set(tiny_result) == SCHEMA and tiny_result["experiment"] == "overoptimization"
    seed = tiny_result["seeds"]["0"]
    for name in ("beta=0 lr=0.0003", "beta=0.1 lr=0.0003"):
        curve = seed["ppo"][name]
        assert curve["iteration"] == [0, 1, 2, 3], "SFT (iteration 0) and every checkpoint are measured"
        for k in ("gold", "proxy", "kl", "d", "refuses_answerable", "samples"):
            assert len(curve[k]) == 4, f"{k} should have one entry per checkpoint"
        assert curve["kl"][0] == pytest.approx(0.0, abs=1e-5), "SFT's KL to itself is 0"
    bon = seed["bon"]["2000"]
    assert bon["n"] == [1, 2, 4] and bon["kl"][0] == pytest.approx(0.0, abs=1e-6), "best-of-1 is SFT: KL 0"
    assert all(k <= b + 1e-6 for k, b in zip(bon["kl"], bon["bound"])), "best-of-n's KL must respect its bound"
    assert set(seed["fits"]) == {"bon", "rl"}
    agg = tiny_result["aggregate"]
    assert {"ppo beta=0 lr=0.0003", "ppo beta=0.1 lr=0.0003", "bon 2000 pairs", "fit bon", "fit rl"} <= set(agg)
    assert "Reward over-optimization" in oo.summary(tiny_result)
    assert_plot_saves(oo.plot(tiny_result), tmp_path)


def test_tiny_overoptimization_is_deterministic(tiny_base, tiny_result):
    one_run = dataclasses.replace(TINY_CFG, ppo_runs=TINY_CFG.ppo_runs[:1])  # the same compiled steps, half the work
    again, before = oo.run(one_run, seeds=(0,), cache=None, bases={0: tiny_base})["seeds"]["0"], tiny_result["seeds"]["0"]
    for part in ("bon", "fits"):
        assert json.dumps(again[part]) == json.dumps(before[part]), f"the same seed must give the same {part}"
    name = oo.run_name(*TINY_CFG.ppo_runs[0])
    assert json.dumps(again["ppo"][name]) == json.dumps(before["ppo"][name]), "the same seed must give the same PPO run"


def test_tiny_frontier_result_structure(tiny_base, tmp_path):
    cfg = frontier.Config(ppo_betas=(0.1,), ppo_iterations=3, dpo_betas=(), bon_ns=(1, 2), bon_draws=8, n_eval=8)
    result = frontier.run(cfg, seeds=(0,), cache=None, bases={0: tiny_base})
    json.dumps(result)
    assert set(result) == SCHEMA and list(result["seeds"]) == ["0"]
    assert set(result["aggregate"]) == {"sft", "ppo", "dpo", "best_of_n", "pareto"}
    assert set(result["aggregate"]["best_of_n"]) == {"1", "2"}
    assert result["aggregate"]["pareto"], "the front holds at least one point"
    assert "Pareto front" in frontier.summary(result)
    assert_plot_saves(frontier.plot(result), tmp_path)


def test_seed_spread_is_the_sample_std_and_skips_nan():
    from minirlhf.experiments import seed_spread
    s = seed_spread([1.0, 2.0, 3.0])
    assert (s["mean"], s["min"], s["max"]) == (2.0, 1.0, 3.0)
    assert s["std"] == pytest.approx(1.0)  # ddof = 1: sqrt(((1-2)^2 + 0 + (3-2)^2) / 2)
    assert seed_spread([0.7])["std"] == 0.0  # one seed: no spread
    with_nan = seed_spread([1.0, float("nan"), 3.0])
    assert with_nan["mean"] == 2.0 and with_nan["std"] == pytest.approx(2 ** 0.5) and len(with_nan["values"]) == 3
    assert np.isnan(seed_spread([float("nan")])["mean"])


def test_tiny_small_vs_big_measures_all_three_on_the_same_prompts(tiny_base, tmp_path):
    """small_vs_big's whole path on the tiny base: with the "big" model the small SFT model itself, the two SFT
    rows must read the same numbers (same params, prompts and key), and the margin is small PPO - big SFT."""
    cfg = svb.Config(big=TINY, pipeline=tiny_base.cfg, ppo_iterations=2, n_eval=8)
    seed = svb.run_seed(0, cfg, cache=None, small_base=tiny_base, big_sft=tiny_base.sft)
    for k in ("gold", "kl", "answer_rate", "params", "components"):
        assert seed["small_sft"][k] == seed["big_sft"][k], f"the same model on the same prompts changed its {k}"
    result = svb.collect(cfg, {"0": seed})
    json.dumps(result)
    assert set(result) == SCHEMA
    margin = result["aggregate"]["small_ppo_minus_big_sft"]
    assert margin["mean"] == seed["small_ppo"]["gold"] - seed["big_sft"]["gold"]
    assert margin["wins"] == int(margin["mean"] > 0)
    assert "Small + RLHF vs big SFT" in svb.summary(result)
    assert_plot_saves(svb.plot(result), tmp_path)
