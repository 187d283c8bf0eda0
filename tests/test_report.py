"""The README-maintenance tool (docs/tools/update_readme.py, outside the package): it fills exactly the block
between the results markers from a run's metrics.json and copies the run's plots. A hand-made run folder stands
in for a pipeline run, so these tests train nothing."""
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


def model_row(gold: float, answers: float, kl: float, proxy: float) -> dict:
    return {"gold_reward": gold, "answer_rate": answers, "kl_to_sft": kl, "proxy_reward": proxy}


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run folder as `python -m minirlhf run --seed 3` writes it: metrics.json and three (fake) PNGs."""
    out = tmp_path / "run"
    out.mkdir()
    metrics = {"seed": 3, "pretrained": model_row(-0.5071, 0.0, 10.814, -0.872),
               "sft": model_row(-0.0049, 0.968, 0.0, 0.012), "ppo": model_row(0.3834, 0.981, 0.951, 0.588),
               "dpo": model_row(0.4526, 0.875, 1.309, 0.493),
               "best_of_n": {**model_row(0.3181, 0.979, 1.594, 0.712), "n": 16},
               "reward_model": {"accuracy_gold": 0.7504, "ceiling_gold": 0.9021},
               "seconds": {stage: 10.0 + i for i, stage in enumerate(report.STAGES)}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    for name in update_readme.FIGURES:
        (out / name).write_bytes(b"\x89PNG\r\n\x1a\n" + name.encode())
    return out


def test_update_readme_replaces_only_the_results_block(run_dir, tmp_path):
    readme, figs = tmp_path / "README.md", tmp_path / "figs"
    readme.write_text(f"{HEAD}<!-- results:start -->\nold table\n<!-- results:end -->{TAIL}")
    update_readme.main([str(run_dir), "--readme", str(readme), "--figures", str(figs)])
    text = readme.read_text()
    assert text.startswith(f"{HEAD}<!-- results:start -->\n"), "the text before the start marker must be kept as it was"
    assert text.endswith(f"\n<!-- results:end -->{TAIL}"), "the text after the end marker must be kept as it was"
    block = text[len(HEAD) + len("<!-- results:start -->\n"): -len(f"\n<!-- results:end -->{TAIL}")]
    assert "old table" not in block and "results:" not in block, "the old block (and only it) should be replaced"
    assert block.startswith("From `python -m minirlhf run --seed 3`"), "the block should name the command and seed"
    assert report.results_table(json.loads((run_dir / "metrics.json").read_text())) in block, (
        "the block's table should be the one report.md shows for this run")
    assert "| sft | -0.005 | 97% | 0.00 | 0.01 |" in block and "| best-of-16 | 0.318 | 98% | 1.59 | 0.71 |" in block
    assert "75.0% held-out accuracy against the gold ordering (the labelers agree with gold 90.2%" in block
    assert "pretrain 10 s, sft 11 s, reward_model 12 s" in block, "stage times in the pipeline's order, in seconds"
    for name in update_readme.FIGURES:
        assert (figs / name).read_bytes() == (run_dir / name).read_bytes(), f"{name} should be copied"
        assert f"({figs}/{name})" in block, f"the block should show {name} from the figures folder"


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
