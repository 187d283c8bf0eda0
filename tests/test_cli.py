"""The command line's plumbing: every option reaches the function it names, `experiment` writes its three files,
and the speed check's timer reports what it says. The full `python -m minirlhf run --quick`, in a fresh process,
is in test_pipeline.py beside the in-process run it must equal; bench's jitted runners are tested on a tiny
model in test_bench.py."""
import dataclasses
import json
import time
import types

import pytest

from minirlhf import __main__ as cli
from minirlhf import bench, experiments, overrides, pipeline
from minirlhf.experiments import cli as experiment_cli
from minirlhf.pipeline import PipelineConfig


@pytest.fixture
def calls(monkeypatch):
    """Replace what the CLI calls with recorders: (function name, args, kwargs) per call, nothing trained."""
    log = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: log.append(("run_pipeline", a, k)))
    monkeypatch.setattr(experiment_cli, "run_experiment", lambda *a, **k: log.append(("run_experiment", a, k)))
    return log


PLAIN = {"force": False, "overrides": ()}


def test_run_passes_seed_quick_and_out(calls, tmp_path):
    out = str(tmp_path / "somewhere")
    assert cli.main(["run", "--quick", "--seed", "3", "--out", out]) == 0
    assert calls == [("run_pipeline", (PipelineConfig.quick(3), out), PLAIN)], (
        "`run --quick --seed 3 --out somewhere` should call run_pipeline(PipelineConfig.quick(3), 'somewhere')")


