"""Checkpoints as plain .npz files: one array per leaf of a nested dict/list, plus one JSON record.

What a file can hold: any tree of arrays -- a transformer, a reward model {"lm", "head"}, a dict of labelled
pairs (int and bool arrays keep their dtype) -- and beside it the ModelConfig of the transformers inside and a
free JSON `meta` record (the caches store the configs that made the model there).

No pickle: `np.load(..., allow_pickle=False)` reads only arrays, so loading a checkpoint cannot run code.
A leaf's key is its path in the tree ("lm/blocks/0/attn/c_attn/w"): the loader rebuilds the tree from the
keys alone, and can say exactly which parameter is missing or has the wrong shape.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import zipfile
from typing import NamedTuple

import jax
import numpy as np

from minirlhf.transformer import ModelConfig, init_params

CONFIG_KEY = "__config__"  # the entry that holds the JSON record
FORMAT = "minirlhf-checkpoint-v2"
V1 = "minirlhf-checkpoint-v1"  # a bare transformer and its ModelConfig: read as v2 with no meta


class Checkpoint(NamedTuple):
    tree: dict | list  # the arrays, nested as they were saved (tuples come back as lists)
    model: ModelConfig | None  # the config of every transformer in the tree, if it holds any
    meta: dict  # the JSON record passed to `save`


# ---------------------------------------------------------------- tree <-> flat {path: array}

def _leaves(tree, prefix: str = ""):
    """(path, leaf) for every leaf of nested dicts/lists, paths like "blocks/0/attn/c_attn/w"."""
    if isinstance(tree, (dict, list, tuple)) and not tree:
        raise ValueError(f"{prefix or 'the root'} is empty: an empty container has no key to store it under")
    if isinstance(tree, dict):
        if all(isinstance(k, str) and k.isdigit() for k in tree):
            raise ValueError(f"{prefix or 'the root'}: a dict keyed only by digits would come back as a list")
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        yield prefix, tree
        return
    for k, v in items:
        if not str(k) or "/" in str(k):
            raise ValueError(f"key {k!r} under {prefix or 'the root'}: keys must be non-empty and without '/'")
        yield from _leaves(v, f"{prefix}/{k}" if prefix else str(k))


def flatten(tree) -> dict[str, np.ndarray]:
    """Nested dicts/lists of arrays -> {"a/b/0/c": array}."""
    return {path: np.asarray(leaf) for path, leaf in _leaves(tree)}


def unflatten(arrays: dict[str, np.ndarray]):
    """{"a/b/0/c": array} -> nested dicts/lists; a level whose keys are exactly 0..n-1 is a list."""
    if "" in arrays:  # this level is a leaf
        return arrays[""]
    children: dict[str, dict] = {}
    for path, array in arrays.items():
        head, _, rest = path.partition("/")
        children.setdefault(head, {})[rest] = array
    if set(children) == {str(i) for i in range(len(children))}:
        return [unflatten(children[str(i)]) for i in range(len(children))]
    return {k: unflatten(v) for k, v in children.items()}


# ---------------------------------------------------------------- the transformers inside a tree

def transformer_paths(tree, prefix: str = "") -> list[str]:
    """Where the transformers sit in a tree: every dict holding a token embedding "wte" ("" is the root)."""
    if isinstance(tree, dict) and "wte" in tree:
        return [prefix]
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    return [p for k, v in items for p in transformer_paths(v, f"{prefix}/{k}" if prefix else str(k))]


def check_transformer(arrays: dict[str, np.ndarray], at: str, cfg: ModelConfig, path: str) -> None:
    """Every parameter cfg implies is under `at`, with cfg's shape and finite values; nothing else is there."""
    shapes = jax.eval_shape(lambda: init_params(jax.random.PRNGKey(0), cfg))  # no compute, only shapes
    expected = {f"{at}/{k}" if at else k: s.shape for k, s in _leaves(shapes)}
    here = {k for k in arrays if not at or k.startswith(at + "/")}
    missing, extra = sorted(set(expected) - here), sorted(here - set(expected))
    if missing:
        raise ValueError(f"{path} lacks parameter(s) {missing[:5]}; the file is incomplete or from another model")
    if extra:
        raise ValueError(f"{path} has parameter(s) {extra[:5]} that {cfg} does not have: the file is from another model")
    for k, shape in expected.items():
        if arrays[k].shape != shape:
            raise ValueError(f"{path}: parameter {k} has shape {arrays[k].shape}, config implies {shape}")
        if not np.all(np.isfinite(arrays[k])):
            raise ValueError(f"{path}: parameter {k} contains NaN/inf; the checkpoint is corrupt")


