"""Copy a pipeline run's headline table and plots into the README, between its results markers.

    python docs/tools/update_readme.py RUN_DIR [--readme README.md] [--figures docs]

This maintains the project's README; it is not part of the library a learner installs, so it lives here and
imports what it quotes (the results table) from `minirlhf.report`, which writes the run's own report.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

from minirlhf.report import STAGES, results_table

START, END = "<!-- results:start -->", "<!-- results:end -->"
FIGURES = ("reward_vs_kl.png", "gold_vs_proxy.png", "training_curves.png")


def results_block(metrics: dict, figures_dir: str) -> str:
    """The markdown between the markers: the command, the table, the RM's accuracy, stage times, the plots."""
    rm, seconds = metrics["reward_model"], metrics["seconds"]
    times = ", ".join(f"{k} {seconds[k]:.0f} s" for k in STAGES if k in seconds)
    return "\n".join([
        f"From `python -m minirlhf run --seed {metrics['seed']}` "
        "(held-out prompts; gold reward in [-1, 1], 1 = ideal):",
        "", results_table(metrics), "",
        f"Reward model: {rm['accuracy_gold']:.1%} held-out accuracy against the gold ordering (the labelers agree "
        f"with gold {rm['ceiling_gold']:.1%} of the time). Stage times on the machine that made this table: {times}.",
        "", f"![reward vs KL]({figures_dir}/reward_vs_kl.png) ![gold vs proxy]({figures_dir}/gold_vs_proxy.png)", "",
        f"![training curves]({figures_dir}/training_curves.png)",
    ])


def replace_block(text: str, block: str) -> str:
    """`text` with everything between the first START and the first END after it replaced by `block`."""
    if START not in text or END not in text.split(START, 1)[1]:
        raise ValueError(f"no {START} ... {END} markers to fill")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def update_readme(run_dir: str, readme: str = "README.md", figures_dir: str = "docs") -> None:
    """Fill `readme`'s results block from `run_dir` and copy its plots to `figures_dir`.

    The README is read and checked before anything is written, so a README without markers is left as it was.
    """
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    with open(readme) as f:
        text = replace_block(f.read(), results_block(metrics, figures_dir))
    os.makedirs(figures_dir, exist_ok=True)
    for name in FIGURES:
        shutil.copy(os.path.join(run_dir, name), os.path.join(figures_dir, name))
    with open(readme, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="the run folder (metrics.json and the plots)")
    parser.add_argument("--readme", default="README.md", help="the README to fill")
    parser.add_argument("--figures", default="docs", help="folder the plots are copied to (linked from the README)")
    args = parser.parse_args(argv)
    update_readme(args.run_dir, args.readme, args.figures)


if __name__ == "__main__":
    main()
