"""First cell of every notebook: find minirlhf, check the libraries it needs, set up plotting; and `claim`.

`import _setup` works because Jupyter (and nbmake) start the kernel in the notebook's folder.
minirlhf is imported from the clone this file sits in (its root goes first on sys.path), so a notebook
opened from a fresh clone just works, with or without `pip install -e .`; outside a clone, as installed.

The seed. Every notebook runs on seed 0 unless the environment says otherwise: `MINIRLHF_SEED=1 jupyter lab`
(or `MINIRLHF_SEED=1 jupyter nbconvert --execute ...`) runs the whole course on seed 1: another world (secret,
held-out questions), other prompts, other keys for every stage. The models the notebooks pass on are kept in
notebooks/artifacts/ under a name that records their seed (notebooks/_models.py), so seed 1 trains its own and
never reads seed 0's. A finding the prose states should hold on any seed; `claim` checks it on this one.

`claim` is how a notebook states a finding: in words, checked on the numbers the notebook just measured. It prints
a check mark with the numbers when the finding holds and raises when it does not, so the prose cannot drift away
from the outputs unnoticed: executing the notebook (as CI does) fails instead.
"""
from __future__ import annotations

import importlib
import math
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("MINIRLHF_SEED", "0"))  # see the module docstring
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
    print(f"seed {SEED} (MINIRLHF_SEED=N runs the notebooks on seed N)")


# ---------------------------------------------------------------- checked findings

SIGMAS = 2  # a difference is a difference when it exceeds 2 standard errors (about 95% confidence, one test)


def mean_se(x) -> tuple[float, float]:
    """(mean, standard error) of a sample, std / sqrt(n): as `evaluation.per_kind` computes gold_se."""
    import numpy as np  # here, not at the top: check_versions reports a missing numpy before anything needs it

    x = np.asarray(x, dtype=float)
    return float(x.mean()), float(x.std() / math.sqrt(len(x)))


def share_se(share: float, n: int) -> float:
    """Standard error of a share of n yes/no outcomes, sqrt(p (1 - p) / n): `mean_se` of the 0/1 sample."""
    return math.sqrt(share * (1 - share) / n)


def claim(statement: str, a: float, relation: str, b: float, se=None) -> None:
    """Check a finding on the notebook's own numbers: print it with a check mark, or raise AssertionError.

    relation, with m = SIGMAS standard errors of a - b (m = 0 when se is None):
        ">"   a is above b by more than m          "<"   a is below b by more than m
        ">="  a is not measurably below b (a >= b - m)   "<="  a is not measurably above b (a <= b + m)
        "~"   no measurable difference, |a - b| < m (needs se)    "=="  a equals b exactly
    se: None when a and b are exact (counts, a threshold against an exact rate); the standard error of a - b (for
        paired samples, the SE of the per-item differences); or (se_a, se_b), the standard errors of two
        independent means, combined as sqrt(se_a^2 + se_b^2).

    >>> claim("SFT answers more often than the pretrained model", 0.971, ">", 0.002)
    ✓ SFT answers more often than the pretrained model: 0.971 > 0.002
    >>> claim("SFT's gold is above the demonstrators'", -0.017, ">", 0.237, se=(0.025, 0.027))
    Traceback (most recent call last):
    AssertionError: claim failed: SFT's gold is above the demonstrators': -0.017 ± 0.025 > 0.237 ± 0.027 (difference -0.254, 2 SE = 0.074) does not hold
    """
    se_a, se_b, se_diff = _standard_errors(se)
    if relation == "~" and se_diff is None:
        raise ValueError("'~' (no measurable difference) needs the standard errors: pass se=")
    gap, margin = a - b, SIGMAS * (se_diff or 0.0)
    tests = {">": gap > margin, "<": gap < -margin, ">=": gap >= -margin, "<=": gap <= margin,
             "~": abs(gap) < margin or gap == 0, "==": a == b}  # equal values never differ measurably
    if relation not in tests:
        raise ValueError(f"claim's relation is one of {', '.join(map(repr, tests))}; got {relation!r}")
    numbers = f"{_num(a, se_a)} {relation} {_num(b, se_b)}"
    if se_diff is not None:
        numbers += f" (difference {gap:+.3g}, {SIGMAS} SE = {margin:.2g})"
    if not tests[relation]:
        raise AssertionError(f"claim failed: {statement}: {numbers} does not hold")
    print(f"✓ {statement}: {numbers}")


def _standard_errors(se) -> tuple[float | None, float | None, float | None]:
    """(se of a, se of b, se of a - b) from claim's `se` argument."""
    if se is None:
        return None, None, None
    if isinstance(se, (tuple, list)):
        se_a, se_b = se
        return se_a, se_b, math.hypot(se_a, se_b)
    return None, None, float(se)


def _num(x: float, se: float | None = None) -> str:
    """A measured number with 3 significant digits, and its standard error when it has one (never "± 0"; a tiny
    one in powers of ten, 2.3e-04, so it cannot read as "± 0.000")."""
    return f"{x:.3g}" + (f" ± {se:.2g}" if se and se >= 1e-3 else f" ± {se:.1e}" if se else "")
