"""Run the library with one known mistake planted in it: how a bug looks in the training curves.

`tests/wrong_impls/` is the course's mistake catalogue: one file per common learner mistake, each defining the
wrong function, the exercise it stands for (`EXERCISE`) and the words its check's hint uses (`HINT`). The tests
feed each file to its check; `planted` feeds it to the stages instead, so that a short training run shows
what the mistake does to the metrics a practitioner watches (notebook 04, "Debugging RLHF").
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from minirlhf.grade import REPO_ROOT, load_learner_module, use_learner_code
from minirlhf.grade.checks import BY_NAME

CATALOGUE = REPO_ROOT / "tests" / "wrong_impls"  # present in a clone of the course repository


def describe(mistake: str) -> str:
    """The first line of the mistake's docstring: what is wrong, in words."""
    return (_load(mistake).__doc__ or mistake).strip().splitlines()[0]


@contextlib.contextmanager
def planted(mistake: str) -> Iterator[Callable]:
    """Inside the `with`, every stage calls the wrong function of CATALOGUE/<mistake>.py in place of the library's.

    The file is copied into a temporary folder as its exercise's stage module (e.g. ppo.py), which is the layout
    `use_learner_code` reads a learner's code from; it swaps the function in and back out. Yields the wrong
    function, to call by hand as well.
    """
    exercise = _load(mistake).EXERCISE
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(CATALOGUE / f"{mistake}.py", Path(folder) / f"{BY_NAME[exercise].stage}.py")
        with use_learner_code(exercise, impl=folder, quiet=True) as swapped:
            yield swapped[exercise]


def _load(mistake: str):
    """CATALOGUE/<mistake>.py as a module (it ships with a clone of the repository, not with `pip install`)."""
    if not (CATALOGUE / f"{mistake}.py").is_file():
        known = sorted(p.stem for p in CATALOGUE.glob("*.py")) if CATALOGUE.is_dir() else []
        raise FileNotFoundError(
            f"no mistake {mistake!r} in {CATALOGUE}: " + (f"the catalogue has {', '.join(known)}" if known else
            "the catalogue ships with a clone of the course repository (tests/wrong_impls/), not with pip install"))
    return load_learner_module(CATALOGUE, mistake)
