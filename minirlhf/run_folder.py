"""The run's output folder: checked before anything trains, so no result is lost and no one's file is overwritten.

Why refuse rather than pick a fresh folder by default: the README, the notebooks and `ask` all read
`runs/default`, so runs keep landing where a learner looks; a second run there stops at once (seconds, not after
the training) and says how to go on: `--force` to replace that run, or `--out` a new folder. `--force` replaces
only the files listed in RUN_FILES; anything else in the folder (the learner's own notes) is never touched.
No jax here: the check must answer before the seconds jax takes to import.
"""
from __future__ import annotations

import os

REPORT = ["metrics.json", "config.json", "report.md"]
PLOTS = ["training_curves.png", "gold_vs_proxy.png", "reward_vs_kl.png"]
MODELS = {"sft": "sft.npz", "ppo": "ppo.npz", "dpo": "dpo.npz", "reward_model": "reward_model.npz"}
MODEL_DIR = "models"
RUN_FILES = REPORT + PLOTS + [os.path.join(MODEL_DIR, f) for f in MODELS.values()]  # what a run writes


def model_path(out: str, name: str) -> str:
    return os.path.join(out, MODEL_DIR, MODELS[name])


def check_out(out: str, force: bool = False) -> None:
    """Raise (in words) if writing a run to `out` would fail or replace a run without --force."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"--out {out} is a file, not a folder; name a folder (it is created if missing)")
    for sub in [out, os.path.join(out, MODEL_DIR)]:
        if os.path.exists(sub) and not os.path.isdir(sub):
            raise FileExistsError(f"{sub} is a file, but the run writes a folder there; choose another --out")
    taken = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if taken and not force:
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(taken[:3])}{', ...' if len(taken) > 3 else ''}); "
            f"pass --force to replace that run's files (nothing else in the folder is touched), "
            f"or --out a fresh folder")
    blocked = [f for f in RUN_FILES if os.path.isdir(os.path.join(out, f))]
    if blocked:
        raise FileExistsError(f"{os.path.join(out, blocked[0])} is a folder, where the run writes a file")
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.access(parent if not os.path.exists(out) else out, os.W_OK):
        raise PermissionError(f"cannot write to {out}: no permission")
