"""Command line: `python -m minirlhf run [--seed N] [--out DIR] [--quick] [--force] [--set section.field=value]`,
`python -m minirlhf ask "what is 3 plus 4 ?" [--run DIR]` and
`python -m minirlhf experiment NAME [--seeds ...] [--out DIR] [--small] [--set field=value]`.
Also: `python -m minirlhf.grade` checks the learner's exercises, `python -m minirlhf.bench` times the steps."""
from __future__ import annotations

import argparse
import sys

from minirlhf import overrides
from minirlhf.experiments import EXPERIMENTS
from minirlhf.run_folder import check_out

CACHE_HELP = """Compiled steps are kept in jax's persistent compilation cache, so a second run skips most compiling
(the numbers are the same). MINIRLHF_COMPILE_CACHE=off turns it off, MINIRLHF_COMPILE_CACHE=PATH moves it from
$XDG_CACHE_HOME/minirlhf/xla (default ~/.cache/minirlhf/xla)."""
SAME_SEED = """Same seed, same numbers: on the same machine with the same package versions, a run repeats bit for
bit. On another CPU, float rounding differs in the last bits and training amplifies it (PPO most), so single-seed
figures move; compare machines over several seeds."""


def seed(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed is a whole number >= 0, got {value}")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


FIELDS = "{pipeline fields}"  # replaced by the config's fields when `run --help` is shown


class RunHelp(argparse.ArgumentDefaultsHelpFormatter):
    """`run --help` lists every --set field with its default; the pipeline (and jax) is imported only when the
    help is shown, so a bad --out is refused in about a second."""

    def _format_text(self, text: str) -> str:
        if FIELDS in text:
            from minirlhf.pipeline import PipelineConfig

            text = text.replace(FIELDS, "; ".join(f"{k}={v}" for k, v in overrides.fields(PipelineConfig()).items()))
        return super()._format_text(text)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Each paragraph of the epilog filled on its own, so same-seed, cache and fields stay apart."""
        return "\n\n".join(super(RunHelp, self)._fill_text(p, width, indent) for p in text.split("\n\n"))


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="python -m minirlhf", description=__doc__, epilog=CACHE_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="pretrain -> SFT -> reward model -> PPO -> DPO -> best-of-n -> evaluation",
                         epilog=f"{SAME_SEED}\n\n{CACHE_HELP}\n\nFields for --set (defaults of the full run): {FIELDS}",
                         formatter_class=RunHelp)
    run.add_argument("--seed", type=seed, default=0, help="one seed for everything (see 'same seed' below)")
    run.add_argument("--out", default="runs/default", help="folder for metrics.json, report.md, plots and models/")
    run.add_argument("--quick", action="store_true", help="a much shorter run (a smoke test, not the course's figures)")
    run.add_argument("--force", action="store_true",
                     help="replace the run already in --out (only the files a run writes; nothing else is touched)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                     help="change one config field, e.g. --set ppo.beta=0.1 (repeatable; recorded in config.json)")
    ask = sub.add_parser("ask", help="a saved run's SFT, PPO and DPO models answer your question, with gold and RM "
                                     "scores", formatter_class=fmt)
    ask.add_argument("question", help='words of the toy language separated by spaces, e.g. "what is 3 plus 4 ?"')
    ask.add_argument("--run", default="runs/default", help="the run folder whose models/ to load")
    ask.add_argument("--samples", type=positive, default=4, help="replies per model")
    ask.add_argument("--seed", type=seed, default=0, help="the sampling seed")
    exp = sub.add_parser("experiment", help="one of the course's experiments (minirlhf/experiments)",
                         epilog=CACHE_HELP, formatter_class=fmt)
    exp.add_argument("name", choices=list(EXPERIMENTS), metavar="NAME", help=f"one of: {', '.join(EXPERIMENTS)}")
    exp.add_argument("--seeds", type=seed, nargs="+", default=[0, 1, 2], help="seeds to run (the spread is reported)")
    exp.add_argument("--out", default="runs/experiments", help="results go to OUT/NAME/")
    exp.add_argument("--small", action="store_true", help="the notebooks' smaller budget")
    exp.add_argument("--cache", default="runs/cache", help="folder for the shared pretrained/SFT/RM models")
    exp.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                     help="change one field of the experiment's Config (repeatable)")
    for p in sub.choices.values():
        p.set_defaults(parser=p)  # errors show the subcommand's own usage line
    return parser


def run_config(args, parser: argparse.ArgumentParser):
    """The PipelineConfig the options ask for, checked (by the configs themselves) before anything trains."""
    try:
        check_out(args.out, args.force)  # first: it needs no jax
        from minirlhf.pipeline import PipelineConfig

        cfg = PipelineConfig.quick(args.seed) if args.quick else PipelineConfig(seed=args.seed)
        return overrides.apply(cfg, args.overrides)
    except (ValueError, OSError) as e:
        parser.error(str(e))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parser = args.parser
    cfg = run_config(args, parser) if args.command == "run" else None
    if args.command == "experiment" and args.overrides:
        from minirlhf.experiments import load

        module = load(args.name)
        try:
            overrides.apply(module.Config.small() if args.small else module.Config(), args.overrides)
        except ValueError as e:
            parser.error(str(e))
    from minirlhf import keep_freed_memory
    from minirlhf.compile_cache import describe, enable_compile_cache

    print(describe(enable_compile_cache()))  # before the first compile
    keep_freed_memory()  # training from here on: see its docstring
    if args.command == "run":
        from minirlhf.pipeline import run_pipeline

        run_pipeline(cfg, args.out, force=args.force, overrides=tuple(args.overrides))
    elif args.command == "ask":
        from minirlhf.ask import ask, format_rows

        try:
            rows = ask(args.question, args.run, samples=args.samples, seed=args.seed)
        except (ValueError, FileNotFoundError) as e:
            parser.error(str(e))
        print(format_rows(args.question, rows))
    elif args.command == "experiment":
        from minirlhf.experiments.cli import run_experiment

        run_experiment(args.name, args.seeds, args.out, small=args.small, cache=args.cache,
                       overrides=tuple(args.overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
