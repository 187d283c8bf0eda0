"""The committed experiment results and the cache the experiments share.

- Every `docs/experiments/NAME/summary.md` is exactly what `summary(result.json)` writes today, and every figure
  the README's experiment table quotes is, rounded, a figure of that experiment's summary or result.
- `base_models` saves the pretrained, SFT and reward models (the RM's file also holds its pairs and metrics), loads
  them back bit for bit, and trains again whatever a changed config would have made differently.
"""
import dataclasses
import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from minirlhf import checkpoint, pretrain, reward_model, sft, store, transformer
from minirlhf.experiments import base, load
from minirlhf.preferences import Labeler
from minirlhf.pipeline import PipelineConfig
from minirlhf.ppo import PPOConfig
from minirlhf.tokenizer import VOCAB_SIZE

REPO = Path(__file__).resolve().parents[1]
RESULTS = sorted(p.parent.name for p in (REPO / "docs" / "experiments").glob("*/result.json")
                 if (p.parent / "summary.md").is_file())

# ---------------------------------------------------------------- committed results


def test_every_experiment_has_a_committed_result():
    assert RESULTS, "docs/experiments/*/ should hold result.json beside summary.md"


@pytest.mark.parametrize("name", RESULTS)
def test_committed_summary_regenerates_from_its_result(name):
    folder = REPO / "docs" / "experiments" / name
    result = json.loads((folder / "result.json").read_text())
    want = (folder / "summary.md").read_text()
    got = load(name).summary(result) + "\n"  # the CLI writes the summary and a newline
    assert got == want, (
        f"docs/experiments/{name}/summary.md is not what {name}.summary(result.json) writes today: either the "
        f"formatter changed (rounding, columns, wording) or the committed files were edited by hand. First "
        f"differing line: {next((f'{a!r} vs {b!r}' for a, b in zip(want.splitlines(), got.splitlines()) if a != b), 'length')}")


NUMBER = re.compile(r"(?<![\w.])[−+-]?\d+\.\d+%?|(?<![\w.])[−+-]?\d+%")  # figures: a decimal point or a percent


def figures(text: str) -> list[tuple[str, float, bool, int]]:
    """(as written, value, is a percentage, decimals) of each figure in the text."""
    out = []
    for s in NUMBER.findall(text):
        body = s.replace("−", "-").rstrip("%")
        out.append((s, float(body), s.endswith("%"), len(body.split(".")[1]) if "." in body else 0))
    return out


def numbers_in(x) -> list[float]:
    if isinstance(x, dict):
        return [v for item in x.values() for v in numbers_in(item)]
    if isinstance(x, list):
        return [v for item in x for v in numbers_in(item)]
    return [float(x)] if isinstance(x, (int, float)) and not isinstance(x, bool) else []


def readme_rows() -> dict[str, str]:
    rows = re.findall(r"^\| `(\w+)` \| (.*) \|$", (REPO / "README.md").read_text(), flags=re.M)
    return {name: row for name, row in rows if name in RESULTS}


def unbacked(name: str, row: str) -> list[str]:
    """The figures of a README row (0.42, +0.32, 65%) that are neither a figure of the experiment's summary nor a
    seed statistic of its result.json, rounded to the digits the row shows (a percentage: the fraction x 100)."""
    folder = REPO / "docs" / "experiments" / name
    result = json.loads((folder / "result.json").read_text())
    summary = figures((folder / "summary.md").read_text())
    fractions = [v for _, v, pct, _ in summary if not pct]
    fractions += numbers_in({k: result[k] for k in ("aggregate", "spread", "pareto") if k in result})
    percents = [v for _, v, pct, _ in summary if pct] + [100 * v for v in fractions]
    return [s for s, x, pct, d in figures(row)
            if not any(abs(v - x) <= 0.5 * 10 ** -d + 1e-9 for v in (percents if pct else fractions))]


@pytest.mark.parametrize("name", sorted(readme_rows()))
def test_readme_quotes_figures_from_the_committed_result(name):
    missing = unbacked(name, readme_rows()[name])
    assert not missing, (f"README's {name} row quotes {missing}, which no figure of docs/experiments/{name}/"
                         f"summary.md or result.json rounds to: a stale or mistyped number")


