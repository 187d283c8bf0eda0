"""How the optimum experiment's result is drawn and written up (`optimum.plot`, `optimum.summary`), and how a
curve of optima is read at a given KL (`gold_at_kl`, which the experiment's gap uses too).

Apart from the experiment (minirlhf/experiments/optimum.py), which computes the curves and trains the methods;
this reads only the result dict, so a committed result.json can be re-plotted and re-summarised without a rerun.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from minirlhf.experiments.report import at, fmt, table
from minirlhf.world import PROMPT_KINDS

REWARDS = ("rm", "gold")  # the two rewards pi* is computed for
LABEL = {"rm": "optimum of the RM", "gold": "optimum of gold", "ppo": "PPO", "dpo": "DPO", "best_of_n": "best-of-n",
         "sft": "SFT"}
COLORS = {"rm": "tab:orange", "gold": "black", "ppo": "tab:red", "dpo": "tab:green", "best_of_n": "tab:purple",
          "sft": "tab:blue"}


def gold_at_kl(curve: dict, kl: float, kl_key: str = "kl") -> float:
    """The gold of an optimum curve at this KL, read off the beta sweep by linear interpolation (KL falls as beta
    grows); beyond the sweep's ends, the end value. kl_key "kl_restricted": the curve of the policies on the support."""
    points = sorted((v[kl_key], v["gold"]) for v in curve.values())
    return float(np.interp(kl, [k for k, _ in points], [g for _, g in points]))


