"""How the Constitutional AI experiment's result is drawn and written up (`cai.plot`, `cai.summary`).

Apart from the experiment (minirlhf/experiments/cai.py), which labels, trains and measures; this reads only the
result dict, so a committed result.json can be re-plotted and re-summarised without a rerun.
"""
from __future__ import annotations

import matplotlib.pyplot as plt

from minirlhf.experiments.report import bars, fmt, table
from minirlhf.world import PROMPT_KINDS, RULES

JUDGES = ("pretrained", "sft")  # the models that can give feedback
POLICIES = ("sft", "sl_cai", "human", "rlaif")  # SFT, SFT on revisions, PPO on the human-only RM, PPO on the RLAIF RM
LABELS = {"sft": "SFT", "sl_cai": "SL-CAI", "human": "PPO, human labels", "rlaif": "PPO, RLAIF"}
COLORS = {"sft": "tab:blue", "sl_cai": "tab:purple", "human": "tab:red", "rlaif": "tab:green"}


def plot(result: dict) -> plt.Figure:
    """AI-label agreement with gold by prompt kind and on secret pairs; the policies' harmlessness and helpfulness."""
    agg = result["aggregate"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    judges = {"human labelers": agg["agreement"]["human"],
              **{f"{j} judge": agg["agreement"][j]["ensemble"] for j in JUDGES}}
    bars(axes[0], [f"{k} pairs" for k in PROMPT_KINDS], {who: [a[k] for k in PROMPT_KINDS] for who, a in judges.items()},
         "agreement with gold ordering", "who labels pairs like the ideal human?")
    axes[0].set_ylim(0.4, 1.0)
    secret = agg["agreement_secret_pairs"]
    bars(axes[1], ["one reply leaks", "one refuses,\nneither leaks"],
         {who: [secret[t][key] for t in ("leak", "refusal")] for who, key in zip(judges, ("human", *JUDGES))},
         "agreement with gold ordering", "secret pairs, by what separates the replies")
    axes[1].set_ylim(0.0, 1.0)
    axes[1].axhline(0.5, color="k", lw=0.5, ls=":")
    for ax, metrics, ylabel, title in ((axes[2], ["leaks", "refuses_secret"], "secret prompts: share of responses",
                                        "harmlessness"),
                                       (axes[3], ["right_answerable", "gold"], "rate / mean gold reward",
                                        "helpfulness and gold reward")):
        bars(ax, [m.replace("_", " ") for m in metrics],
             {LABELS[pol]: [agg["policies"][pol][m] for m in metrics] for pol in POLICIES}, ylabel, title)
    n = len(result["seeds"])
    fig.suptitle(f"Constitutional AI: {n} seeds, bars = mean, whiskers = min to max, dots = seeds" if n > 1
                 else f"Constitutional AI: seed {next(iter(result['seeds']))}", fontsize=9)
    fig.tight_layout()
    return fig


def summary(result: dict) -> str:
    """Markdown: label agreement, the reward models' accuracy, SL-CAI's revisions and the policies (mean ± std)."""
    s, c = result["aggregate"], result["config"]
    agree, secret, r = s["agreement"], s["agreement_secret_pairs"], s["revisions"]
    judges = [("human labelers", agree["human"])] + [(f"{j} judge, {rule}", agree[j][rule])
                                                     for j in JUDGES for rule in (*RULES, "ensemble")]
    counts = {t: [x["agreement_secret_pairs"][t]["n"] for x in result["seeds"].values()] for t in ("leak", "refusal")}
    metrics = ["leaks", "refuses_secret", "right_answerable", "gold_secret", "gold_helpful", "gold", "kl"]
    return "\n".join([
        (f"Constitutional AI over seeds {', '.join(result['seeds'])} (mean ± std [min, max] over seeds; "
         f"judge: {c['judge']} model, principles {c['rules']} ensembled; "
         f"AI labels replace human ones on {c['ai_kinds']} pairs)."), "",
        "AI-label agreement with the gold ordering on the pipeline's preference pairs:", "",
        *table(["labeller", *(f"{k} pairs" for k in PROMPT_KINDS)],
               [[name, *(fmt(a[k]) for k in PROMPT_KINDS)] for name, a in judges]), "",
        (f"On secret pairs, by what separates the two replies (pairs per seed: {counts['leak']} differ by a "
         f"leak, {counts['refusal']} by a refusal, neither leaking):"), "",
        *table(["labeller", "one leaks", "one refuses, neither leaks"],
               [[label, *(fmt(secret[t][who]) for t in ("leak", "refusal"))]
                for who, label in (("human", "human labelers"), *((j, f"{j} judge, ensemble") for j in JUDGES))]), "",
        "Reward models' accuracy against gold on fresh held-out pairs:", "",
        *table(["reward model", *PROMPT_KINDS],
               [[rm, *(fmt(s["rm_accuracy_gold"][rm][k]) for k in PROMPT_KINDS)] for rm in ("human", "rlaif")]), "",
        (f"SL-CAI's fine-tuning data on secret prompts ({r['n']['mean']:.0f} per seed): the revision is the "
         f"best-critiqued of {c['sl_cai']['k']} SFT samples and differs from the first sample on {fmt(r['changed'])} "
         f"of them."), "",
        *table(["responses", "leaks", "refuses", "gold"],
               [[label, *(fmt(r[f"{which}_{m}"]) for m in ("leaks", "refuses_secret", "gold"))]
                for which, label in (("first", "first samples"), ("revised", "revisions"))]), "",
        "Policies on held-out prompts (leaks/refuses on secret prompts, right on math/color):", "",
        *table(["policy", *(m.replace("_", " ") for m in metrics)],
               [[LABELS[p], *(fmt(s["policies"][p][m]) for m in metrics)] for p in POLICIES])])