def test_readme_run_times_are_the_committed_results_seconds():
    """The README's run-time line quotes each experiment's `seconds` from its committed result.json (rounded):
    a rerun that replaces a result must update the line too."""
    text = (REPO / "README.md").read_text()
    line = " ".join(text[text.index("Run times for the three-seed default"):].split("\n\n")[0].split())
    quoted = dict(re.findall(r"\b([a-z_]+) (\d+) s\b", line.split("):", 1)[1]))
    assert set(quoted) >= set(RESULTS), f"README's run-time line lacks {sorted(set(RESULTS) - set(quoted))}"
    for name in RESULTS:
        seconds = json.loads((REPO / "docs" / "experiments" / name / "result.json").read_text())["seconds"]
        assert abs(int(quoted[name]) - seconds) <= 1, f"README says {name} took {quoted[name]} s; its result.json {seconds} s"


def test_readme_check_reports_a_figure_a_digit_off():
    row = readme_rows()["frontier"]
    assert "+0.51 ± 0.13" in row and unbacked("frontier", row) == []
    assert unbacked("frontier", row.replace("+0.51 ± 0.13", "+0.57 ± 0.13")) == ["+0.57"]
    assert unbacked("frontier", row + " 96.5% 88.8%") == ["88.8%"], "percentages are checked too (SFT answers 96.5%)"


# ---------------------------------------------------------------- the base-models cache

TINY = transformer.ModelConfig(vocab_size=VOCAB_SIZE, max_len=26, d_model=16, n_layers=1, n_heads=2, d_mlp=32)
CFG = PipelineConfig(model=TINY)


class FakeTraining:
    """Stands in for pretraining, SFT and the RM stage: returns new random params of the right shapes at every
    call, and counts the calls, so a test can tell a loaded model from a retrained one."""

    def __init__(self, monkeypatch):
        self.calls = {"pretrain": 0, "sft": 0, "rm": 0}
        self.draws = 0
        monkeypatch.setattr(pretrain, "pretrain", lambda key, world, model, cfg: (self.params("pretrain", model), {}))
        monkeypatch.setattr(sft, "sft", lambda key, params, world, model, cfg: (self.params("sft", model), {}))
        monkeypatch.setattr(reward_model, "run_reward_model", self.reward_model)

    def params(self, stage: str, model: transformer.ModelConfig) -> dict:
        self.calls[stage] += 1
        self.draws += 1
        rng = np.random.default_rng(self.draws)
        shapes = jax.eval_shape(lambda key: transformer.init_params(key, model), jax.random.PRNGKey(0))
        return jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)

    def reward_model(self, key, sft_params, world, model, cfg):
        lm = self.params("rm", model)
        rng = np.random.default_rng(self.draws)
        head = {"w": rng.normal(size=model.d_model).astype(np.float32), "b": np.float32(rng.normal())}
        pairs = {"chosen_tokens": rng.integers(0, VOCAB_SIZE, (4, model.max_len)).astype(np.int32),
                 "rejected_valid": rng.random((4, model.max_len)) < 0.5, "gold": rng.normal(size=4)}
        return {"lm": lm, "head": head}, pairs, {"accuracy_gold": float(rng.random()), "ceiling_gold": 0.9}, {}

    def reset(self):
        self.calls = dict.fromkeys(self.calls, 0)


def assert_same_tree(got, want, what: str):
    got_leaves, want_leaves = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want), f"{what}: another layout"
    for g, w in zip(got_leaves, want_leaves):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and np.array_equal(g, w), f"{what}: a value or dtype changed in the round trip"


@pytest.fixture
def fake(monkeypatch):
    return FakeTraining(monkeypatch)


def test_cache_saves_every_model_and_loads_it_back_exactly(fake, tmp_path):
    first = base.base_models(0, CFG, cache=tmp_path)
    assert fake.calls == {"pretrain": 1, "sft": 1, "rm": 1}, "an empty cache: every stage is trained"
    names = sorted(p.name.split("-")[0] + p.name[p.name.index("."):] for p in tmp_path.iterdir())
    assert names == ["pretrained.npz", "rm.npz", "sft.npz"], f"one file per model, nothing beside it: {names}"
    fake.reset()
    again = base.base_models(0, CFG, cache=tmp_path)
    assert fake.calls == {"pretrain": 0, "sft": 0, "rm": 0}, "the same config again: everything is loaded"
    assert_same_tree(again.pretrained, first.pretrained, "the pretrained model")
    assert_same_tree(again.sft, first.sft, "the SFT policy")
    assert_same_tree(again.rm, first.rm, "the reward model (its lm and its head)")
    assert_same_tree(again.pairs, first.pairs, "the RM's training pairs")
    assert again.rm_metrics == first.rm_metrics


def test_without_a_cache_folder_everything_is_trained(fake, tmp_path):
    base.base_models(0, CFG, cache=None)
    base.base_models(0, CFG, cache=None)
    assert fake.calls == {"pretrain": 2, "sft": 2, "rm": 2}


