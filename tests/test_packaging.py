"""`pip install .` (not only `-e`) must give the whole package: every module in the wheel, every import declared."""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "minirlhf"
# Import names that differ from the distribution that provides them, and imports that are optional by design.
DISTRIBUTION = {"yaml": "pyyaml"}
OPTIONAL = {"torch"}  # only the benchmark's baseline, imported inside a try


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(REPO)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"building the wheel failed:\n{done.stderr[-2000:]}"
    (path,) = out.glob("minirlhf-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_ships_every_module(wheel):
    shipped = set(wheel.namelist())
    modules = sorted(str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
    missing = [m for m in modules if m not in shipped]
    assert not missing, (
        f"`pip install .` would install minirlhf without {missing}: list the subpackages in pyproject.toml "
        "([tool.setuptools.packages.find])"
    )


def third_party_imports() -> dict[str, str]:
    """Top-level names imported anywhere in minirlhf/ that are neither stdlib nor minirlhf -> a file using it."""
    stdlib = set(sys.stdlib_module_names)
    found = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib and top != "minirlhf":
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_every_import_is_a_declared_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in project["dependencies"]}
    for extra in project.get("optional-dependencies", {}).values():
        declared |= {d.split(">")[0].split("=")[0].strip().lower() for d in extra}
    undeclared = {name: where for name, where in third_party_imports().items()
                  if DISTRIBUTION.get(name, name).lower() not in declared and name not in OPTIONAL}
    assert not undeclared, (
        f"minirlhf imports {sorted(undeclared)} (e.g. in {list(undeclared.values())[:3]}) without declaring them "
        "in pyproject.toml's dependencies: a plain `pip install .` would fail at that import"
    )


def test_importing_minirlhf_changes_nothing_process_wide():
    """No malloc tweak, no jax config change at import: a library import must not reconfigure its host."""
    code = ("import jax; before = dict(jax.config.values); import minirlhf, minirlhf.pipeline; "
            "changed = {k for k, v in jax.config.values.items() if before.get(k) != v}; "
            "assert not changed, changed; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]
    init = ast.parse((PACKAGE / "__init__.py").read_text())
    calls = [n for n in init.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)]
    assert not calls, (
        f"minirlhf/__init__.py calls {ast.unparse(calls[0])} at import: that retunes the whole process for every "
        "program that imports the library; call it where training starts (the CLI, the notebooks' setup, bench)"
    )


def import_graph() -> dict[str, set[str]]:
    """minirlhf module -> the minirlhf modules it imports anywhere in its body (lazy imports included)."""
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                deps.add(node.module)
                deps |= {f"{node.module}.{a.name}" for a in node.names}  # `from minirlhf import gold`
        graph[name] = {d for d in deps if d in modules and d != name and not name.startswith(d + ".")}
    return graph


def test_minirlhf_has_no_import_cycle():
    graph, state, path = import_graph(), {}, []

    def visit(m):  # depth-first; a module met again while still on the path closes a cycle
        state[m] = "open"
        path.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                raise AssertionError(f"import cycle: {' -> '.join(path[path.index(d):] + [d])}; move the shared "
                                     "piece down to the lower layer instead of importing upwards")
            if d not in state:
                visit(d)
        path.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


RUNNING = {"minirlhf.evaluation", "minirlhf.pipeline", "minirlhf.report", "minirlhf.plots", "minirlhf.bench",
           "minirlhf.__main__", "minirlhf.ask", "minirlhf.run_folder", "minirlhf.overrides",
           "minirlhf.compile_cache"}  # measuring and running the stages


def test_layers_point_down():
    """Stages don't import measurement or running."""
    graph = import_graph()
    upward = [(m, d) for m, deps in graph.items() for d in deps
              if d in RUNNING | {"minirlhf.experiments", "minirlhf.grade"} and m not in RUNNING
              and not m.startswith(("minirlhf.experiments", "minirlhf.grade"))]
    assert not upward, (f"{upward[0][0]} (a stage) imports {upward[0][1]}: stages sit below measuring and running; "
                        "move what they share (e.g. sampling a batch of prompts) down into the stage layer")


def test_no_experiment_imports_another():
    """Experiments share code through experiments/toolkit.py and its siblings, never through each other."""
    from minirlhf.experiments import EXPERIMENTS

    graph = import_graph()
    experiments = {f"minirlhf.experiments.{module}" for module in EXPERIMENTS.values()}
    crossing = [(m, d) for m in sorted(experiments) for d in sorted(graph.get(m, ())) if d in experiments]
    assert not crossing, (f"experiment {crossing[0][0]} imports experiment {crossing[0][1]}: move what they share "
                          "into minirlhf/experiments/toolkit.py (or a shared module beside it)")

