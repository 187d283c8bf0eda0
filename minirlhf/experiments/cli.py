"""`python -m minirlhf experiment NAME`: run one experiment, write its data, plot and summary."""
from __future__ import annotations

import json
import time
from pathlib import Path

from minirlhf import overrides as config_overrides
from minirlhf.experiments import load


def run_experiment(name: str, seeds: list[int], out: str, small: bool = False, cache: str | None = "runs/cache",
                   overrides: tuple[str, ...] = ()) -> dict:
    """Run experiment `name` (its Config, or Config.small(), with the `--set field=value` overrides applied)."""
    module = load(name)
    cfg = config_overrides.apply(module.Config.small() if small else module.Config(), list(overrides))
    start = time.perf_counter()
    result = module.run(cfg, seeds=tuple(seeds), cache=cache)
    result["seconds"] = round(time.perf_counter() - start, 1)
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    fig = module.plot(result)
    fig.savefig(folder / "plot.png", dpi=110, bbox_inches="tight")
    text = module.summary(result)
    (folder / "summary.md").write_text(text + "\n")
    print(text)
    print(f"\nwrote {folder}/result.json, plot.png, summary.md ({result['seconds']} s)")
    return result
