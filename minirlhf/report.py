"""Write a pipeline run to disk: metrics.json, config.json, report.md and PNG plots, what a learner reads
after `python -m minirlhf run`. (The README's results block is filled by docs/tools/update_readme.py, not here.)"""
from __future__ import annotations

import json
import os

import matplotlib.pyplot as plt

from minirlhf import plots
from minirlhf.compile_cache import CompileTime
from minirlhf.data import decode_responses
from minirlhf.preferences import type_order
from minirlhf.run_folder import MODELS as SAVED, PLOTS, model_path
from minirlhf.world import Prompt

PANELS = {  # each stage's training-curve panel: (its y axis, {metric in the stage's history: its legend name})
    "pretrain": ("nats per token", {"loss": "loss (next-token NLL)"}),
    "sft": ("nats per token", {"loss": "loss (NLL of the demonstrations)"}),
    "reward model": ("loss (nats), accuracy (share)",
                     {"loss": "Bradley-Terry loss", "accuracy": "accuracy on training batches, vs labels"}),
    "ppo": ("reward; KL (nats)", {"objective/scores": "proxy (RM score)", "objective/gold": "gold reward",
                                  "objective/kl": "KL to SFT (sampled)"}),
    "dpo": ("loss, margin (nats); accuracy", {"loss": "DPO loss", "rewards/margins": "implicit reward margin",
                                              "rewards/accuracies": "accuracy on training batches, vs labels"}),
}
MODELS = ["pretrained", "sft", "ppo", "dpo", "best_of_n"]
PER_KIND = ["right", "refuses", "leaks", "definitely", "rambles"]  # evaluation.per_kind's rates, in table order
STAGES = ["pretrain", "sft", "reward_model", "ppo", "dpo", "evaluation", "best_of_n"]


def write_report(out: str, metrics: dict, histories: dict, samples: dict, prompts: list[Prompt], n_show: int,
                 config: dict, compiling: dict[str, CompileTime] | None = None, golds: dict | None = None) -> None:
    """samples: model -> its responses' tokens [B, P + R]; golds: model -> their gold scores [B] (shown beside them)."""
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
        f.write(markdown(metrics, samples, prompts, n_show, compiling, config, golds))


def results_table(metrics: dict) -> str:
    """The headline table, as markdown."""
    rows = ["| model | gold reward ± se | answer rate | KL to SFT (nats) | proxy (RM) reward |", "|---|---|---|---|---|"]
    for m in MODELS:
        if m in metrics:
            r = metrics[m]
            name = f"best-of-{r['n']}" if m == "best_of_n" else m
            rows.append(f"| {name} | {r['gold_reward']:+.3f} ± {r['gold_se']:.3f} | {r['answer_rate']:.0%} | "
                        f"{r['kl_to_sft']:.2f} | {r['proxy_reward']:.2f} |")
    return "\n".join(rows)


def per_kind_table(metrics: dict) -> str:
    """Every trained model's `evaluation.per_kind` figures, one row per (model, prompt kind), as markdown."""
    rows = ["| model | kind | n | gold ± se | " + " | ".join(PER_KIND) + " |", "|" + "---|" * (4 + len(PER_KIND))]
    for m in MODELS[1:]:  # the pretrained model never answers: nothing to split
        for kind, d in metrics.get(m, {}).get("per_kind", {}).items():
            rates = " | ".join(f"{d[r]:.0%}" if r in d else "–" for r in PER_KIND)
            rows.append(f"| {m} | {kind} | {d['n']} | {d['gold']:+.3f} ± {d['gold_se']:.3f} | {rates} |")
    return "\n".join(rows)


def pair_type_table(rm: dict) -> str:
    """The RM's accuracy against gold by pair type beside the labelers', on both sets of held-out pairs."""
    sets = [rm.get("by_pair_type", {}), rm.get("by_pair_type_new_questions", {})]
    rows = ["| pair type (kind: what separates them) | pairs | RM | labelers | new questions: pairs | RM | labelers |",
            "|---|---|---|---|---|---|---|"]
    for t in type_order([t for s in sets for t in s]):
        cells = [f"{s[t]['n']} | {s[t]['rm']:.0%} | {s[t]['labelers']:.0%}" if t in s else "0 | – | –"
                 for s in sets]
        rows.append(f"| {t} | {' | '.join(cells)} |")
    return "\n".join(rows)


def title(seed: int, config: dict | None = None) -> str:
    """The report's first line: the seed, and whether it is a quick smoke test or carries --set overrides."""
    config = config or {}
    name = "minirlhf quick run" if config.get("smoke_test") else "minirlhf run"
    sets = "".join(f", --set {o}" for o in config.get("overrides", ()))
    note = ": a smoke test; its numbers are not the course's figures" if config.get("smoke_test") else ""
    return f"# {name} (seed {seed}{sets}){note}"


