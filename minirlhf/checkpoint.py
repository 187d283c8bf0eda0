"""Checkpoints as plain .npz files: one array per parameter, plus the config as JSON text.

No pickle: `np.load(..., allow_pickle=False)` reads only arrays, so loading a checkpoint cannot run
code. A parameter's key is its path in the params dict ("blocks/0/attn/c_attn/w"), which also lets
the loader say exactly which array is missing or has the wrong shape.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import zipfile

import jax
import numpy as np

from minirlhf.transformer import ModelConfig, init_params

CONFIG_KEY = "__config__"
FORMAT = "minirlhf-checkpoint-v1"


def flatten(params, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts/lists of arrays -> {"a/b/0/c": array}."""
    if isinstance(params, dict):
        items = params.items()
    elif isinstance(params, (list, tuple)):
        items = enumerate(params)
    else:
        return {prefix: np.asarray(params)}
    out = {}
    for k, v in items:
        out.update(flatten(v, f"{prefix}/{k}" if prefix else str(k)))
    return out


def save(path: str, params: dict, cfg: ModelConfig, overwrite: bool = False) -> None:
    """Write params and cfg to `path` (.npz). An existing file is kept unless overwrite=True."""
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it, or choose another path")
    arrays = flatten(params)
    meta = json.dumps({"format": FORMAT, "model": dataclasses.asdict(cfg)})
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=folder)  # write then rename: no half-written file
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **arrays, **{CONFIG_KEY: np.array(meta)})
    os.replace(tmp, path)


def load(path: str) -> tuple[dict, ModelConfig]:
    """Read a checkpoint written by `save`; errors say what is wrong with the file."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable minirlhf checkpoint (.npz): {e}") from e
    if CONFIG_KEY not in arrays:
        raise ValueError(f"{path} has no {CONFIG_KEY!r} entry: not written by minirlhf.checkpoint.save")
    meta = json.loads(str(arrays.pop(CONFIG_KEY)))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    cfg = ModelConfig(**meta["model"])
    template = init_params(jax.random.PRNGKey(0), cfg)  # the shapes cfg implies
    expected = flatten(template)
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise ValueError(f"{path} lacks parameter(s) {missing[:5]}; the file is incomplete or from another model")
    for k, ref in expected.items():
        if arrays[k].shape != ref.shape:
            raise ValueError(f"{path}: parameter {k} has shape {arrays[k].shape}, config implies {ref.shape}")
        if not np.all(np.isfinite(arrays[k])):
            raise ValueError(f"{path}: parameter {k} contains NaN/inf; the checkpoint is corrupt")
    treedef = jax.tree_util.tree_structure(template)
    return jax.tree_util.tree_unflatten(treedef, [arrays[p] for p in _leaf_paths(template)]), cfg


def _leaf_paths(template) -> list[str]:
    """Leaf paths in jax's flattening order (dict keys sorted)."""
    return [
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(template)[0]
    ]
