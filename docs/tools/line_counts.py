"""Lines of `minirlhf/` by audience: the RLHF story, running it, the course machinery, the experiments.

    python docs/tools/line_counts.py [PACKAGE_DIR] [--files]

A top-level module is part of the story (world, model, stages) unless it is one of RUNNING; the two
subpackages are their own parts. Lines are physical lines of .py files, blank and comment lines included.
"""
from __future__ import annotations

import argparse
from pathlib import Path

RUNNING = {"pipeline", "evaluation", "report", "plots", "bench", "__main__", "ask", "run_folder", "overrides", "compile_cache"}
PARTS = {  # part -> what it holds
    "stages": "the story: world, model, stages (top-level modules)",
    "running": "measuring and running: " + ", ".join(sorted(RUNNING)),
    "course machinery": "grade/",
    "experiments": "experiments/",
}


def part_of(path: Path, package: Path) -> str:
    """Which part of the package a .py file under `package` belongs to."""
    top = path.relative_to(package).parts[0]
    if top == "grade":
        return "course machinery"
    if top == "experiments":
        return "experiments"
    return "running" if path.stem in RUNNING else "stages"


def count_lines(package: Path) -> dict[str, dict[str, int]]:
    """part -> {file relative to the package: its number of lines}, for every .py file under `package`."""
    counts: dict[str, dict[str, int]] = {part: {} for part in PARTS}
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" not in path.parts:
            counts[part_of(path, package)][str(path.relative_to(package))] = len(path.read_text().splitlines())
    return counts


def table(counts: dict[str, dict[str, int]], files: bool = False) -> str:
    """A markdown table of lines and files per part (and, with `files`, each file's lines)."""
    total = sum(sum(c.values()) for c in counts.values())
    rows = ["| part | lines | share | files | what |", "|---|---|---|---|---|"]
    for part, by_file in counts.items():
        lines = sum(by_file.values())
        rows.append(f"| {part} | {lines} | {lines / max(total, 1):.0%} | {len(by_file)} | {PARTS[part]} |")
        if files:
            rows += [f"| &nbsp; `{name}` | {n} | | | |" for name, n in by_file.items()]
    rows.append(f"| total | {total} | 100% | {sum(len(c) for c in counts.values())} | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", nargs="?", default=str(Path(__file__).resolve().parents[2] / "minirlhf"),
                        help="the package folder to count (default: this checkout's minirlhf/)")
    parser.add_argument("--files", action="store_true", help="also list every file's lines")
    args = parser.parse_args(argv)
    print(table(count_lines(Path(args.package)), args.files))


if __name__ == "__main__":
    main()
