"""How the ensemble experiment's result is drawn and written up (`ensemble.plot`, `ensemble.summary`).

Apart from the experiment (minirlhf/experiments/ensemble.py), which asks the question and runs it; this reads
only the result dict, so a committed result.json can be re-plotted and re-summarised without a rerun.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from minirlhf.experiments.monitoring import STOP_COLUMNS, stop_cells
from minirlhf.experiments.report import bars, fmt, per_seed_lines, table

SINGLE = "single"  # the pipeline's RM alone, the curve every objective is compared with

WATCHED = ("gold", "proxy", "disagreement", "alarm_share", "entropy")


def plot(result: dict) -> plt.Figure:
    """Top: gold against d for PPO and best-of-n, per run; gold at the peak and the end. Bottom: the single-RM run
    watched, per seed, with the rule's stop and the best checkpoint."""
    seeds = list(result["seeds"].values())
    names = list(seeds[0]["ppo"])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for col, method in enumerate(("ppo", "bon")):
        ax = axes[0, col]
        for c, name in enumerate(names):
            per_seed_lines(ax, [r[method][name] for r in seeds], "d", "gold", name, color=colors[c])
        ax.set_xlabel("d = sqrt(KL to SFT), sqrt(nats)")
        ax.set_ylabel("gold reward (mean)")
        ax.set_title(("PPO at beta = 0" if method == "ppo" else "best-of-n") + " (line style: seed)", fontsize=10)
        ax.legend(fontsize=7)
    agg = result["aggregate"]
    bars(axes[0, 2], names, {f"PPO gold {k}": [agg[f"ppo {n}"][f"gold_{k}"] for n in names] for k in ("peak", "end")}
         | {f"best-of-n gold {k}": [agg[f"bon {n}"][f"gold_{k}"] for n in names] for k in ("peak", "end")},
         "gold reward", "gold at the peak and at the end (bars: mean, whiskers: range, dots: seeds)")
    for col, r in enumerate(seeds[:3]):
        ax, curve = axes[1, col], r["ppo"][SINGLE]
        x = np.maximum(curve["iteration"], 0.5)  # SFT (iteration 0) drawn at 0.5 on the log axis
        for c, key in enumerate(WATCHED):
            ax.plot(x, curve[key], "o-", color=colors[c], ms=3, label=key)
        ax.plot(x, np.array(curve["kl"]) / 10, "o-", color=colors[len(WATCHED)], ms=3, label="KL / 10")
        ax.axvline(x[curve["stop"]["index"]], color="k", ls="--", lw=1, label="rule's stop")
        ax.axvline(max(curve["stop"]["best_iteration"], 0.5), color="g", ls=":", lw=1.5, label="best checkpoint")
        ax.set_xscale("log")
        ax.set_xlabel("PPO iteration (SFT at 0.5)")
        ax.set_title(f"seed {r['seed']}: the single-RM run as a practitioner sees it (and gold)", fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle(f"Reward-model ensembles (k = {result['config']['k']}) against over-optimisation, and a stopping "
                 "rule without gold", fontsize=11)
    fig.tight_layout()
    return fig


def compared(agg: dict, method: str, names: list[str], key: str) -> list[str]:
    """One line per objective: its `key` minus the single RM's, per seed, and in how many seeds it is higher."""
    base = agg[f"{method} {SINGLE}"][key]["values"]
    out = []
    for name in names[1:]:
        diff = np.subtract(agg[f"{method} {name}"][key]["values"], base)
        out.append(f"{name}: {', '.join(f'{x:+.3f}' for x in diff)} (higher in {int(np.sum(diff > 0))}/{len(diff)})")
    return out


def summary(result: dict) -> str:
    """Markdown: per seed, each curve's peak and end; the objectives against the single RM; the stopping rule; time."""
    seeds, agg, cfg = list(result["seeds"].values()), result["aggregate"], result["config"]
    names = list(seeds[0]["ppo"])
    lines = [f"## Reward-model ensembles ({len(seeds)} seeds: {', '.join(str(s['seed']) for s in seeds)})", "",
             (f"k = {cfg['k']} members (the pipeline's RM and {cfg['k'] - 1} trained on "
              f"{'bootstrap resamples of its pairs' if cfg['bootstrap'] else 'its pairs'}, each its own key); PPO at "
              f"beta = 0 for {cfg['ppo_iterations']} iterations, best-of-n up to n = {max(cfg['bon_ns'])} from "
              f"{cfg['bon_draws']} SFT draws per prompt. Gold: the ideal human; KL: exact, to SFT."), ""]
    rows = []
    for method, label in (("ppo", "PPO"), ("bon", "best-of-n")):
        for r in seeds:
            for name in names:
                c, p = r[method][name], r[method][name]["peak"]
                rows.append([label, name, str(r["seed"]), f"{c['gold'][0]:+.3f} -> {p['gold_peak']:+.3f} -> "
                             f"{p['gold_end']:+.3f}", f"{p['kl_peak']:.2f}", f"{c['kl'][-1]:.2f}"])
    lines += table(["method", "reward", "seed", "gold: SFT -> peak -> end", "KL at peak", "KL at end"], rows)
    lines += ["", "**Across seeds** (mean ± std [min, max]):", ""]
    for method, label in (("ppo", "PPO"), ("bon", "best-of-n")):
        for name in names:
            a = agg[f"{method} {name}"]
            lines.append(f"- {label}, {name}: gold peak {fmt(a['gold_peak'])} at KL {fmt(a['kl_peak'], 2)}, "
                         f"gold at the end {fmt(a['gold_end'])}")
    for method, label in (("ppo", "PPO"), ("bon", "best-of-n")):
        for key in ("gold_peak", "gold_end"):
            lines += ["", f"{label}, {key.replace('_', ' at the ')} minus the single RM's, per seed:", "",
                      *(f"- {line}" for line in compared(agg, method, names, key))]
    lines += ["", (f"**Stopping without gold**: tau = the {cfg['alarm_quantile']:g} quantile of the members' "
                   f"disagreement on SFT's samples; stop when more than {cfg['alarm_share']:g} of a checkpoint's "
                   "samples exceed it, keep the checkpoint before. Gold there vs the best checkpoint's:"), ""]
    lines += table(["PPO reward", "seed", "tau", *STOP_COLUMNS],
                   [[name, str(r["seed"]), f"{r['tau']:.3f}", *stop_cells(r["ppo"][name]["stop"])]
                    for name in names for r in seeds])
    member = agg["member_seconds"]
    loads = ", ".join(f"{s['load']['start']:.0f}-{s['load']['end']:.0f}" for s in seeds)
    lines += ["", "**Time** (seconds on the machine that made this run; its 1-minute load average at the start and "
              f"end of each seed {loads}):", "",
              f"- one extra member (one reward-model stage, when first trained; then cached): {fmt(member, 1)}",
              *(f"- PPO, {name}: {fmt(agg[f'ppo {name}']['seconds'], 1)} per run (checkpoint measurements excluded)"
                for name in names)]
    return "\n".join(lines)
