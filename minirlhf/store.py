"""One cache for trained models: a folder of checkpoints, each named by and storing the configs that made it.

A model is asked for by its *record*: the stage's name and every config and seed its training read. The
file is `<stage>-<hash of the record>.npz`, so models of different configs sit side by side, and the file
holds the record itself, so the loader compares it with the one asked for instead of trusting the name.
A file that is missing, unreadable or made by other configs is trained again, with a printed line saying
why: a stale model is never used silently.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable

from minirlhf import checkpoint
from minirlhf.transformer import ModelConfig


def record(stage: str, **configs) -> dict:
    """What made a model, as JSON data: {"stage": stage, name: config (dataclasses as dicts), ...}."""
    as_data = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in configs.items()}
    return json.loads(json.dumps({"stage": stage, **as_data}))  # tuples -> lists, as they come back from a file


def path(folder: str | Path, made_by: dict) -> Path:
    digest = hashlib.sha1(json.dumps(made_by, sort_keys=True).encode()).hexdigest()[:8]
    return Path(folder) / f"{made_by['stage']}-{digest}.npz"


def load(folder: str | Path, made_by: dict, model: ModelConfig) -> tuple[dict, dict] | None:
    """(tree, extra) from the cache, or None when it has no usable file (and then a printed line says why)."""
    file = path(folder, made_by)
    if not file.is_file():
        return None
    try:
        tree, stored_model, meta = checkpoint.read(str(file))  # checks each transformer against stored_model
    except ValueError as e:
        return _ignore(file, str(e))
    stored = meta.get("made_by") or {}
    if stored != made_by:
        differ = sorted(k for k in {*stored, *made_by} if stored.get(k) != made_by.get(k))
        return _ignore(file, f"its stored {', '.join(differ)} differ from the ones asked for")
    if stored_model != model:
        return _ignore(file, f"it holds a model of config {stored_model}, not {model}")
    return tree, meta.get("extra", {})


def _ignore(file: Path, why: str) -> None:
    print(f"ignoring {file.name}, training again: {why}")


def save(folder: str | Path, made_by: dict, tree, model: ModelConfig, extra: dict | None = None) -> Path:
    """Write `tree` with the record that made it (and JSON `extra`, e.g. metrics); replaces a stale file."""
    file = path(folder, made_by)
    file.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(str(file), tree, model, meta={"made_by": made_by, "extra": extra or {}}, overwrite=True)
    return file


def cached(folder: str | Path | None, made_by: dict, model: ModelConfig, make: Callable[[], tuple]) -> tuple:
    """(tree, extra) from the cache, else `make()` -> (tree, extra), saved for next time; folder None: always make."""
    found = load(folder, made_by, model) if folder is not None else None
    if found is not None:
        return found
    tree, extra = make()
    if folder is not None:
        save(folder, made_by, tree, model, extra)
    return tree, extra
