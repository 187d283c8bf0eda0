"""How the RLVR experiment's result is drawn and written up (`rlvr.plot`, `rlvr.summary`).

Apart from the experiment (minirlhf/experiments/rlvr.py), which trains and measures; this reads only the result
dict, so a committed result.json can be re-plotted and re-summarised without a rerun.
"""
from __future__ import annotations

import matplotlib.pyplot as plt

from minirlhf.experiments.report import at, bars, fmt, table

LABELS = {"sft": "SFT", "rm_ppo": "PPO, RM", "gold_ppo": "PPO, gold", "rlvr_ppo": "RLVR, PPO",
          "rlvr_grpo": "RLVR, GRPO", "plus_ppo": "plus-only checker, PPO"}
GOAL = 0.85  # issue 14's target for RLVR's held-out math accuracy, on every seed


def plot(result: dict) -> plt.Figure:
    """Bars: math accuracy, refusals on math and gold per policy (dots: seeds); curves: pass@k on held-out sums."""
    agg, ks = result["aggregate"], result["config"]["ks"]
    names = [n for n in LABELS if n in agg]
    fig, (ax_bars, ax_pass) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1.4, 1]})
    groups = {"right on held-out sums": "per_kind/math/right", "refuses sums": "per_kind/math/refuses",
              "gold (all prompts)": "gold"}
    series = {LABELS[n]: [at(agg[n], path) for path in groups.values()] for n in names}
    bars(ax_bars, list(groups), series, "mean over seeds", f"{len(result['seeds'])} seed(s), held-out prompts")
    for n in [n for n in ("sft", "rm_ppo", "gold_ppo", "rlvr_ppo", "rlvr_grpo") if n in agg]:
        mean = [p["mean"] for p in agg[n]["pass_at_k"]]
        ax_pass.plot(ks, mean, marker="o", ms=3, label=LABELS[n])
        ax_pass.fill_between(ks, [p["min"] for p in agg[n]["pass_at_k"]], [p["max"] for p in agg[n]["pass_at_k"]],
                             alpha=0.12)
    ax_pass.set(xscale="log", xlabel="k (samples per question)", ylabel="pass@k (exact match)",
                title=f"pass@k on held-out sums (n = {ks[-1]} per question)")
    ax_pass.set_xticks(ks, [str(k) for k in ks])
    ax_pass.legend(fontsize=7)
    fig.tight_layout()
    return fig


def per_seed(seeds: dict, path: str, spec: str = "{:.2f}") -> str:
    """One figure of every seed as "a / b / c", read at `path` (e.g. "rlvr_ppo/sure_train")."""
    return " / ".join(spec.format(at(s, path)) for s in seeds.values())


def summary(result: dict) -> str:
    agg, c, seeds = result["aggregate"], result["config"], result["seeds"]
    names = [n for n in LABELS if n in agg]
    pct = lambda x: f"{100 * x:.0f}%"
    lines = [f"**RLVR and the perfect-reward control** ({c['iterations']} iterations x {c['batch_size']} replies, "
             f"beta {c['beta']}, GRPO G = {c['group_size']}; {len(seeds)} seed(s); {c['n_eval']} held-out prompts)", ""]
    rows = [[LABELS[n], per_seed(seeds, f"{n}/per_kind/math/right", "{:.0%}"),
             per_seed(seeds, f"{n}/per_kind/math/refuses", "{:.0%}"),
             " / ".join(f"{s[n]['gold']:.2f} ± {s[n]['gold_se']:.2f}" for s in seeds.values()),
             per_seed(seeds, f"{n}/kl")] for n in names]
    lines += table(["policy (per seed)", "right on held-out sums", "refuses sums", "gold ± se", "KL to SFT"], rows)
    lines += ["", *table(["policy (over seeds)", "right on held-out sums", "gold", "KL to SFT"],
                         [[LABELS[n], fmt(agg[n]["per_kind"]["math"]["right"]), fmt(agg[n]["gold"]),
                           fmt(agg[n]["kl"], 2)] for n in names])]
    if "rlvr_ppo" in agg:
        right = [s["rlvr_ppo"]["per_kind"]["math"]["right"] for s in seeds.values()]
        reached = sum(r >= GOAL for r in right)
        lines += ["", f"RLVR (PPO) is right on at least {pct(GOAL)} of held-out sums on {reached} of {len(right)} "
                      f"seed(s) (lowest {pct(min(right))}). Where it stops, per seed: its probability of "
                      f"the right digit after \"it is\" is {per_seed(seeds, 'rlvr_ppo/sure_train')} on the sums it "
                      f"trained on and {per_seed(seeds, 'rlvr_ppo/sure_heldout')} on the held-out ones (SFT: "
                      f"{per_seed(seeds, 'sft/sure_train')} and {per_seed(seeds, 'sft/sure_heldout')}); asked in "
                      "pretraining's Q&A format, the pretrained model's favourite next word is the right digit on "
                      f"{per_seed(seeds, 'pretrained/knows', '{:.0%}')} of the held-out sums."]
    lines += ["", f"pass@k on the held-out sums (n = {c['ks'][-1]} samples per question; mean over seeds):", "",
              *table(["policy", *[f"k={k}" for k in c["ks"]]],
                     [[LABELS[n], *[f"{p['mean']:.2f}" for p in agg[n]["pass_at_k"]]] for n in names])]
    lines += ["", "Sharpen or teach: pass@1 / pass@" + str(c["ks"][-1]) + " = " + ", ".join(
        f"{LABELS[n]} {agg[n]['pass_at_k'][0]['mean']:.2f} / {agg[n]['pass_at_k'][-1]['mean']:.2f}" for n in names) + "."]
    if "plus_ppo" in agg:
        lines += ["", "The plus-only checker (every sum read as a plus) on the held-out \"a minus b\" questions where "
                      "a + b is another digit: the share answered a + b (paid by it, wrong), answered right, and their "
                      "gold, per seed:",
                  "", *table(["policy (per seed)", "answers a + b", "answers right", "gold there"],
                             [[LABELS[n], per_seed(seeds, f"{n}/games_minus", "{:.0%}"),
                               per_seed(seeds, f"{n}/right_on_gameable", "{:.0%}"),
                               per_seed(seeds, f"{n}/gold_on_gameable", "{:+.2f}")] for n in names])]
        for seed, s in seeds.items():
            hack = s["plus_ppo"]["hack"]
            lines += ["", f"Seed {seed}: the plus-only policy's commonest replies to the {hack['gameable']} gameable "
                          "held-out prompts (count, gold, strict verdict):", ""]
            lines += [f"- `{d['reply']}` ({d['count']}x, gold {d['gold']:+.1f}, strict {d['strict']:.0f})"
                      for d in hack["common"]]
    return "\n".join(lines)
