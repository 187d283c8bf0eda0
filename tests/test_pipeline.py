"""The one-command pipeline, checkpoints, the training loop and evaluation helpers."""
import json
import math

import jax
import numpy as np
import pytest

from minirlhf import checkpoint, evaluation, transformer, world
from minirlhf.__main__ import main
from minirlhf.pipeline import PipelineConfig, run_pipeline
from minirlhf.pretrain import PretrainConfig, pretrain
from minirlhf.tokenizer import VOCAB_SIZE
from minirlhf.training import OptimConfig

TINY = transformer.ModelConfig(vocab_size=VOCAB_SIZE, d_model=32, n_layers=1, n_heads=2, d_mlp=64)
WORLD = world.make_world()
MODELS = ["pretrained", "sft", "ppo", "dpo", "best_of_n"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    metrics = run_pipeline(PipelineConfig.quick(seed=0), str(out))
    return out, metrics


def test_quick_pipeline_writes_the_documented_files_and_keys(quick_run):
    out, _ = quick_run
    for name in ["metrics.json", "report.md", "training_curves.png", "gold_vs_proxy.png", "reward_vs_kl.png"]:
        assert (out / name).exists(), f"the pipeline should write {name}"
    metrics = json.loads((out / "metrics.json").read_text())
    for m in MODELS:
        for key in ["gold_reward", "answer_rate", "kl_to_sft", "proxy_reward"]:
            assert math.isfinite(metrics[m][key]), f"metrics.json[{m!r}][{key!r}] missing or not finite"
    assert metrics["sft"]["kl_to_sft"] == 0.0, "SFT's KL to itself must be exactly 0"
    assert {"accuracy_gold", "accuracy_labels"} <= set(metrics["reward_model"])
    assert set(metrics["seconds"]) >= {"pretrain", "sft", "reward_model", "ppo", "dpo"}
    assert "| sft |" in (out / "report.md").read_text()


def test_cli_rejects_unknown_options(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--sede", "3"])


def test_pretraining_is_deterministic_given_the_seed():
    cfg = PretrainConfig(n_docs=64, seq_len=40, optim=OptimConfig(steps=3, batch_size=8, warmup=1))
    a, ha = pretrain(jax.random.PRNGKey(7), WORLD, TINY, cfg)
    b, hb = pretrain(jax.random.PRNGKey(7), WORLD, TINY, cfg)
    assert np.array_equal(ha["loss"], hb["loss"]), "same key, same losses"
    assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, a, b)))


def test_training_stops_with_a_clear_error_on_nan():
    cfg = PretrainConfig(n_docs=64, seq_len=40, optim=OptimConfig(steps=4, batch_size=8, lr=1e30, warmup=1))
    with pytest.raises(FloatingPointError, match="NaN"):
        pretrain(jax.random.PRNGKey(0), WORLD, TINY, cfg)


def test_invalid_optim_config_is_a_clear_error():
    with pytest.raises(ValueError, match="lr"):
        OptimConfig(lr=-1.0)


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path):
    params = transformer.init_params(jax.random.PRNGKey(0), TINY)
    path = str(tmp_path / "m.npz")
    checkpoint.save(path, params, TINY)
    loaded, cfg = checkpoint.load(path)
    assert cfg == TINY
    assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, params, loaded)))


def test_checkpoint_never_overwrites_silently(tmp_path):
    path = tmp_path / "mine.npz"
    path.write_bytes(b"the user's file")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        checkpoint.save(str(path), transformer.init_params(jax.random.PRNGKey(0), TINY), TINY)
    assert path.read_bytes() == b"the user's file"


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="not a readable minirlhf checkpoint"):
        checkpoint.load(str(path))


def test_checkpoint_with_a_wrong_shape_names_the_parameter(tmp_path):
    params = transformer.init_params(jax.random.PRNGKey(0), TINY)
    flat = checkpoint.flatten(params)
    flat["wte"] = flat["wte"][:, :5]
    meta = json.dumps({"format": checkpoint.FORMAT, "model": TINY.__dict__})
    np.savez(tmp_path / "x.npz", **flat, **{checkpoint.CONFIG_KEY: np.array(meta)})
    with pytest.raises(ValueError, match="wte"):
        checkpoint.load(str(tmp_path / "x.npz"))


def test_checkpoints_load_without_pickle(tmp_path):
    np.savez(tmp_path / "p.npz", evil=np.array([object()], dtype=object))
    with pytest.raises(ValueError):
        checkpoint.load(str(tmp_path / "p.npz"))


# ---------------------------------------------------------------- evaluation


def test_exact_kl_is_zero_to_itself_and_positive_to_another_model():
    params = transformer.init_params(jax.random.PRNGKey(0), TINY)
    other = transformer.init_params(jax.random.PRNGKey(1), TINY)
    prompts = world.sample_prompts(WORLD, np.random.default_rng(0), 4)
    gen = evaluation.sample(params, TINY, prompts, jax.random.PRNGKey(2))
    same = evaluation.sequence_kl(params, params, gen.tokens, gen.valid, TINY)
    diff = evaluation.sequence_kl(params, other, gen.tokens, gen.valid, TINY)
    assert np.allclose(same, 0, atol=1e-6) and np.all(diff > 0)


def test_answer_rate_and_gold_read_the_response():
    from minirlhf.data import encode_pairs

    prompts = [world.math_prompt(3, "plus", 4)] * 2
    data = encode_pairs(prompts, [["it", "is", "7", "."], ["<user>", "what", "is", "2", "?"]])
    assert evaluation.answered(WORLD, data["tokens"]).tolist() == [True, False]
    assert evaluation.gold_scores(WORLD, prompts, data["tokens"]).tolist() == [0.8, -0.5]
