"""Online preference data: label the policy you have now, keep every pair so far, fit a reward model on them.

    union          every pair labelled so far, as one pairs dict
    rm_config      the pipeline's RM settings for n pairs, as many passes over them as the pipeline makes
    policy_pairs   fresh pairs of a policy's samples, labelled by the pipeline's labeler
    fit_rm         an RM on the union, from SFT's weights, normalised on the current policy's samples
    rm_accuracy    an RM against the labels (what a practitioner can check) and against gold
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from minirlhf import reward_model
from minirlhf.experiments.base import BaseModels
from minirlhf.experiments.toolkit import train_rm
from minirlhf.preferences import make_pairs


def union(pair_sets: list[dict]) -> dict:
    """Every pair labelled so far, as one pairs dict: the sets' arrays concatenated in round order."""
    keys = set(pair_sets[0])
    if any(set(p) != keys for p in pair_sets):
        raise ValueError("union: every pair set must hold the same arrays")
    return {k: np.concatenate([np.asarray(p[k]) for p in pair_sets]) for k in pair_sets[0]}


def rm_config(base: BaseModels, n_pairs: int) -> reward_model.RMConfig:
    """The pipeline's RM settings for n_pairs, its steps scaled to keep the pipeline's passes over the data."""
    rm, optim = base.cfg.rm, base.cfg.rm.optim
    steps = max(1, round(optim.steps * n_pairs / rm.n_pairs))
    return dataclasses.replace(rm, n_pairs=n_pairs,
                               optim=dataclasses.replace(optim, steps=steps, warmup=min(optim.warmup, steps)))


def policy_pairs(base: BaseModels, policy: dict, key: jax.Array, n: int) -> dict:
    """n pairs of `policy`'s samples on train prompts, labelled by the pipeline's labeler."""
    return make_pairs(key, policy, base.world, base.cfg.model, n, base.cfg.rm.labeler)


def fit_rm(base: BaseModels, pair_sets: list[dict], policy: dict, key: jax.Array) -> dict:
    """RM on the union of the pair sets, from the SFT weights, normalised on `policy`'s samples (train prompts),
    with the keys the RM stage splits from `key`."""
    pairs = union(pair_sets)
    return train_rm(base, key, pairs, pairs, rm_config(base, len(pairs["kind"])), policy)


def rm_accuracy(rm: dict, heldout: dict, base: BaseModels) -> dict:
    """The RM against the labels (what a practitioner can check) and against gold, on labelled held-out pairs."""
    acc = reward_model.accuracy(rm, heldout, base.cfg.model)
    return {"labels": acc["accuracy_labels"], "gold": acc["accuracy_gold"]}
