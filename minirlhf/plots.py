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


def training_curves(histories: dict[str, dict[str, np.ndarray]], panels: dict[str, tuple[str, dict[str, str]]],
                    window: int = 10) -> plt.Figure:
    """One panel per stage, every curve smoothed by `smooth(.., window)` (the figure's title says so).

    panels: stage -> (its y-axis label, {metric in that stage's history: the legend's name for it}).
    A smoothed point is drawn at the last step of its window, so the x axis stays the stage's own steps.
    """
    stages = [s for s in panels if s in histories]
    fig, axes = plt.subplots(1, len(stages), figsize=(3.6 * len(stages), 3.4), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        ylabel, lines = panels[stage]
        for name, label in lines.items():
            if name in histories[stage]:
                raw = histories[stage][name]
                smoothed = smooth(raw, window)
                ax.plot(np.arange(len(raw) - len(smoothed), len(raw)), smoothed, label=label)
        ax.set_title(stage)
        ax.set_xlabel("PPO iteration" if stage == "ppo" else "step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"training curves, smoothed: each point is the mean of the {window} steps (PPO: iterations) up "
                 f"to it (a curve shorter than that is drawn as it is)", fontsize=9)
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
    ax1.set_title("gold vs proxy reward on held-out prompts")
    fig.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)  # below the axes: bars of any height stay visible
    fig.tight_layout(rect=(0, 0.07, 1, 1))
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
