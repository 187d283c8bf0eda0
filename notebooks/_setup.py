"""First cell of every notebook: find minirlhf, check the libraries it needs, set up plotting.

`import _setup` works because Jupyter (and nbmake) start the kernel in the notebook's folder.
minirlhf is imported from the clone this file sits in (its root goes first on sys.path), so a notebook
opened from a fresh clone just works, with or without `pip install -e .`; outside a clone, as installed.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NEEDED = {"jax": "0.4.30", "optax": "0.2.2", "numpy": "1.26", "matplotlib": "3.8", "tqdm": "4.66", "ipywidgets": "8.1"}  # requirements.txt


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for p in v.split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_versions() -> dict[str, str]:
    """Import each library the course needs; a missing or too-old one stops here with what to run."""
    found, problems = {}, []
    for name, oldest in NEEDED.items():
        try:
            found[name] = importlib.import_module(name).__version__
        except ImportError:
            problems.append(f"{name} is not installed")
            continue
        if _version_tuple(found[name]) < _version_tuple(oldest):
            problems.append(f"{name} {found[name]} is older than the {oldest} the course needs")
    if problems:
        raise ImportError("; ".join(problems) + ". Install the course's requirements from the repository root:\n"
                          "    pip install -r requirements.txt -e .")
    return found


def find_minirlhf():
    """import minirlhf from the clone this notebook sits in; outside a clone, as installed.

    The clone comes first even when a package is installed, so that the notebooks always run the code beside
    them: an editable install (`pip install -e .`) of another checkout would otherwise win silently.
    """
    if (REPO / "minirlhf" / "__init__.py").is_file() and str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        import minirlhf
    except ImportError:
        raise ImportError("minirlhf is not installed and this notebook is not inside a clone of the repository. "
                          "Run `pip install -e .` at the repository root.") from None
    return minirlhf


def setup() -> None:
    versions = check_versions()  # before importing minirlhf, which needs them
    minirlhf = find_minirlhf()
    from minirlhf.compile_cache import describe, enable_compile_cache

    cache = enable_compile_cache()  # before the first compile: a notebook run again reads its steps back
    minirlhf.keep_freed_memory()  # the notebooks train: see its docstring
    import jax
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                         "axes.spines.right": False, "legend.fontsize": 8})
    where = Path(minirlhf.__file__).resolve().parent.parent
    print(f"minirlhf from {where}")
    print("  ".join(f"{k} {v}" for k, v in versions.items()), f"| python {sys.version.split()[0]}",
          f"| jax runs on: {jax.devices()[0].platform}")
    print(describe(cache))
