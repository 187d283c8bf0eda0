"""Bad input is refused where it enters, with a message that names the problem and what to do.

Each case below was once accepted silently, garbled a result, or crashed deep inside jax or numpy.
Nothing here trains: every error must come before the first compile, so the file runs in seconds.
"""
import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import best_of_n, checkpoint, ppo, transformer
from minirlhf.data import PROMPT_WIDTH
from minirlhf.grade import main as grade_main
from minirlhf.grade.checks import common
from minirlhf.reward_model import init_reward_model, reward_fn
from minirlhf.sampling import SampleConfig, generate
from minirlhf.tokenizer import EOS_ID, PAD_ID, VOCAB_SIZE
from minirlhf.training import OptimConfig, check_finite, fit
from minirlhf.world import make_world, sample_prompts

CFG = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=PROMPT_WIDTH + 4, d_model=8, n_layers=1, n_heads=2,
                              d_mlp=16)


def params_for(cfg: transformer.ModelConfig, seed: int = 0) -> dict:
    """Zero params of cfg's shapes (shapes are all these checks read)."""
    shapes = jax.eval_shape(lambda: transformer.init_params(jax.random.PRNGKey(seed), cfg))
    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)


@pytest.fixture(scope="module")
def lm():
    return params_for(CFG)


@pytest.fixture(scope="module")
def prompts():
    return sample_prompts(make_world(), np.random.default_rng(0), 3)


# ---------------------------------------------------------------- optimizer settings


@pytest.mark.parametrize("field, value, words", [
    ("grad_clip", -1.0, "grad_clip must be > 0"), ("grad_clip", 0.0, "grad_clip must be > 0"),
    ("weight_decay", -0.1, "weight_decay must be >= 0")])
def test_optim_config_refuses_settings_that_train_uphill_or_not_at_all(field, value, words):
    with pytest.raises(ValueError, match=words):
        OptimConfig(**{field: value})


# ---------------------------------------------------------------- params that do not fit the config


def test_params_of_a_smaller_vocabulary_are_named_with_the_size_they_were_made_with(lm):
    small = params_for(transformer.ModelConfig(**{**CFG.__dict__, "vocab_size": VOCAB_SIZE - 8}))
    with pytest.raises(ValueError, match=f"vocab_size={VOCAB_SIZE - 8} \\(the config says {VOCAB_SIZE}\\)"):
        transformer.check_params(small, CFG, "the reward model")
    transformer.check_params(lm, CFG)  # params of the config itself pass


def test_a_d_model_mismatch_is_named_before_any_layer_runs(lm, prompts):
    wide = transformer.ModelConfig(**{**CFG.__dict__, "d_model": 16})
    tokens, valid = np.ones((1, 4), np.int32), np.ones((1, 4), bool)
    with pytest.raises(ValueError, match="d_model=8 \\(the config says 16\\)"):
        generate(lm, tokens, valid, jax.random.PRNGKey(0), wide, SampleConfig(max_new_tokens=2), EOS_ID, PAD_ID)


def test_a_reward_model_of_another_config_is_refused_by_best_of_n(lm, prompts):
    small_cfg = transformer.ModelConfig(**{**CFG.__dict__, "vocab_size": VOCAB_SIZE - 8})
    rm = init_reward_model(jax.random.PRNGKey(1), params_for(small_cfg), small_cfg)
    with pytest.raises(ValueError, match="best_of_n's reward model/lm: the params do not fit"):
        best_of_n.best_of_n(jax.random.PRNGKey(0), lm, rm, prompts, CFG, 2)
    rm_narrow_head = {"lm": lm, "head": {"w": np.zeros(3), "b": np.zeros(())}}
    with pytest.raises(ValueError, match="head/w has shape \\(3,\\)"):
        best_of_n.best_of_n(jax.random.PRNGKey(0), lm, rm_narrow_head, prompts, CFG, 2)