# ---------------------------------------------------------------- save / load

def save(path: str, tree, cfg: ModelConfig | None = None, meta: dict | None = None, overwrite: bool = False) -> None:
    """Write `tree` (nested dicts/lists of arrays), the ModelConfig of the transformers in it and a JSON `meta`.

    An existing file is kept unless overwrite=True. The file appears whole or not at all (write, then rename).
    """
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot save to {path}: it is a folder; name a file in it, e.g. {path}/model.npz")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it, or choose another path")
    if not isinstance(tree, (dict, list, tuple)):
        raise ValueError("save stores a dict or list of arrays; wrap a single array as {'name': array}")
    arrays = flatten(tree)
    if CONFIG_KEY in arrays:
        raise ValueError(f"{CONFIG_KEY!r} is reserved for the checkpoint's record; rename that key")
    at = transformer_paths(tree) if cfg is not None else []
    if cfg is not None and not at:
        raise ValueError("a ModelConfig was given but the tree holds no transformer (no dict with 'wte')")
    for a in at:  # saving with the wrong config would only fail later, at load
        check_transformer(arrays, a, cfg, path)
    record = {"format": FORMAT, "model": dataclasses.asdict(cfg) if cfg else None, "model_at": at, "meta": meta or {}}
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save {path}: the folder {folder} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays, **{CONFIG_KEY: np.array(json.dumps(record))})
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read(path: str) -> Checkpoint:
    """Read a checkpoint written by `save` (or a v1 one); errors say what is wrong with the file."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable minirlhf checkpoint (.npz): {e}") from e
    if CONFIG_KEY not in arrays:
        raise ValueError(f"{path} has no {CONFIG_KEY!r} entry: not written by minirlhf.checkpoint.save")
    record = _record(arrays.pop(CONFIG_KEY), path)
    cfg = _model_config(record.get("model"), path)
    for at in record.get("model_at", [""]) if cfg else []:  # v1: the whole file is one transformer
        check_transformer(arrays, at, cfg, path)
    return Checkpoint(unflatten(arrays), cfg, record.get("meta", {}))


def _record(entry: np.ndarray, path: str) -> dict:
    """The checkpoint's JSON record, checked: a dict of a format this code reads."""
    try:
        record = json.loads(str(entry))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: its {CONFIG_KEY!r} entry is not valid JSON ({e}); the file is corrupt or was "
                         f"not written by minirlhf.checkpoint.save") from None
    if not isinstance(record, dict) or record.get("format") not in (FORMAT, V1):
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"{path} has format {found!r}, expected {FORMAT!r}; train the model again")
    return record


def _model_config(fields, path: str) -> ModelConfig | None:
    """The stored ModelConfig, with an error that names the field this code does not know."""
    if not fields:
        return None
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(fields) - known) if isinstance(fields, dict) else []
    if not isinstance(fields, dict) or unknown:
        raise ValueError(f"{path}: its model config {fields!r} is not a ModelConfig"
                         + (f" (unknown field(s) {unknown}; known: {sorted(known)})" if unknown else "")
                         + "; the file is from another version of minirlhf or corrupt")
    try:
        return ModelConfig(**fields)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: its model config is invalid: {e}") from None


def load(path: str) -> tuple[dict, ModelConfig | None]:
    """(tree, ModelConfig) from a checkpoint; `read` also returns its meta record."""
    tree, cfg, _ = read(path)
    return tree, cfg
