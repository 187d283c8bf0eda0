"""docs/tools/line_counts.py counts every .py file of the package once, in the part its audience reads; the
README's layout table names every top-level module."""
import importlib.util
import re
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "docs" / "tools" / "line_counts.py"
_spec = importlib.util.spec_from_file_location("line_counts", TOOL)
line_counts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(line_counts)


def test_each_file_is_counted_once_in_its_part(tmp_path):
    files = {"world.py": 3, "policy_gradient.py": 2, "pipeline.py": 4, "__main__.py": 1, "grade/__init__.py": 5,
             "grade/checks/ppo.py": 6, "experiments/base.py": 7, "experiments/__pycache__/base.py": 99}
    for name, n in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n" * n)
    counts = line_counts.count_lines(tmp_path)
    assert counts == {"stages": {"policy_gradient.py": 2, "world.py": 3},
                      "running": {"__main__.py": 1, "pipeline.py": 4},
                      "course machinery": {"grade/__init__.py": 5, "grade/checks/ppo.py": 6},
                      "experiments": {"experiments/base.py": 7}}, "a new top-level module is a stage; caches skipped"
    assert "| total | 28 | 100% | 7 | |" in line_counts.table(counts)


def test_the_repository_package_is_counted_whole():
    package = TOOL.parents[2] / "minirlhf"
    counts = line_counts.count_lines(package)
    every = {str(p.relative_to(package)) for p in package.rglob("*.py") if "__pycache__" not in p.parts}
    assert set().union(*counts.values()) == every, "every module of minirlhf/ should be in exactly one part"
    assert "bench.py" in counts["running"] and "ppo.py" in counts["stages"]


def test_the_readme_layout_names_every_top_level_module():
    """The README's layout rows for minirlhf/ name each module that exists, once, and none that does not."""
    readme = (TOOL.parents[2] / "README.md").read_text()
    rows = [line.split("|")[2] for line in readme.splitlines() if line.startswith("| `minirlhf/`: ")]
    named = [name for row in rows for name in re.findall(r"`(\w+)`", row)]
    modules = {p.stem for p in (TOOL.parents[2] / "minirlhf").glob("*.py")} - {"__init__"}
    assert not modules - set(named), f"README's layout table does not name {sorted(modules - set(named))}"
    assert not set(named) - modules, f"README's layout table names modules that do not exist: {set(named) - modules}"
    assert len(named) == len(set(named)), "each module should be named in one place of the layout table"
