"""GRPO and RLOO beside PPO, at matched samples: which turns a given number of samples into gold reward?

All three start from the same SFT model and climb the same normalised reward model with the same KL
coefficient, learning rate, epochs and minibatches; each iteration draws the same number of responses:
    PPO         batch_size prompts, one response each, a learned value model (GAE)
    GRPO, RLOO  batch_size / G prompts, G responses each, the group as the baseline (no value model)
So after i iterations each has seen i * batch_size samples. The curve is the gold reward of the
training samples themselves (the policy as it was at that iteration; the policy never sees gold),
smoothed; the final figures are measured on held-out prompts with the exact KL to SFT.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

from minirlhf import grpo_rloo, ppo
from minirlhf.experiments import seed_spread
from minirlhf.experiments.base import BaseModels
from minirlhf.experiments.toolkit import eval_prompts, fmt, measure, result, seed_bases, train_group, train_ppo
from minirlhf.pipeline import PipelineConfig
from minirlhf.plots import smooth
from minirlhf.transformer import ModelConfig
from minirlhf.world import World

METHODS = ("ppo", "grpo", "rloo")
COLORS = {"ppo": "tab:red", "grpo": "tab:blue", "rloo": "tab:green"}


@dataclass(frozen=True)
class Config:
    """Budgets of the comparison. Config() is the CLI's run, Config.small() the notebook's."""

    iterations: int = 100
    """Iterations of every method (the pipeline's PPO runs 100)."""
    batch_size: int = 64
    """Responses per iteration for every method: PPO's prompts, or batch_size / group_size groups."""
    group_size: int = 4
    """G, responses per prompt for GRPO and RLOO."""
    methods: tuple[str, ...] = METHODS
    """Which of ppo, grpo, rloo to train."""
    smooth_window: int = 10
    """Iterations in the moving average of the gold curve."""
    n_eval: int = 512
    """Held-out prompts each final policy answers."""
    pipeline: PipelineConfig = PipelineConfig()
    """Pretraining, SFT, the RM and PPO's other settings, as the pipeline runs them."""

    def __post_init__(self):
        if not self.methods or any(m not in METHODS for m in self.methods):
            raise ValueError(f"Config.methods must be a non-empty subset of {METHODS}, got {self.methods}")
        if min(self.iterations, self.n_eval, self.smooth_window) < 1:
            raise ValueError("Config.iterations, n_eval and smooth_window must be >= 1")

    @classmethod
    def small(cls) -> "Config":
        """The notebook's budget: 30 iterations (1920 samples per method), 256 evaluation prompts."""
        return cls(iterations=30, smooth_window=5, n_eval=256)

    def ppo_config(self) -> ppo.PPOConfig:
        return dataclasses.replace(self.pipeline.ppo, iterations=self.iterations, batch_size=self.batch_size)

    def group_config(self, algorithm: str) -> grpo_rloo.GroupConfig:
        """The same lr, beta, epochs, minibatches, clip and width as PPO's; only the baseline differs."""
        p = self.ppo_config()
        return grpo_rloo.GroupConfig(algorithm=algorithm, group_size=self.group_size, iterations=p.iterations,
                                     batch_size=p.batch_size, ppo_epochs=p.ppo_epochs, minibatches=p.minibatches,
                                     lr=p.lr, beta=p.beta, cliprange=p.cliprange, temperature=p.temperature,
                                     response_width=p.response_width, max_grad_norm=p.max_grad_norm)


def train(method: str, base: BaseModels, cfg: Config) -> tuple[dict, dict]:
    """One method from SFT; returns (policy params, history). PPO's value model starts from the RM, as in the pipeline."""
    if method == "ppo":
        return train_ppo(base, cfg.ppo_config())
    return train_group(base, cfg.group_config(method))


def run_seed(cfg: Config, base: BaseModels) -> dict:
    """Train every method from these base models and measure it on held-out prompts; one seed's result."""
    prompts = eval_prompts(base, cfg.n_eval)
    out = {"sft": measure(base.sft, base, prompts)[0]}
    for method in cfg.methods:
        start = time.perf_counter()
        params, history = train(method, base, cfg)
        seconds = time.perf_counter() - start
        out[method] = measure(params, base, prompts)[0] | {
            "gold_curve": history["objective/gold"].tolist(),  # training samples, one value per iteration
            "kl_curve": history["objective/kl"].tolist(),  # sampled k1, per response
            "seconds": round(seconds, 1)}
    return out


def compare(sft_params: dict, rm_params: dict, world: World, keys: dict, model_cfg: ModelConfig, cfg: Config,
            seed: int) -> dict:
    """`run_seed` on models handed over one by one (a notebook's own SFT model and RM)."""
    pipeline = dataclasses.replace(cfg.pipeline, seed=seed, model=model_cfg)
    return run_seed(cfg, BaseModels(pipeline, world, keys, {}, sft_params, rm_params, {}, {}))


def run(cfg: Config = Config(), seeds=(0, 1, 2), cache="runs/cache") -> dict:
    per_seed = {str(seed): run_seed(cfg, base) for seed, base in seed_bases(cfg, seeds, cache)}
    return result("grpo_rloo", cfg, per_seed, aggregate(per_seed, cfg.methods), beta=cfg.pipeline.ppo.beta)


def aggregate(per_seed: dict, methods) -> dict:
    """Mean, std and range over seeds of each method's final held-out figures, and SFT's."""
    out = {}
    for name in ("sft", *methods):
        stats = {}
        for metric in ("gold", "kl", "seconds"):
            values = [s[name][metric] for s in per_seed.values() if metric in s[name]]
            if values:
                stats[metric] = seed_spread(values)
        out[name] = stats
    return out


def plot(result: dict) -> plt.Figure:
    """Gold reward of the training samples vs samples drawn (mean over seeds, band = min..max), and KL."""
    batch = result["config"]["batch_size"]
    window = max(1, min(10, result["config"]["iterations"] // 3))
    fig, (ax_gold, ax_kl) = plt.subplots(1, 2, figsize=(10, 3.6))
    seeds = list(result["seeds"].values())
    for method in [m for m in METHODS if m in seeds[0]]:
        for ax, key in ((ax_gold, "gold_curve"), (ax_kl, "kl_curve")):
            curves = np.array([smooth(s[method][key], window) for s in seeds])  # [seeds, points]
            samples = (np.arange(curves.shape[1]) + window) * batch  # the samples up to each window's end
            label = f"{method.upper()} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})"
            ax.plot(samples, curves.mean(axis=0), color=COLORS[method], label=label)
            ax.fill_between(samples, curves.min(axis=0), curves.max(axis=0), color=COLORS[method], alpha=0.15)
    sft = np.mean([s["sft"]["gold"] for s in seeds])
    ax_gold.axhline(sft, color="0.4", ls="--", lw=1, label="SFT (held-out)")
    ax_gold.set(xlabel="samples drawn (responses)", ylabel="gold reward of the samples",
                title=f"gold reward vs samples ({window}-iteration average)")
    ax_kl.set(xlabel="samples drawn (responses)", ylabel="KL to SFT (nats / response, k1)", title="KL to SFT")
    ax_gold.legend()
    fig.tight_layout()
    return fig


def summary(result: dict) -> str:
    agg, c = result["aggregate"], result["config"]
    methods = [m for m in METHODS if m in agg]
    lines = [f"**GRPO / RLOO vs PPO at matched samples** ({c['iterations']} iterations x {c['batch_size']} responses; "
             f"GRPO/RLOO: {c['batch_size'] // c['group_size']} prompts x G={c['group_size']}; beta {c['beta']}; "
             f"{len(result['seeds'])} seed(s); {c['n_eval']} held-out prompts)", "",
             "| | " + " | ".join(["SFT"] + [m.upper() for m in methods]) + " |",
             "|---|" + "---|" * (len(methods) + 1)]
    for seed, s in result["seeds"].items():
        cells = [f"{s['sft']['gold']:.3f}"] + [f"{s[m]['gold']:.3f} (KL {s[m]['kl']:.2f})" for m in methods]
        lines.append(f"| seed {seed} gold | " + " | ".join(cells) + " |")
    lines.append("| mean ± std [min, max] | " + " | ".join([fmt(agg["sft"]["gold"])] +
                                                           [fmt(agg[m]["gold"]) for m in methods]) + " |")
    lines.append("| seconds per run (mean) | – | " + " | ".join(f"{agg[m]['seconds']['mean']:.0f}" for m in methods) + " |")
    best = max(methods, key=lambda m: agg[m]["gold"]["mean"])
    close = [m.upper() for m in methods if m != best and gold_gap(result, best, m) <= 2 * gold_gap_se(result, best, m)]
    lines += ["", f"Highest mean held-out gold reward: {best.upper()} ({agg[best]['gold']['mean']:.3f}); within 2 "
              f"standard errors of it: {', '.join(close) or 'none'}; gains over SFT: "
              + ", ".join(f"{m.upper()} {agg[m]['gold']['mean'] - agg['sft']['gold']['mean']:+.3f}" for m in methods)
              + "."]
    return "\n".join(lines)


def gold_gap(result: dict, a: str, b: str) -> float:
    """Method a's mean held-out gold minus method b's, over the seeds."""
    return float(np.mean([s[a]["gold"] - s[b]["gold"] for s in result["seeds"].values()]))


def gold_gap_se(result: dict, a: str, b: str) -> float:
    """The standard error of gold_gap: over the seeds' paired differences; with one seed, over its prompts."""
    seeds = list(result["seeds"].values())
    if len(seeds) == 1:
        return float(np.hypot(seeds[0][a]["gold_se"], seeds[0][b]["gold_se"]))
    return float(np.std([s[a]["gold"] - s[b]["gold"] for s in seeds], ddof=1) / np.sqrt(len(seeds)))