CHANGES = {  # what changed -> the stages that must be trained again (the others loaded)
    "seed": (dict(seed=1), {"pretrain", "sft", "rm"}),
    "model": (dict(model=dataclasses.replace(TINY, n_layers=2)), {"pretrain", "sft", "rm"}),
    "pretraining": (dict(pretrain=dataclasses.replace(CFG.pretrain, n_docs=999)), {"pretrain", "sft", "rm"}),
    "SFT": (dict(sft=dataclasses.replace(CFG.sft, n_demos=77)), {"sft", "rm"}),
    "RM data": (dict(rm=dataclasses.replace(CFG.rm, n_pairs=123)), {"rm"}),
    "RM labeler": (dict(rm=dataclasses.replace(CFG.rm, labeler=Labeler(temperature=0.5))), {"rm"}),
    "PPO": (dict(ppo=PPOConfig(beta=0.7)), set()),
    "DPO and best-of-n": (dict(dpo=dataclasses.replace(CFG.dpo, beta=0.9), best_of_n=3), set()),
}


@pytest.mark.parametrize("change", CHANGES)
def test_cache_retrains_what_a_changed_config_would_make_differently(fake, tmp_path, change):
    base.base_models(0, CFG, cache=tmp_path)
    fields, stale = CHANGES[change]
    cfg = dataclasses.replace(CFG, **{k: v for k, v in fields.items() if k != "seed"})
    fake.reset()
    got = base.base_models(fields.get("seed", 0), cfg, cache=tmp_path)
    trained = {stage for stage, n in fake.calls.items() if n}
    assert trained == stale, (f"after changing the {change} config, base_models trained {sorted(trained) or 'nothing'}; "
                              f"it should train {sorted(stale) or 'nothing'} (a stale model must never be loaded, and "
                              f"models the change cannot affect should come from the cache)")
    assert got.cfg.seed == fields.get("seed", 0)
    fake.reset()
    base.base_models(fields.get("seed", 0), cfg, cache=tmp_path)
    assert fake.calls == {"pretrain": 0, "sft": 0, "rm": 0}, "the changed config's models are cached in turn"


def other_model_checkpoint(path: Path):
    """Overwrite a cached file with a two-layer model (the same shapes per layer: nothing new to compile)."""
    other = dataclasses.replace(TINY, n_layers=2)
    checkpoint.save(str(path), transformer.init_params(jax.random.PRNGKey(9), other), other, overwrite=True)


@pytest.mark.parametrize("stage", ["pretrained", "sft"])
def test_a_cached_file_holding_another_model_is_not_used(fake, tmp_path, stage):
    base.base_models(0, CFG, cache=tmp_path)
    other_model_checkpoint(next(tmp_path.glob(f"{stage}-*.npz")))
    fake.reset()
    got = base.base_models(0, CFG, cache=tmp_path)
    assert fake.calls["pretrain" if stage == "pretrained" else "sft"] == 1, f"the {stage} file holds another model"
    assert len(getattr(got, stage)["blocks"]) == TINY.n_layers, f"a {stage} model of another size was returned"


def test_a_cached_reward_model_holding_another_model_is_not_used(fake, tmp_path, capsys):
    """The RM file's record is right, but its transformer is a two-layer one: the stored ModelConfig is checked too."""
    base.base_models(0, CFG, cache=tmp_path)
    other = dataclasses.replace(TINY, n_layers=2)
    rm, pairs, metrics = fake.reward_model(None, None, None, other, CFG.rm)[:3]
    store.save(tmp_path, base.made_by("rm", CFG), {"rm": rm, "pairs": pairs}, other, {"metrics": metrics})
    fake.reset()
    got = base.base_models(0, CFG, cache=tmp_path)
    assert len(got.rm["lm"]["blocks"]) == TINY.n_layers, "a reward model of another size was loaded"
    assert fake.calls["rm"] == 1 and "holds a model of config" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["corrupt sft", "truncated RM file"])