def test_fit_checks_a_models_params_and_its_data_before_compiling(lm):
    wide = transformer.ModelConfig(**{**CFG.__dict__, "d_model": 16})
    data = {"tokens": np.ones((4, 5), np.int32), "valid": np.ones((4, 5), bool)}
    loss = lambda params, batch, cfg: (0.0, {})
    with pytest.raises(ValueError, match="sft's params: the params do not fit"):
        fit(lm, loss, data, jax.random.PRNGKey(0), OptimConfig(steps=1, warmup=0), "sft", static={"cfg": wide})
    with pytest.raises(ValueError, match="sft: the training data must be arrays with the same number \\(>= 1\\)"):
        fit(lm, loss, {"tokens": np.ones((0, 5), np.int32)}, jax.random.PRNGKey(0), OptimConfig(steps=1, warmup=0),
            "sft", static={"cfg": CFG})


# ---------------------------------------------------------------- prompts


@pytest.mark.parametrize("valid, words", [
    ([[False, True, True], [True, True, False]], "prompt row 1 has padding after its tokens: prompts must be LEFT"),
    ([[False, True, True], [False, False, False]], "prompt row 1 is all padding")])
def test_generate_refuses_right_padded_and_empty_prompts(lm, valid, words):
    valid = np.array(valid)
    tokens = np.where(valid, 5, PAD_ID).astype(np.int32)
    with pytest.raises(ValueError, match=words):
        generate(lm, tokens, valid, jax.random.PRNGKey(0), CFG, SampleConfig(max_new_tokens=2), EOS_ID, PAD_ID)


def test_generate_refuses_token_ids_outside_the_vocabulary(lm):
    tokens, valid = np.full((1, 3), VOCAB_SIZE, np.int32), np.ones((1, 3), bool)
    with pytest.raises(ValueError, match=f"token id {VOCAB_SIZE} is out of range"):
        generate(lm, tokens, valid, jax.random.PRNGKey(0), CFG, SampleConfig(max_new_tokens=2), EOS_ID, PAD_ID)


# ---------------------------------------------------------------- best-of-n


def test_best_of_n_refuses_no_prompts_and_a_bad_n(lm):
    rm = init_reward_model(jax.random.PRNGKey(1), lm, CFG)
    with pytest.raises(ValueError, match="best_of_n got no prompts"):
        best_of_n.best_of_n(jax.random.PRNGKey(0), lm, rm, [], CFG, 4)
    with pytest.raises(ValueError, match="best_of_n_kl got no prompts"):
        best_of_n.best_of_n_kl(jax.random.PRNGKey(0), lm, rm, [], CFG, 4)
    with pytest.raises(ValueError, match="integer n >= 1"):
        best_of_n.best_of_n(jax.random.PRNGKey(0), lm, rm, [], CFG, 0)


def test_the_finite_support_kl_refuses_what_it_cannot_measure():
    with pytest.raises(ValueError, match="kl_bound needs n >= 1"):
        best_of_n.kl_bound(0)
    with pytest.raises(ValueError, match="logprobs\\[1\\] is nan"):
        best_of_n.finite_best_of_n_kl(np.array([-1.0, np.nan, -2.0]), np.array([0.0, 1.0, 2.0]), 4)
    with pytest.raises(ValueError, match="of the same length"):
        best_of_n.finite_best_of_n_kl(np.array([-1.0, -2.0]), np.array([0.0, 1.0, 2.0]), 4)
    with pytest.raises(ValueError, match="of the same length >= 1"):
        best_of_n.finite_best_of_n_kl(np.array([]), np.array([]), 4)


# ---------------------------------------------------------------- PPO's reward function


def test_a_reward_function_of_shape_b_by_1_is_refused_before_the_gae_scan(lm):
    tokens = jnp.full((2, PROMPT_WIDTH + 2), 5, jnp.int32)
    valid = jnp.ones(tokens.shape, bool)
    column = lambda _, tokens, valid: jnp.zeros((tokens.shape[0], 1))  # [B, 1]
    cfg = ppo.PPOConfig(iterations=1, batch_size=2, ppo_epochs=1, minibatches=1, response_width=2)
    params = {"policy": lm, "value": ppo.init_value_params(lm, CFG)}
    with pytest.raises(ValueError, match="one score per response, shape \\(2,\\); it returned shape \\(2, 1\\)"):
        ppo.make_rollout(params, lm, None, tokens, valid, column, CFG, cfg)


