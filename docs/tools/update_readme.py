"""Fill the README's results block from pipeline runs of several seeds: the mean ± spread table, what holds on
how many seeds, each seed's gains, and one seed's own table and plots as the example.

    python docs/tools/update_readme.py RUN_DIR [RUN_DIR ...] [--readme README.md] [--figures docs]

Each RUN_DIR is the folder of one `python -m minirlhf run --seed S --out RUN_DIR`; the first is the example
(its table is shown and its plots are copied). One seed's figures move from machine to machine (float rounding,
amplified by training), so the headline is the spread over seeds, and every comparison the block states is
counted seed by seed here, never written by hand.

This maintains the project's README; it is not part of the library a learner installs, so it lives here and
imports what it quotes (the results table, the spread over seeds) from the package.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

from minirlhf.experiments import seed_spread
from minirlhf.experiments.report import fmt, table
from minirlhf.report import MODELS, STAGES, results_table

START, END = "<!-- results:start -->", "<!-- results:end -->"
FIGURES = ("reward_vs_kl.png", "gold_vs_proxy.png", "training_curves.png")
COLUMNS = {  # headline column -> (metric, digits; answer_rate is shown in percent)
    "gold reward": ("gold_reward", 3), "answer rate (%)": ("answer_rate", 0), "KL to SFT (nats)": ("kl_to_sft", 2),
    "proxy (RM) reward": ("proxy_reward", 2)}
COMPARED = [("ppo", "sft"), ("dpo", "sft"), ("best_of_n", "sft"), ("ppo", "best_of_n"), ("dpo", "ppo")]
HARD_PAIRS = "math: right/wrong"  # the pair type the RM finds hardest: is the sum right?


def label(runs: list[dict], model: str) -> str:
    return f"best-of-{runs[0]['best_of_n']['n']}" if model == "best_of_n" else model.upper()


def spread(runs: list[dict], get, scale: float = 1.0) -> dict:
    """`seed_spread` of get(run) over the runs (times `scale`)."""
    return seed_spread([scale * get(r) for r in runs])


def headline_table(runs: list[dict]) -> str:
    """Each model's figures as mean ± std [min, max] over the runs."""
    rows = []
    for m in (m for m in MODELS if all(m in r for r in runs)):
        name = label(runs, m) if m == "best_of_n" else m
        cells = [fmt(spread(runs, lambda r, k=key: r[m][k], 100 if key == "answer_rate" else 1), digits)
                 for key, digits in COLUMNS.values()]
        rows.append([name, *cells])
    return "\n".join(table(["model", *COLUMNS], rows))


def seed_table(runs: list[dict]) -> str:
    """One row per seed: SFT's gold, each method's gain over it (KL in brackets), the RM's accuracy and ceiling."""
    methods = ["ppo", "dpo", "best_of_n"]
    rows = []
    for r in runs:
        gains = [f"{r[m]['gold_reward'] - r['sft']['gold_reward']:+.3f} ({r[m]['kl_to_sft']:.2f})" for m in methods]
        rm = r["reward_model"]
        rows.append([str(r["seed"]), f"{r['sft']['gold_reward']:+.3f}", *gains,
                     f"{rm['accuracy_gold']:.1%} ({rm['ceiling_gold']:.1%})"])
    header = ["seed", "SFT gold", *(f"{label(runs, m)} gain (KL)" for m in methods), "RM vs gold (labelers)"]
    return "\n".join(table(header, rows))


def counted(runs: list[dict]) -> str:
    """The comparisons, each with the number of seeds it holds on."""
    n = len(runs)
    gold = [f"{label(runs, a)} above {label(runs, b)} on {sum(r[a]['gold_reward'] > r[b]['gold_reward'] for r in runs)}"
            for a, b in COMPARED]
    below = sum(r["reward_model"]["accuracy_gold"] < r["reward_model"]["ceiling_gold"] for r in runs)
    return (f"Gold reward, counted seed by seed (of {n}): {'; '.join(gold)}. The reward model orders held-out pairs "
            f"less often like gold than the labelers do on {below} of {n}.")


def kind_gain(run: dict, kind: str) -> float:
    """PPO's gold gain over SFT on one prompt kind, times that kind's share of the prompts: the kinds' parts add
    up to the whole gain."""
    total = sum(d["n"] for d in run["sft"]["per_kind"].values())
    ppo, sft = run["ppo"]["per_kind"][kind], run["sft"]["per_kind"][kind]
    return ppo["n"] / total * (ppo["gold"] - sft["gold"])