def plot(result: dict) -> plt.Figure:
    """Gold against KL to SFT: both optimum curves (mean over seeds per beta, a thin line per seed; dotted: the same
    weights as policies on the support, at their exact KL) and the methods' points (mean over seeds, bars: std);
    a star marks the RM's optimum at PPO's beta."""
    agg, seeds = result["aggregate"], list(result["seeds"].values())
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name in REWARDS:
        for s in seeds:
            pts = sorted((v["kl"], v["gold"]) for v in s["curves"][name].values())
            ax.plot(*zip(*pts), color=COLORS[name], lw=0.6, alpha=0.35)
        pts = sorted((v["kl"]["mean"], v["gold"]["mean"], b) for b, v in agg["curves"][name].items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=COLORS[name], lw=2, label=f"{LABEL[name]} (π*)")
        pts = sorted((v["kl_restricted"]["mean"], v["gold"]["mean"]) for v in agg["curves"][name].values())
        ax.plot(*zip(*pts), ":", color=COLORS[name], lw=1.2, label=f"{LABEL[name]}, as a policy on the support")
    for method in ("sft", "ppo", "dpo"):
        g, k = agg[method]["gold"], agg[method].get("kl", {"mean": 0.0, "std": 0.0})
        ax.errorbar([k["mean"]], [g["mean"]], xerr=[k["std"]], yerr=[g["std"]], fmt="s" if method == "sft" else "o",
                    color=COLORS[method], ms=7, capsize=2, label=LABEL[method], zorder=3)
    if agg.get("best_of_n"):
        pts = sorted((v["kl"]["mean"], v["gold"]["mean"]) for v in agg["best_of_n"].values())
        ax.plot(*zip(*pts), "^--", color=COLORS["best_of_n"], label="best-of-n (n = " + ", ".join(agg["best_of_n"]) + ")")
    star = agg["optimum_at_ppo_beta"]
    ax.plot([star["kl"]["mean"]], [star["gold"]["mean"]], "*", ms=14, color=COLORS["rm"], zorder=4,
            label=f"optimum of the RM at PPO's beta = {seeds[0]['ppo']['beta']:g}")
    ax.set_xlabel("KL(policy || SFT), nats per response (the optimum's and best-of-n's on the sampled support)")
    ax.set_ylabel("gold reward (mean over held-out prompts)")
    ax.set_title(f"The KL-regularised optimum π* ∝ π_sft·exp(r/β), mean over {len(seeds)} seed(s); "
                 f"SFT mass covered {agg['coverage']['mean']['mean']:.0%}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def summary(result: dict) -> str:
    """Markdown: both curves over beta (mean ± std over seeds), coverage, PPO against its own optimum and the split
    of its gap to the ideal (each seed and the spread), and where DPO and best-of-n sit."""
    agg, per_seed = result["aggregate"], result["seeds"]
    names = list(per_seed)
    cover, gold = agg["coverage"], agg["sft_gold"]
    lines = [f"## The exact KL-regularised optimum (seeds {', '.join(names)})", "",
             f"Support: {fmt(agg['support'], 1)} distinct responses per prompt from {result['config']['draws']} SFT "
             f"draws each. SFT mass covered: {fmt(cover['mean'])}; lowest prompt {fmt(cover['min'])}; by kind "
             + ", ".join(f"{k} {cover[k]['mean']:.3f}" for k in PROMPT_KINDS if k in cover) + ".",
             "", f"SFT's gold: {fmt(gold['drawn'], signed=True)} over the draws (best-of-1's), "
             f"{fmt(gold['on_support'], signed=True)} on the support renormalised (both curves' limit as beta grows), so the "
             f"unseen rest of SFT's mass scores {fmt(gold['unseen'], signed=True)}: the curves' left ends sit "
             f"{'above' if gold['on_support']['mean'] > gold['drawn']['mean'] else 'below'} SFT's point by what "
             "renormalising leaves out. As policies that never leave the support, the same weights are exact: their "
             "KL is log(1/c) more (kl_restricted; dotted in the plot).",
             "", "### π* over beta (mean ± std [min, max] over seeds; KL to SFT renormalised on the support)", ""]
    rows = [[b, *(fmt(agg["curves"][n][b][k], d, signed=k == "gold") for n in REWARDS for k, d in (("gold", 3), ("kl", 2)))]
            for b in agg["curves"]["rm"]]
    lines += table(["beta", "RM's π*: gold", "RM's π*: KL", "gold's π*: gold", "gold's π*: KL"], rows)
    lines += ["", "### PPO against the optimum of its own objective J = E[RM] − β KL, and its gap to the ideal", ""]
    rows = [[label, *(f"{at(per_seed[s], path):{'' if d == 2 else '+'}.{d}f}" for s in names),
             fmt(at(agg, path), d, signed=d != 2)] for label, path, d in COMPARED]
    lines += table(["", *(f"seed {s}" for s in names), "mean ± std [min, max]"], rows)
    lines += ["", "### Where each method sits beside the curves (means over seeds)", ""]
    points = {LABEL[m]: agg[m] for m in ("sft", "ppo", "dpo")} | {f"best-of-{n}": v for n, v in agg["best_of_n"].items()}
    curve = {name: {b: {k: s["mean"] for k, s in v.items()} for b, v in agg["curves"][name].items()} for name in REWARDS}
    rows = [[label, fmt(v["gold"], signed=True), fmt(v["kl"], 2),
             *(f"{gold_at_kl(curve[name], v['kl']['mean']):+.3f}" for name in REWARDS)] for label, v in points.items()]
    lines += table(["method", "gold", "KL to SFT", "RM's π* at that KL: gold", "gold's π* at that KL: gold"], rows)
    return "\n".join(lines)


COMPARED = (  # (row label, path in a seed's data, digits): PPO beside the optimum; KLs are the rows of 2 digits
    ("PPO: RM score", "ppo/proxy", 3), ("π*_RM at PPO's β: RM score", "optimum_at_ppo_beta/reward", 3),
    ("PPO: KL (exact)", "ppo/kl", 2), ("π*_RM at PPO's β: KL (support renormalised)", "optimum_at_ppo_beta/kl", 2),
    ("π*_RM at PPO's β: KL (as a policy on the support, exact)", "optimum_at_ppo_beta/kl_restricted", 2),
    ("PPO: J", "gap/objective_ppo", 3), ("π*_RM at PPO's β: J = β log Z", "gap/objective_optimum", 3),
    ("π*_RM at PPO's β on the support: J = β log(c Z), a lower bound", "gap/objective_optimum_restricted", 3),
    ("PPO: gold", "ppo/gold", 3), ("π*_RM at PPO's β: gold", "optimum_at_ppo_beta/gold", 3),
    ("π*_RM at PPO's KL: gold", "gap/gold_optimum_of_rm_at_ppo_kl", 3),
    ("π*_gold at PPO's KL: gold", "gap/gold_optimum_of_gold_at_ppo_kl", 3),
    ("lost to the reward model: π*_gold − π*_RM at PPO's KL", "gap/lost_to_rm", 3),
    ("lost to the optimizer: π*_RM − PPO at PPO's KL", "gap/lost_to_optimizer", 3),
    ("the same two, the optima as policies on the support: to the RM", "gap/lost_to_rm_restricted", 3),
    ("... to the optimizer", "gap/lost_to_optimizer_restricted", 3))
