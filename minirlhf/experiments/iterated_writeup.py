"""How the iterated experiment's result is drawn and written up (`iterated.plot`, `iterated.summary`).

Apart from the experiment (minirlhf/experiments/iterated.py), which asks the question and runs it; this reads
only the result dict, so a committed result.json can be re-plotted and re-summarised without a rerun.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from minirlhf.experiments import seed_spread
from minirlhf.experiments.monitoring import STOP_COLUMNS, hack_text, stop_cells, stop_report
from minirlhf.experiments.report import at, fmt, spread_line, table

COLORS = {"single": "tab:red", "iterated": "tab:blue"}
LABELS = {"single": "single pass", "iterated": "iterated"}
METHODS = tuple(LABELS)  # the two runs, in the order of every table


def label_stop(sft: dict, rounds: list[dict], cfg: dict) -> dict:
    """The gold-free stop along one run (`monitoring.stop_report`), its checkpoints SFT and each round's end.

    Signal: how much less often the RM in use agrees with the labelers on the policy's fresh pairs than on SFT's
    (0 at SFT). Alarm: twice that difference's standard error at its largest (both accuracies 1/2, n_heldout pairs
    each), so a drop the pairs' noise would not make. A practitioner can compute it: it needs labels, not gold.
    """
    curve = {"iteration": [0, *(r["round"] * cfg["iterations_per_round"] for r in rounds)],
             "gold": [sft["gold"], *(r["gold"] for r in rounds)], "kl": [sft["kl"], *(r["kl"] for r in rounds)]}
    signal = [0.0, *(r["rm"]["on_sft"]["labels"] - r["rm"]["on_end"]["labels"] for r in rounds)]
    return stop_report(curve, signal, 2 * np.sqrt(2 * 0.25 / cfg["n_heldout"]))


def plot(result: dict) -> plt.Figure:
    """Per beta (rows): gold, KL and the RM's on-policy accuracy per round; the rollouts' gold and proxy per iteration."""
    agg, seeds = result["aggregate"], list(result["seeds"].values())
    sft_gold = np.mean([s["sft"]["gold"] for s in seeds])
    fig, axes = plt.subplots(len(agg), 4, figsize=(18, 4 * len(agg)), squeeze=False)
    panels = (("gold", "gold reward (held-out prompts)"), ("kl", "exact KL to SFT (nats)"),
              ("rm/on_end/gold", "RM accuracy vs gold, fresh pairs of the policy"))
    for row, (name, runs) in zip(axes, agg.items()):
        for ax, (path, ylabel) in zip(row, panels):
            for m in METHODS:
                spreads = [at(rec, path) for rec in runs[m].values()]  # one per round
                spread_line(ax, np.arange(1, len(spreads) + 1), spreads, color=COLORS[m], label=LABELS[m])
            ax.set_xlabel("round (end)")
            ax.set_xticks(np.arange(1, len(runs["iterated"]) + 1))  # whole rounds only
            ax.set_ylabel(ylabel)
            ax.set_title(f"{name}: {ylabel}", fontsize=9)
        row[0].axhline(sft_gold, color="k", ls=":", label="SFT")
        mean = [rec["rm"]["on_sft"]["gold"]["mean"] for rec in runs["iterated"].values()]
        row[2].plot(np.arange(1, len(mean) + 1), mean, "--", color=COLORS["iterated"], label="iterated, on SFT's pairs")
        for m in METHODS:
            curves = [s["runs"][name][m]["curves"] for s in seeds]
            row[3].plot(np.mean([c["gold"] for c in curves], axis=0), color=COLORS[m], label=f"{LABELS[m]}: gold")
            row[3].plot(np.mean([c["scores"] for c in curves], axis=0), ":", color=COLORS[m],
                        label=f"{LABELS[m]}: proxy (RM in use)")
        row[3].set_xlabel("PPO iteration")
        row[3].set_ylabel("rollouts, mean over seeds")
        row[3].set_title(f"{name}: gold beside the proxy the policy climbs", fontsize=9)
        for ax in row:
            ax.legend(fontsize=7)
    cfg = result["config"]
    spread = "mean over seeds, whiskers min to max" if len(seeds) > 1 else f"seed {seeds[0]['seed']}"
    fig.suptitle(f"Iterated online RLHF ({cfg['rounds']} rounds x {cfg['pairs_per_round']} pairs) vs a single pass "
                 f"({cfg['label_budget']} pairs): {spread}", fontsize=11)
    fig.tight_layout()
    return fig


def round_cells(rec: dict) -> list[str]:
    """One round of one seed: gold ± se, proxy start -> end, KL, the RM's accuracy on the policy's fresh pairs."""
    return [f"{rec['gold']:+.3f} ± {rec['gold_se']:.3f}", f"{rec['proxy_start']:+.2f} -> {rec['proxy']:+.2f}",
            f"{rec['kl']:.2f}", f"{rec['rm']['on_end']['gold']:.3f}",
            f"{rec['right_answerable']:.2f} / {rec['refuses_answerable']:.2f} / {rec['leaks']:.2f}"]


def hack_line(seed: int, method: str, rec: dict) -> str:
    """The decoded hack of a round and what the next round did to it, in one line."""
    h = rec["hack"]
    if h is None:
        return f"- seed {seed}, {LABELS[method]}, round {rec['round']}: none (no response scored > 0 with gold < 0)"
    return f"- seed {seed}, {LABELS[method]}, round {rec['round']}: {hack_text(h)}"


def summary(result: dict) -> str:
    """Markdown: the setup, per-round figures over seeds, the final gap, per-seed rounds, the hacks, the monitors."""
    cfg, agg, seeds = result["config"], result["aggregate"], list(result["seeds"].values())
    lines = [f"## Iterated online RLHF ({len(seeds)} seeds: {', '.join(str(s['seed']) for s in seeds)})", "",
             (f"Equal label budget: {cfg['rounds']} rounds x {cfg['pairs_per_round']} pairs against "
              f"{cfg['label_budget']} pairs at once; {cfg['iterations']} PPO iterations in all "
              f"({cfg['iterations_per_round']} per round). Figures are at each round's end on {cfg['n_eval']} held-out "
              f"prompts; RM accuracy is against gold on {cfg['n_heldout']} fresh labelled pairs of the policy. "
              f"SFT's gold: {fmt(seed_spread([s['sft']['gold'] for s in seeds]))}."), ""]
    for name, runs in agg.items():
        gap = runs["final_gold_gap"]
        lines += [f"### {name}", "", (f"Final gold, iterated minus single: {fmt(gap, signed=True)}; iterated higher in "
                                      f"{gap['wins']}/{gap['seeds']} seeds."), "",
                  *table(["round", "gold: single", "gold: iterated", "KL: single", "KL: iterated",
                          "RM on policy: single", "RM on policy: iterated", "iterated RM on SFT pairs"],
                         [[r, fmt(runs["single"][r]["gold"]), fmt(runs["iterated"][r]["gold"]),
                           fmt(runs["single"][r]["kl"], 2), fmt(runs["iterated"][r]["kl"], 2),
                           fmt(runs["single"][r]["rm"]["on_end"]["gold"]), fmt(runs["iterated"][r]["rm"]["on_end"]["gold"]),
                           fmt(runs["iterated"][r]["rm"]["on_sft"]["gold"])] for r in runs["iterated"]]), "",
                  ("Per seed (gold ± se; proxy: the RM in use, on the policy the round started from -> ended with; "
                   "RM acc.: vs gold on the ended policy's fresh pairs; right / refused on answerable prompts, "
                   "leaks on secret ones):"), "",
                  *table(["seed", "round", "labels", *(f"{LABELS[m]}: {c}" for m in METHODS
                                                       for c in ("gold", "proxy", "KL", "RM acc.", "right/ref./leak"))],
                         [[str(s["seed"]), str(i + 1), str(rec["pairs"]), *round_cells(s["runs"][name]["single"]["rounds"][i]),
                           *round_cells(rec)] for s in seeds for i, rec in enumerate(s["runs"][name]["iterated"]["rounds"])]),
                  "", ("**Hacks** (the most common response the RM scores above its mean while gold is < 0), the RM's "
                       "margin for it over the responses gold likes, and what the next round did:"), ""]
        lines += [hack_line(s["seed"], m, rec) for s in seeds for m in METHODS for rec in s["runs"][name][m]["rounds"]]
        lines += ["", "**Gold-free signals** per round (mean over seeds) beside gold:", "",
                  *table(["run", "round", "gold", "KL", "proxy slope / iter.", "RM acc. vs labels, policy's pairs",
                          "entropy / token"],
                         [[LABELS[m], r, *(f"{runs[m][r][k]['mean']:+.3f}" for k in ("gold", "kl", "proxy_slope")),
                           f"{runs[m][r]['rm']['on_end']['labels']['mean']:.3f}", f"{runs[m][r]['entropy']['mean']:.3f}"]
                          for m in METHODS for r in runs[m]]), "",
                  ("**Stopping without gold**: stop at the first round whose RM agrees with the labelers on the "
                   "policy's fresh pairs less often than on SFT's, by more than twice the noise of that difference; "
                   "keep the checkpoint before (iteration 0: SFT). Gold there vs the best checkpoint's:"), "",
                  *table(["run", "seed", *STOP_COLUMNS],
                         [[LABELS[m], str(s["seed"]), *stop_cells(label_stop(s["sft"], s["runs"][name][m]["rounds"], cfg))]
                          for m in METHODS for s in seeds]), ""]
    return "\n".join(lines).rstrip()
