"""Command line: `python -m minirlhf run [--seed N] [--out DIR] [--quick]`."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minirlhf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="pretrain -> SFT -> reward model -> PPO -> DPO -> best-of-n -> evaluation")
    run.add_argument("--seed", type=int, default=0, help="one seed for everything (same seed, same numbers)")
    run.add_argument("--out", default="runs/default", help="folder for metrics.json, report.md and plots")
    run.add_argument("--quick", action="store_true", help="a much shorter run (a smoke test, not the course's figures)")
    args = parser.parse_args(argv)
    if args.command == "run":
        from minirlhf.pipeline import run_pipeline, PipelineConfig

        cfg = PipelineConfig.quick(args.seed) if args.quick else PipelineConfig(seed=args.seed)
        run_pipeline(cfg, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