def where_gains_come_from(runs: list[dict]) -> list[str]:
    """PPO's gain split by prompt kind, its right answers to sums, and the RM's accuracy on the pairs it finds
    hardest beside the labelers' (no lines for runs made before metrics.json carried these)."""
    if not all("per_kind" in r["sft"] and HARD_PAIRS in r["reward_model"].get("by_pair_type", {}) for r in runs):
        return []
    kinds = list(runs[0]["sft"]["per_kind"])
    parts = ", ".join(f"{k} {fmt(spread(runs, lambda r, k=k: kind_gain(r, k)), 3, signed=True)}" for k in kinds)
    largest = [max(kinds, key=lambda k: kind_gain(r, k)) for r in runs]
    most = max(kinds, key=largest.count)
    right = {m: fmt(spread(runs, lambda r, m=m: r[m]["per_kind"]["math"]["right"], 100), 0, unit="%")
             for m in ("sft", "ppo")}
    more_right = sum(r["ppo"]["per_kind"]["math"]["right"] > r["sft"]["per_kind"]["math"]["right"] for r in runs)
    hard = {who: fmt(spread(runs, lambda r, w=who: r["reward_model"]["by_pair_type"][HARD_PAIRS][w], 100), 0,
                     unit="%") for who in ("rm", "labelers")}
    return [f"Where PPO's gain over SFT comes from, by prompt kind (the kind's share of prompts times its gold "
            f"gain; they add up to the gain): {parts}; the largest part is {most}'s on {largest.count(most)} of "
            f"{len(runs)} seeds. Right answers to sums: SFT {right['sft']}, PPO {right['ppo']} (PPO more on "
            f"{more_right} of {len(runs)}). On held-out math pairs where one answer is right and the other wrong, "
            f"the reward model orders them correctly {hard['rm']}, the labelers {hard['labelers']}.", ""]


def results_block(runs: list[dict], figures_dir: str) -> str:
    """The markdown between the markers."""
    example, seeds = runs[0], ", ".join(str(r["seed"]) for r in runs)
    rm = example["reward_model"]
    times = ", ".join(f"{k} {example['seconds'][k]:.0f} s" for k in STAGES if k in example["seconds"])
    how = "mean ± standard deviation over the seeds (ddof = 1) [lowest, highest]" if len(runs) > 1 else "one seed"
    return "\n".join([
        f"From `python -m minirlhf run --seed S` for S = {seeds} (held-out prompts; gold reward in [-1, 1], "
        f"1 = ideal), {how}:", "", headline_table(runs), "",
        *([counted(runs), "", seed_table(runs), ""] if len(runs) > 1 else []),
        *where_gains_come_from(runs),
        f"Seed {example['seed']} alone, as an example (the plots below are its own):", "", results_table(example), "",
        f"Its reward model: {rm['accuracy_gold']:.1%} held-out accuracy against the gold ordering (the labelers "
        f"agree with gold {rm['ceiling_gold']:.1%} of the time). Its stage times on the machine that made this "
        f"table: {times}.", "",
        f"![reward vs KL]({figures_dir}/reward_vs_kl.png) ![gold vs proxy]({figures_dir}/gold_vs_proxy.png)", "",
        f"![training curves]({figures_dir}/training_curves.png)",
    ])


def replace_block(text: str, block: str) -> str:
    """`text` with everything between the first START and the first END after it replaced by `block`."""
    if START not in text or END not in text.split(START, 1)[1]:
        raise ValueError(f"no {START} ... {END} markers to fill")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def read_runs(run_dirs: list[str]) -> list[dict]:
    """Each folder's metrics.json; two folders of the same seed would count one seed twice, so they are refused."""
    runs = []
    for d in run_dirs:
        with open(os.path.join(d, "metrics.json")) as f:
            runs.append(json.load(f))
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the runs' seeds {seeds} repeat: pass one run per seed")
    return runs


def update_readme(run_dirs: list[str] | str, readme: str = "README.md", figures_dir: str = "docs") -> None:
    """Fill `readme`'s results block from the runs and copy the first run's plots to `figures_dir`.

    The README is read and checked before anything is written, so a README without markers is left as it was.
    """
    run_dirs = [run_dirs] if isinstance(run_dirs, str) else list(run_dirs)
    runs = read_runs(run_dirs)
    with open(readme) as f:
        text = replace_block(f.read(), results_block(runs, figures_dir))
    os.makedirs(figures_dir, exist_ok=True)
    for name in FIGURES:
        shutil.copy(os.path.join(run_dirs[0], name), os.path.join(figures_dir, name))
    with open(readme, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run folders (metrics.json and the plots), one per seed; the first is the example")
    parser.add_argument("--readme", default="README.md", help="the README to fill")
    parser.add_argument("--figures", default="docs", help="folder the plots are copied to (linked from the README)")
    args = parser.parse_args(argv)
    update_readme(args.run_dirs, args.readme, args.figures)


if __name__ == "__main__":
    main()