def test_ppo_refuses_a_reward_model_of_another_config(lm):
    small_cfg = transformer.ModelConfig(**{**CFG.__dict__, "vocab_size": VOCAB_SIZE - 8})
    rm = init_reward_model(jax.random.PRNGKey(1), params_for(small_cfg), small_cfg)
    cfg = ppo.PPOConfig(iterations=1, batch_size=2, ppo_epochs=1, minibatches=1, response_width=2)
    with pytest.raises(ValueError, match="reward model/lm: the params do not fit"):
        ppo.train_ppo(jax.random.PRNGKey(0), lm, lm, reward_fn(CFG), rm, None, CFG, cfg)


# ---------------------------------------------------------------- the NaN guard's advice


@pytest.mark.parametrize("history, words", [
    ({"objective/scores": [0.1, np.nan], "loss/policy": [0.2, np.nan]}, "check the reward function"),
    ({"loss": [np.nan, np.nan]}, "already at the first step, before any update: check the inputs"),
    ({"loss": [1.0, 2.0, np.inf]}, "lower the learning rate")])
def test_the_nan_guard_says_where_the_nan_most_likely_came_from(history, words):
    with pytest.raises(FloatingPointError, match=words) as caught:
        check_finite({k: np.array(v) for k, v in history.items()}, "ppo")
    if "objective/scores" in history:
        assert "lower the learning rate" not in str(caught.value), "a NaN score is not the optimizer's fault"


# ---------------------------------------------------------------- checkpoints


def _write_record(path, record: str) -> None:
    np.savez(path, w=np.ones(3), **{checkpoint.CONFIG_KEY: np.array(record)})


def test_a_checkpoint_record_that_is_not_json_names_the_file_and_the_cause(tmp_path):
    path = tmp_path / "m.npz"
    _write_record(path, "{not json")
    with pytest.raises(ValueError, match=f"{path}: its '__config__' entry is not valid JSON"):
        checkpoint.read(str(path))


def test_a_checkpoint_config_with_an_unknown_field_names_it(tmp_path):
    path = tmp_path / "m.npz"
    _write_record(path, json.dumps({"format": checkpoint.FORMAT, "model": {**CFG.__dict__, "n_experts": 4},
                                    "model_at": [""]}))
    with pytest.raises(ValueError, match=f"{path}.*unknown field\\(s\\) \\['n_experts'\\]"):
        checkpoint.read(str(path))


def test_saving_into_a_missing_folder_names_the_folder_not_a_temporary_file(tmp_path):
    path = tmp_path / "no_such_folder" / "m.npz"
    with pytest.raises(FileNotFoundError, match=f"cannot save {path}: the folder .*no_such_folder does not exist"):
        checkpoint.save(str(path), {"w": np.ones(3)})


# ---------------------------------------------------------------- the grader's command line


@pytest.mark.parametrize("timeout", ["0", "-1", "soon"])
def test_the_grader_refuses_a_timeout_that_is_not_a_positive_number(timeout, capsys):
    with pytest.raises(SystemExit) as caught:
        grade_main(["--timeout", timeout, "--only", "kl_bound"])
    assert caught.value.code == 2
    assert "argument --timeout" in capsys.readouterr().err


def test_the_grader_refuses_a_report_path_in_a_missing_folder_before_grading(tmp_path, capsys):
    assert grade_main(["--json", str(tmp_path / "nope" / "r.json"), "--only", "kl_bound"]) == 2
    err = capsys.readouterr()
    assert "the folder" in err.err and "does not exist" in err.err
    assert "grading" not in err.out, "nothing may be graded when the report cannot be written"


def test_a_syntax_error_points_at_the_learners_line_without_importlib_noise(tmp_path):
    path = tmp_path / "best_of_n.py"
    path.write_text("def kl_bound(n):\n    return (n +\n")
    try:
        compile(path.read_text(), str(path), "exec")
    except SyntaxError as e:
        said = common.describe_exception(e)
    assert f"at {path}:2: `return (n +`" in said and "importlib" not in said, said