def test_run_defaults_are_the_course_run(calls, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # runs/default is checked: start from a folder without one
    cli.main(["run", "--seed", "5"])
    cli.main(["run"])
    assert calls == [("run_pipeline", (PipelineConfig(seed=5), "runs/default"), PLAIN),
                     ("run_pipeline", (PipelineConfig(seed=0), "runs/default"), PLAIN)], (
        "without --quick the CLI should run the full PipelineConfig, seed 0 and runs/default unless told otherwise")


def test_experiment_passes_every_option(calls):
    cli.main(["experiment", "frontier", "--seeds", "4", "7", "--out", "o", "--small", "--cache", "c"])
    cli.main(["experiment", "cai"])
    assert calls == [("run_experiment", ("frontier", [4, 7], "o"), {"small": True, "cache": "c", "overrides": ()}),
                     ("run_experiment", ("cai", [0, 1, 2], "runs/experiments"),
                      {"small": False, "cache": "runs/cache", "overrides": ()})], (
        "`experiment NAME` should pass its seeds, --out, --small and --cache on (defaults: 0 1 2, runs/experiments, "
        "the full budget, runs/cache)")


# ---------------------------------------------------------------- --set and argparse's errors


def test_set_changes_the_field_typed_from_the_dataclass(calls, tmp_path):
    out = str(tmp_path / "o")
    cli.main(["run", "--quick", "--out", out, "--set", "ppo.beta=0.1", "--set", "rm.optim.steps=17",
              "--set", "ppo.whiten_advantages=false", "--set", "n_eval=8", "--set", "ppo.beta=0.2"])
    (_, (cfg, _), kwargs), = calls
    q = PipelineConfig.quick()
    want = dataclasses.replace(q, n_eval=8, ppo=dataclasses.replace(q.ppo, beta=0.2, whiten_advantages=False),
                               rm=dataclasses.replace(q.rm, optim=dataclasses.replace(q.rm.optim, steps=17)))
    assert cfg == want, "--set should replace exactly the fields named (the last one wins), typed from the dataclass"
    assert type(cfg.rm.optim.steps) is int and type(cfg.ppo.beta) is float
    assert kwargs["overrides"] == ("ppo.beta=0.1", "rm.optim.steps=17", "ppo.whiten_advantages=false", "n_eval=8",
                                   "ppo.beta=0.2"), "the overrides go on to config.json"


def test_set_is_checked_by_the_configs_own_validation():
    cfg = overrides.apply(PipelineConfig(), ["ppo.adaptive.target=3", "dpo.loss_type=ipo"])
    assert cfg.ppo.adaptive is not None and cfg.ppo.adaptive.target == 3.0 and cfg.dpo.loss_type == "ipo"
    assert overrides.apply(cfg, ["ppo.adaptive=none"]).ppo.adaptive is None
    with pytest.raises(ValueError, match="grad_clip"):
        overrides.apply(PipelineConfig(), ["sft.optim.grad_clip=-1"])  # OptimConfig's own __post_init__


@pytest.mark.parametrize("argv, says", [
    (["--set", "ppo.bta=1"], "unknown config field 'ppo.bta': PPOConfig has adaptive, batch_size, beta"),
    (["--set", "nope=1"], "unknown config field 'nope': PipelineConfig has best_of_n"),
    (["--set", "ppo.beta=-1"], "beta"),
    (["--set", "ppo.iterations=1.5"], "ppo.iterations is an int, got '1.5'"),
    (["--set", "ppo.whiten_advantages=maybe"], "true or false"),
    (["--set", "ppo.beta"], "section.field=value"),
    (["--set", "ppo=1"], "is a section"),
    (["--seed", "-1"], "a seed is a whole number >= 0"),
    (["--seed", "x"], "invalid seed value"),
])
def test_bad_run_options_are_one_argparse_line_not_a_traceback(argv, says, calls, capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        cli.main(["run", "--quick", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "error: " in err and says in err, f"{argv}: expected exit 2 saying {says!r}, got {err}"
    assert "Traceback" not in err and calls == [], "nothing may run after a bad option"


def test_experiment_names_are_choices_and_its_config_takes_set(calls, capsys, monkeypatch):
    with pytest.raises(SystemExit):
        cli.main(["experiment", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    monkeypatch.setattr(experiments, "load", lambda name: types.SimpleNamespace(Config=Frozen))
    cli.main(["experiment", "cai", "--set", "steps=3"])
    assert calls[-1][2]["overrides"] == ("steps=3",)
    with pytest.raises(SystemExit):
        cli.main(["experiment", "cai", "--set", "stepz=3"])
    assert "unknown config field 'stepz': Frozen has steps" in capsys.readouterr().err
    assert experiment_cli.config_overrides.apply(Frozen(), ["steps=3"]) == Frozen(steps=3)


@dataclasses.dataclass(frozen=True)
class Frozen:
    steps: int = 1

    @classmethod
    def small(cls):
        return cls(0)


def test_help_shows_defaults_same_seed_and_the_other_modules(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    shown = capsys.readouterr().out
    assert "\n\nFields for --set" in shown, "the epilog's paragraphs (same seed, cache, fields) should stay apart"
    text = " ".join(shown.split())
    assert "(default: runs/default)" in text and "ppo.beta=0.2;" in text, "--help should show the defaults"
    assert "same machine with the same package versions" in text and "another CPU" in text
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert "minirlhf.grade" in text and "minirlhf.bench" in text and "ask" in text


def test_cli_rejects_a_missing_command(capsys):
    with pytest.raises(SystemExit):
        cli.main([])


def fake_experiment(log: list):
    """An experiment module with the package's interface whose run records what it was given."""
    class Config:
        def __init__(self, budget="full"):
            self.budget = budget

        @classmethod
        def small(cls):
            return cls("small")

    def run(cfg, seeds, cache):
        log.append((cfg.budget, seeds, cache))
        return {"seeds": {str(s): {"gold": 0.25 * s} for s in seeds}}

    def plot(result):
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
        ax.plot([float(v["gold"]) for v in result["seeds"].values()])
        return fig

    summary = lambda result: f"**fake** {len(result['seeds'])} seeds, gold {max(v['gold'] for v in result['seeds'].values()):.2f}"
    return types.SimpleNamespace(Config=Config, run=run, plot=plot, summary=summary)


def test_run_experiment_writes_result_plot_and_summary(monkeypatch, tmp_path):
    log = []
    monkeypatch.setattr(experiment_cli, "load", lambda name: fake_experiment(log))
    returned = experiment_cli.run_experiment("fake", [1, 2], str(tmp_path), small=True, cache="the_cache")
    assert log == [("small", (1, 2), "the_cache")], "--small should run Config.small(), with the seeds and cache given"
    folder = tmp_path / "fake"
    result = json.loads((folder / "result.json").read_text())
    assert result == returned and result["seeds"] == {"1": {"gold": 0.25}, "2": {"gold": 0.5}}
    assert isinstance(result["seconds"], float) and result["seconds"] >= 0, "result.json records the run's seconds"
    assert (folder / "summary.md").read_text() == "**fake** 2 seeds, gold 0.50\n", "summary.md is summary(result)"
    assert (folder / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "plot.png should be the plot, as a PNG"
    experiment_cli.run_experiment("fake", [0], str(tmp_path), small=False, cache=None)
    assert log[-1] == ("full", (0,), None), "without --small, Config()"


# ---------------------------------------------------------------- the speed check


def test_median_times_skip_the_warm_up_and_take_the_median():
    """Runners that sleep known times: the first call (the compile) is left out, the middle one is reported."""
    calls = {}

    def runner(name, delays):
        def run():
            calls[name] = calls.get(name, 0) + 1
            time.sleep(delays[calls[name] - 1])
        return run

    times = bench.median_times_ms({"slow_first": runner("slow_first", [0.3, 0.01, 0.01, 0.01]),
                                   "odd_one_out": runner("odd_one_out", [0.0, 0.01, 0.2, 0.01])}, repeats=3)
    assert calls == {"slow_first": 4, "odd_one_out": 4}, "each runner: one warm-up call, then `repeats` timed ones"
    assert set(times) == {"slow_first", "odd_one_out"}
    for name, ms in times.items():
        assert 10 <= ms < 60, (f"{name}: the median of the timed calls (10, 10, 10 ms or 10, 200, 10 ms) is about "
                               f"10 ms, got {ms:.1f} ms: was the warm-up timed, or the mean taken?")
