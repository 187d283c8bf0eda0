"""Write a pipeline run to disk: metrics.json, report.md and PNG plots."""
from __future__ import annotations

import json
import os

import matplotlib.pyplot as plt

from minirlhf import plots
from minirlhf.data import decode_responses
from minirlhf.world import Prompt

PANELS = {  # which metrics each stage's training-curve panel shows
    "pretrain": ["loss"],
    "sft": ["loss"],
    "reward model": ["loss", "accuracy"],
    "ppo": ["objective/scores", "objective/gold", "objective/kl"],
    "dpo": ["loss", "rewards/margins", "rewards/accuracies"],
}
MODELS = ["pretrained", "sft", "ppo", "dpo", "best_of_n"]
STAGES = ["pretrain", "sft", "reward_model", "ppo", "dpo", "evaluation", "best_of_n"]


def write_report(out: str, metrics: dict, histories: dict, samples: dict, prompts: list[Prompt], n_show: int,
                 config: dict) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True, default=str)
    figures = {
        "training_curves.png": plots.training_curves(histories, PANELS),
        "gold_vs_proxy.png": plots.gold_vs_proxy(metrics),
        "reward_vs_kl.png": plots.reward_vs_kl(metrics),
    }
    for name, fig in figures.items():
        fig.savefig(os.path.join(out, name), dpi=110)
        plt.close(fig)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(markdown(metrics, samples, prompts, n_show))


def results_table(metrics: dict) -> str:
    """The headline table, as markdown."""
    rows = ["| model | gold reward | answer rate | KL to SFT (nats) | proxy (RM) reward |", "|---|---|---|---|---|"]
    for m in MODELS:
        if m in metrics:
            r = metrics[m]
            name = f"best-of-{r['n']}" if m == "best_of_n" else m
            rows.append(f"| {name} | {r['gold_reward']:.3f} | {r['answer_rate']:.0%} | {r['kl_to_sft']:.2f} | "
                        f"{r['proxy_reward']:.2f} |")
    return "\n".join(rows)


def markdown(metrics: dict, samples: dict, prompts: list[Prompt], n_show: int) -> str:
    rm = metrics["reward_model"]
    lines = [
        f"# minirlhf run (seed {metrics['seed']})", "",
        f"Every model answers the same {len(prompts)} held-out prompts; gold reward is the ideal human's score "
        "in [-1, 1] (1 = ideal), KL is exact over the vocabulary, the proxy is the reward model's score "
        "(normalized so SFT's samples have mean 0, std 1).", "",
        results_table(metrics), "",
        "## Reward model", "",
        f"Held-out accuracy: {rm['accuracy_gold']:.1%} against the gold ordering (labelers themselves agree with "
        f"gold {rm['ceiling_gold']:.1%} of the time), {rm['accuracy_labels']:.1%} against the labels "
        f"(Bayes ceiling {rm['ceiling_labels']:.1%}). On math questions held out from SFT and RL it is "
        f"{rm['accuracy_gold_new_questions']:.1%} against gold (labelers {rm['ceiling_gold_new_questions']:.1%}).", "",
        "## Plots", "", "![training curves](training_curves.png)", "",
        "![gold vs proxy](gold_vs_proxy.png) ![reward vs KL](reward_vs_kl.png)", "",
        "## Samples (same prompts, every model)", "",
    ]
    decoded = {m: decode_responses(samples[m]) for m in MODELS if m in samples}
    for i in range(min(n_show, len(prompts))):
        lines.append(f"**{' '.join(prompts[i].words[2:-1])}**  ")
        for m, responses in decoded.items():
            words, ended = responses[i]
            lines.append(f"- {m}: `{' '.join(words)}`" + ("" if ended else " *(no EOS)*"))
        lines.append("")
    seconds = metrics["seconds"]
    lines.append("Seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
                 + f" (total {sum(seconds.values()):.0f})")
    return "\n".join(lines) + "\n"


def update_readme(run_dir: str, readme: str = "README.md", figures_dir: str = "docs") -> None:
    """Copy a run's table and main plots into the README between its results markers."""
    import shutil

    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    os.makedirs(figures_dir, exist_ok=True)
    for name in ("reward_vs_kl.png", "gold_vs_proxy.png", "training_curves.png"):
        shutil.copy(os.path.join(run_dir, name), os.path.join(figures_dir, name))
    rm = metrics["reward_model"]
    block = "\n".join([
        f"From `python -m minirlhf run --seed {metrics['seed']}` (held-out prompts; gold reward in [-1, 1], 1 = ideal):",
        "", results_table(metrics), "",
        f"Reward model: {rm['accuracy_gold']:.1%} held-out accuracy against the gold ordering (the labelers agree "
        f"with gold {rm['ceiling_gold']:.1%} of the time). Stage times on the machine that made this table: "
        + ", ".join(f"{k} {metrics['seconds'][k]:.0f} s" for k in STAGES if k in metrics["seconds"]) + ".", "",
        f"![reward vs KL]({figures_dir}/reward_vs_kl.png) ![gold vs proxy]({figures_dir}/gold_vs_proxy.png)", "",
        f"![training curves]({figures_dir}/training_curves.png)",
    ])
    with open(readme) as f:
        text = f.read()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start not in text or end not in text:
        raise ValueError(f"{readme} has no {start} ... {end} markers to fill")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(readme, "w") as f:
        f.write(f"{head}{start}\n{block}\n{end}{tail}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Copy a run's results into README.md")
    parser.add_argument("--readme", metavar="RUN_DIR", required=True, help="the run folder (with metrics.json)")
    update_readme(parser.parse_args().readme)
