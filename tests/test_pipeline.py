"""The one-command pipeline (in this process and through the CLI in a fresh one), the README block it fills,
checkpoints, the training loop and evaluation helpers."""
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from minirlhf import checkpoint, evaluation, plots, report, transformer, world
from minirlhf.__main__ import main
from minirlhf.gold import gold_reward
from minirlhf.pipeline import PipelineConfig, run_pipeline
from minirlhf.pretrain import PretrainConfig, pretrain
from minirlhf.tokenizer import VOCAB_SIZE
from minirlhf.training import OptimConfig

TINY = transformer.ModelConfig(vocab_size=VOCAB_SIZE, d_model=32, n_layers=1, n_heads=2, d_mlp=64)
WORLD = world.make_world()
MODELS = ["pretrained", "sft", "ppo", "dpo", "best_of_n"]
REPO = Path(__file__).resolve().parents[1]
FILES = ["metrics.json", "config.json", "report.md", "training_curves.png", "gold_vs_proxy.png", "reward_vs_kl.png"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The quick pipeline twice: `run_pipeline` in this process, then `python -m minirlhf run --quick --force` in a
    fresh one, which finds this run's compiled steps in the session's compilation cache (tests/conftest.py), into
    a folder that already holds a (stand-in) run and a file of the learner's own.
    Returns (in-process folder, its metrics, CLI folder)."""
    out, cli_out, cwd = (tmp_path_factory.mktemp(name) for name in ("run", "cli_run", "cli_cwd"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    metrics = run_pipeline(PipelineConfig.quick(seed=0), str(out))
    (cli_out / "models").mkdir()
    for name in ["report.md", "models/ppo.npz", "notes.md", "models/mine.npz"]:
        (cli_out / name).write_text(f"stand-in {name}")
    with open(cwd / "output.txt", "w") as log:  # a file, not a pipe: a full pipe would stall the child
        child = subprocess.run([sys.executable, "-m", "minirlhf", "run", "--quick", "--seed", "0", "--out",
                                str(cli_out), "--force"], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                               timeout=600)
    assert child.returncode == 0, f"python -m minirlhf run --quick failed:\n{(cwd / 'output.txt').read_text()[-3000:]}"
    return out, metrics, cli_out


def test_quick_pipeline_writes_the_documented_files_and_keys(quick_run):
    out, returned, _ = quick_run
    for name in FILES:
        assert (out / name).exists(), f"the pipeline should write {name}"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == returned, "metrics.json should hold exactly the metrics run_pipeline returns"
    for m in MODELS:
        for key in ["gold_reward", "gold_se", "answer_rate", "kl_to_sft", "proxy_reward"]:
            assert math.isfinite(metrics[m][key]), f"metrics.json[{m!r}][{key!r}] missing or not finite"
    assert {"accuracy_gold", "accuracy_labels"} <= set(metrics["reward_model"])
    assert set(metrics["seconds"]) == set(report.STAGES), "metrics.json should give one time per stage"
    assert metrics["seed"] == 0 and json.loads((out / "config.json").read_text())["seed"] == 0
    for name in FILES[3:]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{name} should be a PNG image"


def test_quick_pipeline_numbers_are_in_range_and_ordered(quick_run):
    """What any run, however short, must show: measurements in their ranges, SFT exactly at KL 0 from itself,
    SFT answering more than the pretrained model, best-of-n beating SFT on the proxy within its KL bound."""
    _, m, _ = quick_run
    for name in MODELS:
        assert -1 <= m[name]["gold_reward"] <= 1, f"{name}: gold reward is a mean of scores in [-1, 1]"
        assert 0 <= m[name]["answer_rate"] <= 1, f"{name}: the answer rate is a fraction"
        assert m[name]["kl_to_sft"] >= 0, f"{name}: a KL divergence is never negative"
    assert m["sft"]["kl_to_sft"] == 0.0, "SFT's KL to itself must be exactly 0 (the same logits, term by term)"
    assert m["pretrained"]["kl_to_sft"] > 0.5, "the pretrained model should be far from SFT (it never saw the format)"
    assert m["sft"]["answer_rate"] > m["pretrained"]["answer_rate"] + 0.05, (
        "SFT should answer more often than the pretrained model: the demonstrations teach the assistant format")
    assert abs(m["sft"]["proxy_reward"]) < 0.5, "the RM is normalised so that SFT's samples score mean 0, std 1"
    bon, n = m["best_of_n"], PipelineConfig.quick().best_of_n
    assert bon["n"] == n
    assert bon["proxy_reward"] > m["sft"]["proxy_reward"] + 0.3, "the best of n SFT samples should outscore one, on the RM"
    assert 0 <= bon["kl_to_sft"] <= bon["kl_bound"] + 1e-9, "best-of-n's KL must respect its bound"
    assert bon["kl_bound"] == pytest.approx(math.log(n) - (n - 1) / n), "the bound is log n - (n - 1) / n"
    rm = m["reward_model"]
    for k in ("accuracy_labels", "accuracy_gold", "accuracy_gold_new_questions"):
        assert 0 <= rm[k] <= 1, f"reward_model[{k!r}] is an accuracy"
    for k in ("ceiling_labels", "ceiling_gold", "ceiling_gold_new_questions"):
        assert 0.5 <= rm[k] <= 1, f"reward_model[{k!r}]: labelers agree with gold at least as often as a coin does"
    assert all(s > 0 for s in m["seconds"].values()), "every stage takes some time"


def test_report_table_quotes_metrics_json(quick_run):
    out, m, _ = quick_run
    text = (out / "report.md").read_text()
    assert text.startswith("# minirlhf quick run (seed 0): a smoke test"), (
        "report.md's title should name the seed and say that a --quick run is a smoke test")
    for name in MODELS:
        r = m[name]
        label = f"best-of-{r['n']}" if name == "best_of_n" else name
        row = (f"| {label} | {r['gold_reward']:+.3f} ± {r['gold_se']:.3f} | {round(100 * r['answer_rate'])}% | "
               f"{r['kl_to_sft']:.2f} | {r['proxy_reward']:.2f} |")
        assert row in text, f"report.md should have the row {row!r} (from metrics.json)"


def test_report_defines_its_terms_and_scores_every_sample_shown(quick_run):
    out, m, _ = quick_run
    text = (out / "report.md").read_text()
    assert "the answer rate is the share of replies in the assistant's format" in text
    assert "Bayes ceiling" in text and "the most any model can score against noisy labels" in text
    cfg = PipelineConfig.quick()
    prompts = world.sample_prompts(WORLD, np.random.default_rng(cfg.seed + 1), cfg.n_eval, split="heldout")
    shown = text.split("## Samples")[1].split("\n**")[1:]
    assert len(shown) == cfg.n_samples_shown
    for prompt, block in zip(prompts, shown):
        replies = [line for line in block.splitlines() if line.startswith("- ")]
        assert [r[2:].split(":")[0] for r in replies] == MODELS, "every model's reply to each prompt shown"
        for r in replies:
            words, rest = r.split("`")[1], r.split("`")[2]
            gold = gold_reward(prompt, words.split(), "no EOS" not in rest, WORLD.secret)
            assert rest.endswith(f"(gold {gold:+.2f})"), f"{r!r}: each reply shown with its gold score"


def test_the_title_says_quick_and_the_overrides():
    assert report.title(3) == "# minirlhf run (seed 3)"
    with_set = report.title(0, {"smoke_test": False, "overrides": ["ppo.beta=0.1"]})
    assert with_set == "# minirlhf run (seed 0, --set ppo.beta=0.1)"
    assert report.title(1, {"smoke_test": True, "overrides": []}).startswith("# minirlhf quick run (seed 1): a smoke test")
    assert PipelineConfig.quick().smoke_test and not PipelineConfig().smoke_test
    json.dumps(dataclasses.asdict(PipelineConfig()))  # config.json holds plain values (no method shadowing a field)


def test_cli_in_a_fresh_process_writes_the_same_run(quick_run):
    """Same seed, another process: every number the same, bit for bit; only the wall-clock times differ."""
    out, _, cli_out = quick_run
    for name in FILES:
        assert (cli_out / name).is_file() and (cli_out / name).stat().st_size > 0, f"the CLI should write {name}"
    ours, theirs = (json.loads((d / "metrics.json").read_text()) for d in (out, cli_out))
    assert set(ours.pop("seconds")) == set(theirs.pop("seconds"))
    for key in ours:
        assert theirs[key] == ours[key], (
            f"metrics.json[{key!r}] differs between `python -m minirlhf run --quick --seed 0` and run_pipeline "
            f"in this process: the same seed must give the same numbers")
    assert theirs == ours
    assert (cli_out / "config.json").read_text() == (out / "config.json").read_text(), (
        "the CLI's --quick --seed 0 should run exactly PipelineConfig.quick(seed=0)")


def test_force_replaces_the_runs_files_and_nothing_else(quick_run):
    _, _, cli_out = quick_run
    for name in ["notes.md", "models/mine.npz"]:
        assert (cli_out / name).read_text() == f"stand-in {name}", f"--force touched the learner's own {name}"
    assert (cli_out / "report.md").read_text().startswith("# minirlhf quick run"), "--force should replace the old report"
    checkpoint.load(str(cli_out / "models" / "ppo.npz"))  # the stand-in was replaced by the trained model


def test_the_run_ends_with_the_table_the_times_and_the_paths(quick_run):
    _, m, cli_out = quick_run
    text = next(cli_out.parent.glob("cli_cwd*/output.txt")).read_text()  # what the CLI printed
    for line in report.results_table(m).splitlines() + report.per_kind_table(m).splitlines():
        assert line in text, f"the run's ending should print the table row {line!r}"
    assert "Seconds per stage" in text
    for path in ["report.md", "training_curves.png", "models/ppo.npz", "models/reward_model.npz"]:
        assert str(cli_out / path) in text, f"the run's ending should say where {path} is"


def test_the_run_saves_its_models_and_config_records_the_overrides(quick_run):
    out, _, _ = quick_run
    model = PipelineConfig.quick().model
    for name in ["sft", "ppo", "dpo", "reward_model"]:
        tree, cfg, meta = checkpoint.read(str(out / "models" / f"{name}.npz"))
        assert cfg == model and meta == {"seed": 0, "model": name}, f"models/{name}.npz: wrong config or meta"
    assert set(checkpoint.read(str(out / "models" / "reward_model.npz")).tree) == {"lm", "head"}
    assert json.loads((out / "config.json").read_text())["overrides"] == []


def test_ask_answers_from_the_saved_run(quick_run, capsys):
    from minirlhf.ask import ask

    out, _, _ = quick_run
    rows = ask("what is 3 plus 4 ?", str(out), samples=2)
    assert [r["model"] for r in rows] == ["sft", "sft", "ppo", "ppo", "dpo", "dpo"]
    question = world.math_prompt(3, "plus", 4)
    for r in rows:
        assert r["gold"] == pytest.approx(gold_reward(question, r["reply"].split(), r["ended"], WORLD.secret)), (
            f"{r}: the gold score should be the gold reward of the reply shown")
        assert math.isfinite(r["rm"])
    assert main(["ask", "what color is the sky ?", "--run", str(out), "--samples", "1"]) == 0
    shown = capsys.readouterr().out
    assert "Q: what color is the sky ?" in shown and shown.count("\nppo ") == 1
    with pytest.raises(SystemExit):
        main(["ask", "what is 3 plux 4 ?", "--run", str(out)])
    assert "unknown word(s) ['plux']" in capsys.readouterr().err, "an unknown word: the tokenizer's error"
    with pytest.raises(SystemExit):
        main(["ask", "what is 9 plus 4 ?", "--run", str(out)])
    assert "not one digit" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ask", "what is the sky ?", "--run", str(out)])
    assert "not a question the toy world can grade" in capsys.readouterr().err


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


# ---------------------------------------------------------------- the report's plots


def test_training_curves_label_their_axes_and_say_they_are_smoothed():
    histories = {"reward model": {"loss": np.linspace(0.7, 0.5, 30), "accuracy": np.linspace(0.5, 0.7, 30)},
                 "ppo": {"objective/scores": np.arange(4.0)}}
    fig = plots.training_curves(histories, report.PANELS)
    assert "smoothed" in fig.get_suptitle(), "the figure should say its curves are moving averages"
    for ax in fig.axes:
        assert ax.get_ylabel() and ax.get_xlabel(), f"panel {ax.get_title()!r} needs both axis labels"
    rm_labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "accuracy on training batches, vs labels" in rm_labels, "the RM's curve is not the held-out accuracy"
    (line,) = [ln for ln in fig.axes[1].get_lines()]
    assert line.get_xdata().tolist() == [0, 1, 2, 3], "a curve shorter than the window is drawn at its own steps"
    steps = fig.axes[0].get_lines()[0].get_xdata()
    assert steps[0] == 9 and steps[-1] == 29, "a smoothed point sits at the last step of its window"


def test_gold_vs_proxy_legend_covers_no_bar():
    row = lambda gold, proxy: {"gold_reward": gold, "proxy_reward": proxy}
    metrics = {"pretrained": row(-0.9, -0.9), "sft": row(0.9, 0.9), "ppo": row(0.9, 2.0), "dpo": row(0.5, 1.5),
               "best_of_n": row(0.4, 2.0)}
    fig = plots.gold_vs_proxy(metrics)
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    for ax in fig.axes:
        assert not legend.overlaps(ax.get_window_extent()), "the legend should sit outside the plotting area"


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path):
    # Random values in every leaf: at init, ln_1 and ln_2 (and all the zero biases) are equal, so a loader
    # that confused two same-shaped parameters would still hand back equal arrays.
    template = transformer.init_params(jax.random.PRNGKey(0), TINY)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda x: rng.normal(size=x.shape).astype(np.float32), template)
    path = str(tmp_path / "m.npz")
    checkpoint.save(path, params, TINY)
    loaded, cfg = checkpoint.load(path)
    assert cfg == TINY, "the config must come back as saved"
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(params), "the params tree changed shape"
    for (where, want), got in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree_util.tree_leaves(loaded)):
        name = jax.tree_util.keystr(where)
        assert got.dtype == want.dtype, f"{name} came back as {got.dtype}, was saved as {want.dtype}"
        np.testing.assert_array_equal(got, want, err_msg=f"{name} did not come back bit for bit")


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


def test_checkpoint_of_another_format_is_refused(tmp_path):
    flat = checkpoint.flatten(transformer.init_params(jax.random.PRNGKey(0), TINY))
    meta = json.dumps({"format": checkpoint.FORMAT + "-other", "model": TINY.__dict__})
    np.savez(tmp_path / "x.npz", **flat, **{checkpoint.CONFIG_KEY: np.array(meta)})
    with pytest.raises(ValueError, match="has format"):
        checkpoint.load(str(tmp_path / "x.npz"))


class _RunsCodeWhenUnpickled:
    """Unpickling this object calls exec: a stand-in for whatever code a crafted file could run."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_checkpoints_load_without_pickle(tmp_path):
    """A valid checkpoint with one extra pickled entry: with allow_pickle=True it would load, and run code."""
    arrays = checkpoint.flatten(transformer.init_params(jax.random.PRNGKey(0), TINY))
    meta = {checkpoint.CONFIG_KEY: np.array(json.dumps({"format": checkpoint.FORMAT, "model": TINY.__dict__}))}
    np.savez(tmp_path / "clean.npz", **arrays, **meta)
    checkpoint.load(str(tmp_path / "clean.npz"))  # the same file without the pickle loads: only the pickle is refused
    marker = tmp_path / "code_ran"
    evil = np.array([_RunsCodeWhenUnpickled(str(marker))], dtype=object)
    np.savez(tmp_path / "evil.npz", **arrays, **meta, evil=evil)
    with pytest.raises(ValueError, match="not a readable minirlhf checkpoint"):
        checkpoint.load(str(tmp_path / "evil.npz"))
    assert not marker.exists(), "loading a checkpoint ran code stored in it: np.load must use allow_pickle=False"


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
