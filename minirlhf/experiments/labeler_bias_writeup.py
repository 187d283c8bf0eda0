"""How the labeler-bias experiment's result is drawn and written up (`labeler_bias.plot`, `labeler_bias.summary`).

Apart from the experiment (minirlhf/experiments/labeler_bias.py), which labels, trains and measures; this reads
only the result dict, so a committed result.json can be re-plotted and re-summarised without a rerun.
"""
from __future__ import annotations

import matplotlib.pyplot as plt

from minirlhf.experiments.report import at, bars, fmt, table


def _bars(ax, groups: list[str], series: dict[str, list[str]], agg: dict, ylabel: str, title: str):
    """`toolkit.bars` of the aggregate's entries at the given paths (one list of paths per series)."""
    bars(ax, groups, {label: [at(agg, k) for k in paths] for label, paths in series.items()}, ylabel, title)


def plot(result: dict) -> plt.Figure:
    """Labels -> RM -> policy, for each labeler; bars are means over seeds, whiskers the min and max."""
    agg, names = result["aggregate"], result["config"]["labelers"]
    n_seeds = len(result["seeds"])
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    _bars(axes[0, 0], names, {"picks the 'definitely' one": [f"labelers/{n}/labels/picks_definitely" for n in names],
                              "picks the longer one": [f"labelers/{n}/labels/picks_longer" for n in names]},
          agg, "share of labelled pairs", "1. the labels (pairs where the two differ)")
    axes[0, 0].axhline(0.5, color="k", ls=":", lw=0.8)
    _bars(axes[0, 1], names, {"right answers": [f"labelers/{n}/rm_shift/definitely_right" for n in names],
                              "wrong answers": [f"labelers/{n}/rm_shift/definitely_wrong" for n in names]},
          agg, "RM score change (SFT std units)", "2. RM: insert 'definitely', answer unchanged")
    _bars(axes[0, 2], names, {"right answers": [f"labelers/{n}/rm_shift/ramble_right" for n in names],
                              "wrong answers": [f"labelers/{n}/rm_shift/ramble_wrong" for n in names]},
          agg, "RM score change (SFT std units)", "2. RM: append chatter, answer unchanged")
    models = ["SFT", *names]
    key = lambda m, stat: f"sft/{stat}" if m == "SFT" else f"labelers/{m}/policy/{stat}"
    _bars(axes[1, 0], models, {"says 'definitely'": [key(m, "says_definitely") for m in models],
                               "'definitely' on wrong answers": [key(m, "definitely_when_wrong") for m in models],
                               "math answer right": [key(m, "math_accuracy") for m in models]},
          agg, "share of held-out responses", "3. policy after PPO: wording and accuracy")
    _bars(axes[1, 1], models, {"gold reward": [key(m, "gold") for m in models]}, agg,
          "gold reward (mean, [-1, 1])", "3. policy after PPO: the ideal human's score")
    _bars(axes[1, 2], models, {"response length": [key(m, "words") for m in models]}, agg,
          "words per response", "3. policy after PPO: length")
    fig.suptitle(f"Labeler bias: {n_seeds} seed(s); confidence bias {result['config']['confidence_bias']}, "
                 f"length bias {result['config']['length_bias']} per word", fontsize=10)
    fig.tight_layout()
    return fig


LABEL_COLUMNS = ("labels/picks_definitely", "labels/picks_longer", "rm_shift/definitely_right",
                 "rm_shift/definitely_wrong", "rm_shift/ramble_right", "rm_shift/ramble_wrong", "rm/accuracy_gold")
POLICY_COLUMNS = ("says_definitely", "definitely_when_wrong", "math_accuracy", "words", "gold")


def summary(result: dict) -> str:
    """Markdown tables of the measured figures: mean ± std over seeds, and the range."""
    agg, names = result["aggregate"], result["config"]["labelers"]
    cell = lambda path: fmt(at(agg, path), signed=True)
    cfg = result["config"]
    lines = [f"## Labeler bias ({len(result['seeds'])} seeds: {', '.join(result['seeds'])}; mean ± std [min, max])", "",
             (f"Confidence bias {cfg['confidence_bias']} (added to any 'definitely' answer), length bias "
              f"{cfg['length_bias']} per word; PPO {cfg['ppo_iterations']} iterations per labeler; "
              f"{cfg['n_eval']} held-out prompts."), "",
             ("**Labels and reward model** (RM score change when the answer is edited, value unchanged; "
              "RM units: SFT samples have std 1)"), "",
             *table(["labeler", "picks 'definitely'", "picks longer", "RM +'definitely' (right)",
                     "RM +'definitely' (wrong)", "RM +chatter (right)", "RM +chatter (wrong)", "RM gold accuracy"],
                    [[n, *(cell(f"labelers/{n}/{k}") for k in LABEL_COLUMNS)] for n in names])]
    lines += ["", "Gold change for the same edits: 'definitely' " + cell("gold_shift/definitely_right") + " (right), "
              + cell("gold_shift/definitely_wrong") + " (wrong); chatter " + cell("gold_shift/ramble_right") + ".", "",
              "**Policies after PPO** (held-out prompts)", "",
              *table(["model", "says 'definitely'", "'definitely' when wrong", "math accuracy", "length (words)",
                      "gold reward", "KL to SFT"],
                     [["SFT", *(cell(f"sft/{k}") for k in POLICY_COLUMNS), "0"],
                      *([m, *(cell(f"labelers/{m}/policy/{k}") for k in (*POLICY_COLUMNS, "kl"))] for m in names)])]
    return "\n".join(lines)
