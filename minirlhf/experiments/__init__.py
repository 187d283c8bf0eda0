"""Experiments that reproduce the field's results on the toy task.

Each experiment is a module here with the same small interface, so the CLI and the notebooks call
them the same way (the notebooks with a smaller budget):

    Config            a frozen dataclass; Config() is the CLI's full run, Config.small() the notebook's
    run(cfg, seeds, cache) -> dict   trains and measures; returns plain JSON-able data in the one schema
                                     {"experiment", "config", "seeds": {seed: data}, "aggregate"}
    plot(result) -> matplotlib Figure        draws the result (every point from `run`'s data)
    summary(result) -> str                   a few lines of markdown with the measured figures

What they all do alike (train from the base models, measure a policy, build and format the result) is in
`toolkit`; no experiment imports another.

`python -m minirlhf experiment NAME [--seeds 0 1 2] [--out DIR] [--small]` runs one and writes
DIR/NAME/result.json, plot.png and summary.md.
"""
from __future__ import annotations

import importlib

import numpy as np

EXPERIMENTS = {  # name -> module in this package
    "overoptimization": "overoptimization",  # Gao et al. 2022: proxy up, gold peaks and falls
    "labeler_bias": "labeler_bias",  # confident-sounding labels -> RM -> policy
    "frontier": "frontier",  # gold reward vs KL for PPO, DPO and best-of-n
    "cai": "cai",  # Constitutional AI: AI labels for harmlessness
    "small_vs_big": "small_vs_big",  # small RLHF'd model vs a bigger SFT-only one
    "grpo_rloo": "grpo_rloo",  # critic-free policy gradients beside PPO
    "sharding": "sharding",  # data-parallel training step over several devices
    "rlvr": "rlvr",  # verifiable rewards and the perfect-reward control: math accuracy, pass@k
    "iterated": "iterated",  # iterated online RLHF: fresh labels on the current policy, RM retrained each round
    "optimum": "optimum",  # the exact KL-regularised optimum pi* beside PPO, DPO and best-of-n
    "ensemble": "ensemble",  # reward-model ensembles against over-optimisation; stopping without gold
}


def seed_spread(values) -> dict:
    """Mean, standard deviation, min and max over seeds, and the values; every experiment's "mean ± std".

    The std is the sample standard deviation (ddof = 1; 0 for a single seed): with three seeds the population
    one would understate the spread by a fifth. A NaN (a seed where the measurement had nothing to count) is
    left out of every statistic.
    """
    v = np.asarray(values, float).ravel()
    kept = v[~np.isnan(v)]
    if kept.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan"), "values": v.tolist()}
    return {"mean": float(kept.mean()), "std": float(kept.std(ddof=1)) if kept.size > 1 else 0.0,
            "min": float(kept.min()), "max": float(kept.max()), "values": v.tolist()}


def load(name: str):
    """The experiment's module; a clear error for an unknown (or not yet written) name."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}")
    try:
        return importlib.import_module(f"minirlhf.experiments.{EXPERIMENTS[name]}")
    except ModuleNotFoundError as e:
        if e.name == f"minirlhf.experiments.{EXPERIMENTS[name]}":
            raise ValueError(f"experiment {name!r} is not written yet") from None
        raise
