"""Plots the pipeline and the notebooks draw. Each returns its matplotlib Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

MODELS = ["pretrained", "sft", "ppo", "dpo", "best_of_n"]
COLORS = {"pretrained": "0.6", "sft": "tab:blue", "ppo": "tab:red", "dpo": "tab:green", "best_of_n": "tab:purple"}


def smooth(x: np.ndarray, window: int = 10) -> np.ndarray:
    """A moving average, so noisy per-step curves are readable."""
    x = np.asarray(x, dtype=float)
    if len(x) < window:
        return x
    return np.convolve(x, np.ones(window) / window, mode="valid")


def training_curves(histories: dict[str, dict[str, np.ndarray]], panels: dict[str, list[str]]) -> plt.Figure:
    """One panel per stage; `panels` maps stage -> the metric names to draw from its history."""
    stages = [s for s in panels if s in histories]
    fig, axes = plt.subplots(1, len(stages), figsize=(3.6 * len(stages), 3.0), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        for name in panels[stage]:
            if name in histories[stage]:
                ax.plot(smooth(histories[stage][name]), label=name)
        ax.set_title(stage)
        ax.set_xlabel("step" if stage in ("pretrain", "sft", "reward model", "dpo") else "PPO iteration")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def gold_vs_proxy(metrics: dict) -> plt.Figure:
    """Bars: each model's gold reward (the ideal human) beside its proxy reward (the reward model)."""
    models = [m for m in MODELS if m in metrics]
    x = np.arange(len(models))
    fig, ax1 = plt.subplots(figsize=(6.5, 3.4))
    ax1.bar(x - 0.2, [metrics[m]["gold_reward"] for m in models], 0.4, label="gold reward", color="tab:orange")
    ax1.set_ylabel("gold reward (mean, [-1, 1])")
    ax2 = ax1.twinx()
    ax2.bar(x + 0.2, [metrics[m]["proxy_reward"] for m in models], 0.4, label="proxy (RM) reward", color="tab:cyan")
    ax2.set_ylabel("reward-model score (SFT = 0, std 1)")
    ax1.set_xticks(x, models)
    ax1.axhline(0, color="k", lw=0.5)
    fig.legend(loc="upper left", fontsize=8)
    ax1.set_title("gold vs proxy reward on held-out prompts")
    fig.tight_layout()
    return fig


def reward_vs_kl(metrics: dict) -> plt.Figure:
    """Gold reward against exact KL(model || SFT): what each method buys for how far it moves."""
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for m in MODELS:
        if m in metrics and m != "pretrained":
            ax.scatter(metrics[m]["kl_to_sft"], metrics[m]["gold_reward"], s=60, color=COLORS[m], label=m)
    ax.set_xlabel("KL(model || SFT), nats per response")
    ax.set_ylabel("gold reward (mean)")
    ax.set_title("reward vs KL")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