def test_an_unknown_mistake_is_located_in_words():
    from minirlhf.grade.checks import ppo as ppo_checks  # noqa: F401 (registers the gae check)
    from minirlhf.ppo_losses import gae

    def off_by_a_bit(rewards, values, mask, gamma, lam):
        advantages, returns = gae(rewards, values, mask, gamma, lam)
        return advantages.at[1, 5].add(0.3), returns

    passed, reason = common.run_check("gae", off_by_a_bit)
    assert not passed and "advantages[1, 5] (row 1, response token 3 of 6) is" in reason, reason


# ---------------------------------------------------------------- evaluation


def test_evaluate_refuses_no_prompts_and_tokens_that_do_not_match_them(lm, prompts):
    from minirlhf.evaluation import evaluate
    world = make_world()
    with pytest.raises(ValueError, match="evaluate got no prompts"):
        evaluate(lm, CFG, world, [], jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="evaluate got 2 rows of tokens for 3 prompts"):
        evaluate(lm, CFG, world, prompts, jax.random.PRNGKey(0), tokens=np.zeros((2, PROMPT_WIDTH + 4), np.int32))
    small = params_for(transformer.ModelConfig(**{**CFG.__dict__, "vocab_size": VOCAB_SIZE - 8}))
    with pytest.raises(ValueError, match="evaluate's reference model: the params do not fit"):
        evaluate(lm, CFG, world, prompts, jax.random.PRNGKey(0), ref_params=small)


def test_saving_onto_a_folder_says_so_and_suggests_a_file_name(tmp_path):
    for overwrite in (False, True):
        with pytest.raises(IsADirectoryError, match=f"cannot save to {tmp_path}: it is a folder"):
            checkpoint.save(str(tmp_path), {"w": np.ones(3)}, overwrite=overwrite)
    assert not list(tmp_path.iterdir()), "no temporary file is left behind"


def test_forward_outside_jit_checks_the_params_against_the_config(lm):
    wide = transformer.ModelConfig(**{**CFG.__dict__, "d_model": 16})
    with pytest.raises(ValueError, match="forward's params: the params do not fit"):
        transformer.forward(lm, np.ones((1, 3), np.int32), np.ones((1, 3), bool), wide)


def test_fit_refuses_token_ids_the_vocabulary_does_not_have(lm):
    data = {"chosen_tokens": np.full((4, 5), VOCAB_SIZE + 3, np.int32), "chosen_valid": np.ones((4, 5), bool)}
    with pytest.raises(ValueError, match=f"token id {VOCAB_SIZE + 3} is out of range"):
        fit(lm, lambda params, batch, cfg: (0.0, {}), data, jax.random.PRNGKey(0), OptimConfig(steps=1, warmup=0),
            "dpo", static={"cfg": CFG})


def test_a_cached_model_of_another_config_is_not_used_and_the_reason_is_printed(tmp_path, lm, capsys):
    from minirlhf import store
    made_by = store.record("rm", seed=0)
    store.save(tmp_path, made_by, lm, CFG)
    wide = transformer.ModelConfig(**{**CFG.__dict__, "d_model": 16})
    assert store.load(tmp_path, made_by, wide) is None
    assert "training again: it holds a model of config" in capsys.readouterr().out


def test_a_corrupt_cached_model_is_named_and_trained_again(tmp_path, lm, capsys):
    """The notebooks' artifacts are single store files now (no side files for the RM head or the pairs)."""
    from minirlhf import store
    made_by = store.record("reward_model", seed=0)
    file = store.save(tmp_path, made_by, {"rm": {"lm": lm, "head": {"w": np.zeros(CFG.d_model), "b": np.zeros(())}},
                                          "pairs": {"chosen_tokens": np.zeros((2, 3), np.int32)}}, CFG)
    file.write_bytes(file.read_bytes()[:500])
    assert store.load(tmp_path, made_by, CFG) is None
    said = capsys.readouterr().out
    assert f"ignoring {file.name}, training again" in said and "not a readable minirlhf checkpoint" in said, said
