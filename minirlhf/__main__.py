"""Command line: `python -m minirlhf run [--seed N] [--out DIR] [--quick]`
and `python -m minirlhf experiment NAME [--seeds ...] [--out DIR] [--small]`."""
from __future__ import annotations

import argparse
import sys

CACHE_HELP = """Compiled steps are kept in jax's persistent compilation cache, so a second run skips most compiling
(the numbers are the same). MINIRLHF_COMPILE_CACHE=off turns it off, MINIRLHF_COMPILE_CACHE=PATH moves it from
$XDG_CACHE_HOME/minirlhf/xla (default ~/.cache/minirlhf/xla)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minirlhf", description=__doc__, epilog=CACHE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="pretrain -> SFT -> reward model -> PPO -> DPO -> best-of-n -> evaluation",
                         epilog=CACHE_HELP)
    run.add_argument("--seed", type=int, default=0, help="one seed for everything (same seed, same numbers)")
    run.add_argument("--out", default="runs/default", help="folder for metrics.json, report.md and plots")
    run.add_argument("--quick", action="store_true", help="a much shorter run (a smoke test, not the course's figures)")
    exp = sub.add_parser("experiment", help="one of the course's experiments (minirlhf/experiments)", epilog=CACHE_HELP)
    exp.add_argument("name", help="overoptimization, labeler_bias, frontier, cai, small_vs_big, grpo_rloo, sharding")
    exp.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run (the spread is reported)")
    exp.add_argument("--out", default="runs/experiments", help="results go to OUT/NAME/")
    exp.add_argument("--small", action="store_true", help="the notebooks' smaller budget")
    exp.add_argument("--cache", default="runs/cache", help="folder for the shared pretrained/SFT/RM models")
    args = parser.parse_args(argv)
    from minirlhf import keep_freed_memory
    from minirlhf.compile_cache import describe, enable_compile_cache

    print(describe(enable_compile_cache()))  # before the first compile
    keep_freed_memory()  # training from here on: see its docstring
    if args.command == "run":
        from minirlhf.pipeline import run_pipeline, PipelineConfig

        cfg = PipelineConfig.quick(args.seed) if args.quick else PipelineConfig(seed=args.seed)
        run_pipeline(cfg, args.out)
    elif args.command == "experiment":
        from minirlhf.experiments.cli import run_experiment

        run_experiment(args.name, args.seeds, args.out, small=args.small, cache=args.cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