def test_a_damaged_cache_is_trained_again(fake, tmp_path, damage, capsys):
    first = base.base_models(0, CFG, cache=tmp_path)
    if damage == "corrupt sft":
        next(tmp_path.glob("sft-*.npz")).write_bytes(b"half a file")
    else:
        rm_file = next(tmp_path.glob("rm-*.npz"))
        rm_file.write_bytes(rm_file.read_bytes()[: rm_file.stat().st_size // 2])
    fake.reset()
    got = base.base_models(0, CFG, cache=tmp_path)
    assert fake.calls["sft" if damage == "corrupt sft" else "rm"] == 1, f"{damage}: that model should be trained again"
    assert "ignoring" in capsys.readouterr().out, "base_models should say which cached file it ignores"
    if damage != "corrupt sft":
        assert_same_tree(got.sft, first.sft, "the SFT policy (undamaged, so loaded)")


def test_a_file_made_by_other_configs_is_trained_again_and_says_why(fake, tmp_path, capsys):
    """Copy the SFT file of n_demos=77 over the file of the default SFT config: the name fits, the record does not."""
    changed = dataclasses.replace(CFG, sft=dataclasses.replace(CFG.sft, n_demos=77))
    base.base_models(0, changed, cache=tmp_path, with_rm=False)
    stale = store.path(tmp_path, base.made_by("sft", changed))
    stale.replace(store.path(tmp_path, base.made_by("sft", CFG)))
    fake.reset()
    base.base_models(0, CFG, cache=tmp_path, with_rm=False)
    assert fake.calls == {"pretrain": 0, "sft": 1, "rm": 0}, "an SFT file made by another SFT config must not be used"
    assert "its stored sft differ" in capsys.readouterr().out, "the printed line should name the config that differs"


def notebook_models(monkeypatch, folder: Path):
    """notebooks/_models.py with its artifacts folder pointed at `folder`."""
    monkeypatch.syspath_prepend(str(REPO / "notebooks"))
    import _models

    monkeypatch.setattr(_models, "ARTIFACTS", folder)
    return _models


def test_the_notebooks_and_base_models_share_one_cache(fake, tmp_path, monkeypatch):
    """The notebooks' seed-0 models are base_models(0)'s: what one trains into a folder, the other loads."""
    nb = notebook_models(monkeypatch, tmp_path)
    assert all(np.array_equal(nb.KEYS[k], v) for k, v in base.stage_keys(0).items()), "the notebooks' keys"
    first = nb.base()
    assert fake.calls == {"pretrain": 1, "sft": 1, "rm": 1}, "an empty folder: the notebooks train every stage once"
    fake.reset()
    again = base.base_models(0, nb.PIPELINE, cache=tmp_path)
    assert fake.calls == {"pretrain": 0, "sft": 0, "rm": 0}, "base_models should load the files the notebooks wrote"
    for field in ("pretrained", "sft", "rm", "pairs"):
        assert_same_tree(getattr(again, field), getattr(first, field), field)
    assert again.rm_metrics == first.rm_metrics and again.cfg == first.cfg
    assert_same_tree(nb.sft_model(), first.sft, "_models.sft_model()")
    for name, stage in (("pretrained", "pretrain"), ("sft", "sft")):  # what notebooks 01 and 02 save
        trained_in_the_notebook = fake.params(stage, nb.MODEL)
        nb.save_model(name, trained_in_the_notebook)
        assert_same_tree(getattr(base.base_models(0, nb.PIPELINE, cache=tmp_path), name), trained_in_the_notebook,
                         f"base_models' {name} model after the notebook saved one")


def test_notebook_03s_reward_model_is_base_models(fake, tmp_path, monkeypatch):
    """Notebook 03 saves run_reward_model's results where base_models looks: the notebooks and the experiments hold one RM."""
    nb = notebook_models(monkeypatch, tmp_path)
    mine = fake.reward_model(None, None, None, nb.MODEL, nb.RM)  # (rm, pairs, metrics, history), as notebook 03 gets them
    nb.save_reward_model(*mine[:3])
    fake.reset()
    got = base.base_models(0, nb.PIPELINE, cache=tmp_path)
    assert fake.calls["rm"] == 0, "base_models should load the RM notebook 03 saved, not train another"
    assert_same_tree(got.rm, mine[0], "base_models' RM")
    assert_same_tree(got.pairs, mine[1], "base_models' RM pairs")
    assert got.rm_metrics == mine[2]
    assert_same_tree(nb.reward_model_and_pairs(), mine[:2], "the notebooks' RM after notebook 03 saved one")
    assert_same_tree(nb.base().rm, mine[0], "_models.base()'s RM")


def test_the_notebooks_ppo_policy_is_trained_once_then_loaded(fake, tmp_path, monkeypatch):
    nb = notebook_models(monkeypatch, tmp_path)
    runs = []
    monkeypatch.setattr(nb, "train_ppo", lambda sft_params, rm_params: (runs.append(1) or fake.params("sft", nb.MODEL), {}))
    first = nb.ppo_policy()
    assert_same_tree(nb.ppo_policy(), first, "the saved PPO policy")
    assert len(runs) == 1, "the second ppo_policy() should load notebook 04's policy, not train again"