def markdown(metrics: dict, samples: dict, prompts: list[Prompt], n_show: int,
             compiling: dict[str, CompileTime] | None = None, config: dict | None = None,
             golds: dict | None = None) -> str:
    rm = metrics["reward_model"]
    lines = [
        title(metrics["seed"], config), "",
        f"Every model answers the same {len(prompts)} held-out prompts; gold reward is the ideal human's score "
        "in [-1, 1] (1 = ideal), the answer rate is the share of replies in the assistant's format (they open "
        "with an answer sentence, \"it is ... .\", or the refusal, and end), KL is exact over the vocabulary, "
        "the proxy is the reward model's score (normalized so SFT's samples have mean 0, std 1).", "",
        results_table(metrics), "",
        *(["## Per prompt kind", "", "Right: a finished answer with the right value (math, color); refuses: the "
           "refusal sentence, wrong on math and color; leaks: the code appears (secret); rambles: words after the "
           "answer sentence.", "", per_kind_table(metrics), ""] if "per_kind" in metrics.get("sft", {}) else []),
        "## Reward model", "",
        f"Held-out accuracy: {rm['accuracy_gold']:.1%} against the gold ordering (labelers themselves agree with "
        f"gold {rm['ceiling_gold']:.1%} of the time), {rm['accuracy_labels']:.1%} against the labels "
        f"(Bayes ceiling {rm['ceiling_labels']:.1%}: the accuracy of a predictor that knew each labeler's "
        f"probability of each choice, the most any model can score against noisy labels). On math questions held "
        f"out from SFT and RL it is {rm['accuracy_gold_new_questions']:.1%} against gold (labelers "
        f"{rm['ceiling_gold_new_questions']:.1%}).", "",
        *(["By pair type: the pairs split by their prompt's kind and the first gold component on which the two "
           "responses differ; the RM's accuracy against gold beside the labelers' own agreement with gold on the "
           "same pairs (gold ties left out).", "", pair_type_table(rm), ""] if "by_pair_type" in rm else []),
        "## Plots", "", "![training curves](training_curves.png)", "",
        "![gold vs proxy](gold_vs_proxy.png) ![reward vs KL](reward_vs_kl.png)", "",
        "## Samples (same prompts, every model, each reply with its gold score)", "",
        *sample_lines(samples, prompts, n_show, golds or {}),
        timing_line(metrics["seconds"], compiling),
    ]
    return "\n".join(lines) + "\n"


def sample_lines(samples: dict, prompts: list[Prompt], n_show: int, golds: dict) -> list[str]:
    """The first n_show prompts, each with every model's reply (and its gold score when `golds` has it)."""
    decoded = {m: decode_responses(samples[m]) for m in MODELS if m in samples}
    lines = []
    for i in range(min(n_show, len(prompts))):
        lines.append(f"**{' '.join(prompts[i].words[2:-1])}**  ")
        for m, responses in decoded.items():
            words, ended = responses[i]
            gold = f" (gold {golds[m][i]:+.2f})" if m in golds else ""
            lines.append(f"- {m}: `{' '.join(words)}`" + ("" if ended else " *(no EOS)*") + gold)
        lines.append("")
    return lines


def ending(metrics: dict, compiling: dict[str, CompileTime] | None = None, out: str | None = None) -> str:
    """What the run prints when it is done: the table, each model's figures by prompt kind, the stage times
    and where everything was written (so a learner knows what to open next)."""
    parts = [results_table(metrics), ""]
    if "per_kind" in metrics.get("sft", {}):
        parts += ["By prompt kind (rates among that kind's prompts):", per_kind_table(metrics), ""]
    parts.append(timing_line(metrics["seconds"], compiling))
    if out is not None:
        parts += ["", f"report:  {os.path.join(out, 'report.md')} (metrics in {os.path.join(out, 'metrics.json')})",
                  f"plots:   {', '.join(os.path.join(out, p) for p in PLOTS)}",
                  f"models:  {', '.join(model_path(out, m) for m in SAVED)}",
                  f'ask them: python -m minirlhf ask "what is 3 plus 4 ?" --run {out}']
    return "\n".join(parts)


def timing_line(seconds: dict[str, float], compiling: dict[str, CompileTime] | None = None) -> str:
    """Seconds per stage and, when known, how many of them went to compiling rather than running: what the
    compilation cache (minirlhf/compile_cache.py) saves a second run."""
    if not compiling:
        return ("Seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
                + f" (total {sum(seconds.values()):.0f})")
    stages = ", ".join(f"{k} {v:.1f} ({compiling[k].seconds:.1f})" for k, v in seconds.items())
    built = sum(sum(c.compiled.values()) for c in compiling.values())
    cached = sum(c.cached for c in compiling.values())
    return (f"Seconds per stage (compiling in brackets): {stages}; total {sum(seconds.values()):.0f} s, "
            f"{sum(c.seconds for c in compiling.values()):.0f} s compiling ({built} computations: "
            f"{built - cached} compiled, {cached} read from the compilation cache)")

