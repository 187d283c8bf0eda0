"""The README-maintenance tool (docs/tools/update_readme.py, outside the package): it fills exactly the block
between the results markers from runs' metrics.json (the spread over seeds, comparisons counted seed by seed, the
first run as the example) and copies the first run's plots. Hand-made run folders stand in for pipeline runs, so
these tests train nothing."""
import importlib.util
import json
from pathlib import Path

import pytest

from minirlhf import report

TOOL = Path(__file__).resolve().parents[1] / "docs" / "tools" / "update_readme.py"
_spec = importlib.util.spec_from_file_location("update_readme", TOOL)
update_readme = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(update_readme)

HEAD = "# title\n\nintro\n"
TAIL = "\nafter the block; a second <!-- results:end --> stays: the first end marker closes the block\n"


def model_row(gold: float, answers: float, kl: float, proxy: float, gold_se: float = 0.03) -> dict:
    return {"gold_reward": gold, "gold_se": gold_se, "answer_rate": answers, "kl_to_sft": kl, "proxy_reward": proxy}


def kinds(math_gold: float, secret_gold: float, right: float) -> dict:
    return {"math": {"n": 3, "gold": math_gold, "right": right}, "secret": {"n": 1, "gold": secret_gold}}


def write_run(out: Path, seed: int, ppo_gold: float = 0.3834, bon_gold: float = 0.3181,
              with_kinds: bool = False) -> Path:
    """A run folder as `python -m minirlhf run --seed SEED` writes it: metrics.json and three (fake) PNGs."""
    out.mkdir()
    metrics = {"seed": seed, "pretrained": model_row(-0.5071, 0.0, 10.814, -0.872),
               "sft": model_row(-0.0049, 0.968, 0.0, 0.012), "ppo": model_row(ppo_gold, 0.981, 0.951, 0.588),
               "dpo": model_row(0.4526, 0.875, 1.309, 0.493),
               "best_of_n": {**model_row(bon_gold, 0.979, 1.594, 0.712), "n": 16},
               "reward_model": {"accuracy_gold": 0.7504, "ceiling_gold": 0.9021},
               "seconds": {stage: 10.0 + i for i, stage in enumerate(report.STAGES)}}
    if with_kinds:  # what metrics.json carries by prompt kind and pair type
        metrics["sft"]["per_kind"], metrics["ppo"]["per_kind"] = kinds(0.0, -0.4, 0.5), kinds(0.2, 0.8, 0.4)
        metrics["reward_model"]["by_pair_type"] = {"math: right/wrong": {"n": 9, "rm": 0.55, "labelers": 0.95}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    for name in update_readme.FIGURES:
        (out / name).write_bytes(b"\x89PNG\r\n\x1a\n" + f"seed {seed} {name}".encode())
    return out


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return write_run(tmp_path / "run", seed=3)


def test_update_readme_replaces_only_the_results_block(run_dir, tmp_path):
    readme, figs = tmp_path / "README.md", tmp_path / "figs"
    readme.write_text(f"{HEAD}<!-- results:start -->\nold table\n<!-- results:end -->{TAIL}")
    update_readme.main([str(run_dir), "--readme", str(readme), "--figures", str(figs)])
    text = readme.read_text()
    assert text.startswith(f"{HEAD}<!-- results:start -->\n"), "the text before the start marker must be kept as it was"
    assert text.endswith(f"\n<!-- results:end -->{TAIL}"), "the text after the end marker must be kept as it was"
    block = text[len(HEAD) + len("<!-- results:start -->\n"): -len(f"\n<!-- results:end -->{TAIL}")]
    assert "old table" not in block and "results:" not in block, "the old block (and only it) should be replaced"
    assert block.startswith("From `python -m minirlhf run --seed S` for S = 3 "), "the block names the command, seed"
    assert report.results_table(json.loads((run_dir / "metrics.json").read_text())) in block, (
        "the block's table should be the one report.md shows for this run")
    assert "| sft | -0.005 ± 0.030 | 97% | 0.00 | 0.01 |" in block and (
        "| best-of-16 | +0.318 ± 0.030 | 98% | 1.59 | 0.71 |" in block)
    assert "75.0% held-out accuracy against the gold ordering (the labelers agree with gold 90.2%" in block
    assert "| ppo | 0.383 | 98 | 0.95 | 0.59 |" in block, "one seed: its values alone, no ± 0"
    assert "pretrain 10 s, sft 11 s, reward_model 12 s" in block, "stage times in the pipeline's order, in seconds"
    for name in update_readme.FIGURES:
        assert (figs / name).read_bytes() == (run_dir / name).read_bytes(), f"{name} should be copied"
        assert f"({figs}/{name})" in block, f"the block should show {name} from the figures folder"


def test_several_seeds_give_the_spread_and_count_each_comparison(tmp_path):
    """Three seeds: the headline cells are mean ± std [min, max]; a comparison that fails on one seed is said to
    hold on 2 of 3; the first run is the example (its table, its plots)."""
    golds = {0: (0.40, 0.30), 1: (0.20, 0.30), 2: (0.30, 0.25)}  # seed -> (PPO gold, best-of-16 gold)
    dirs = [write_run(tmp_path / f"seed{s}", s, *g, with_kinds=True) for s, g in golds.items()]
    readme, figs = tmp_path / "README.md", tmp_path / "figs"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    update_readme.main([*map(str, dirs), "--readme", str(readme), "--figures", str(figs)])
    text = readme.read_text()
    assert "for S = 0, 1, 2" in text
    assert "| ppo | 0.300 ± 0.100 [0.200, 0.400] | 98 on every seed |" in text, "PPO's gold over the seeds"
    assert "PPO above best-of-16 on 2;" in text and "PPO above SFT on 3;" in text, "comparisons counted per seed"
    assert "| 1 | -0.005 | +0.205 (0.95) |" in text, "one row per seed: SFT's gold, then the gain over it"
    assert "the largest part is secret's on 3 of 3 seeds" in text, "each seed's largest part, counted"
    assert "PPO 40% on every seed (PPO more on 0 of 3)" in text
    assert "the reward model orders them correctly 55% on every seed, the labelers 95% on every seed" in text
    assert "Seed 0 alone" in text and "| ppo | +0.400 ± 0.030 | 98% | 0.95 | 0.59 |" in text, "the first run is the example"
    assert (figs / "reward_vs_kl.png").read_bytes().endswith(b"seed 0 reward_vs_kl.png"), "the example's plots"
    with pytest.raises(ValueError, match="repeat"):
        update_readme.update_readme([str(dirs[0]), str(dirs[0])], str(readme), str(figs))


def test_the_gain_by_prompt_kind_adds_up_to_the_gain():
    run = {"sft": {"per_kind": kinds(0.0, -0.4, 0.5)}, "ppo": {"per_kind": kinds(0.2, 0.8, 0.4)}}
    parts = {k: update_readme.kind_gain(run, k) for k in ("math", "secret")}
    assert parts == pytest.approx({"math": 3 / 4 * 0.2, "secret": 1 / 4 * 1.2}), "share of prompts x gain"


def test_a_readme_without_markers_is_refused_and_left_untouched(run_dir, tmp_path):
    readme, figs = tmp_path / "README.md", tmp_path / "figs"
    for text in ("no markers here\n", "only a start <!-- results:start --> here\n",
                 "end first <!-- results:end --> then start <!-- results:start -->\n"):
        readme.write_text(text)
        with pytest.raises(ValueError, match="markers"):
            update_readme.update_readme(str(run_dir), str(readme), str(figs))
        assert readme.read_text() == text, "a README without a start ... end pair must be left untouched"
        assert not figs.exists(), "nothing should be copied when the README cannot be filled"


def test_the_library_no_longer_carries_the_readme_tool():
    assert not hasattr(report, "update_readme"), (
        "README maintenance lives in docs/tools/update_readme.py, outside the installed package")
