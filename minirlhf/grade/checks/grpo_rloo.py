"""Checks for GRPO's group-normalised advantage and RLOO's leave-one-out advantage."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from minirlhf.grade.checks.common import Mistake, check_for, expect, expect_traceable, f32, reference, rng
from minirlhf.grpo_rloo import STD_EPS


def _groups(seed: int, prompts: int, group: int) -> np.ndarray:
    return f32(rng(seed).normal(0, 1, size=(prompts, group)))


def _divide_quietly(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 is the point of this mistake
        return a / b


@check_for("group_advantages")
def check_group_advantages(fn) -> str:
    cases = [("a group whose rewards are all equal", f32([[0.3, 0.3, 0.3], [1.0, -1.0, 0.5]])),
             ("3 prompts x G=4", _groups(60, 3, 4)), ("2 prompts x G=7", _groups(61, 2, 7))]
    for case, r in cases:
        x = r.astype(np.float64)
        mean, std = x.mean(axis=1, keepdims=True), x.std(axis=1, keepdims=True)
        got = fn(jnp.asarray(r))
        expect(got, reference("group_advantages")(jnp.asarray(r)), case, [
            Mistake("normalise within each prompt's GROUP (axis=1, keepdims=True), not over the whole batch",
                    lambda: (x - x.mean()) / (x.std() + STD_EPS)),
            Mistake("divide by the group's std: A = (r - mean) / (std + STD_EPS)", lambda: x - mean),
            Mistake("use the population std (ddof=0, as jnp.std does by default)",
                    lambda: (x - mean) / (x.std(axis=1, ddof=1, keepdims=True) + STD_EPS)),
            Mistake("add STD_EPS to the std, so a group of equal rewards gets 0, not 0/0",
                    lambda: _divide_quietly(x - mean, std)),
        ])
        expect_traceable(fn, (jnp.asarray(r),))
    return "a group of equal rewards, and random groups of 4 and 7"


@check_for("leave_one_out_advantages")
def check_leave_one_out_advantages(fn) -> str:
    cases = [("4 prompts x k=4", _groups(62, 4, 4)), ("3 prompts x k=2", _groups(63, 3, 2)),
             ("2 prompts x k=6", _groups(64, 2, 6))]
    for case, r in cases:
        x = r.astype(np.float64)
        k, total = x.shape[1], x.sum(axis=1, keepdims=True)
        got = fn(jnp.asarray(r))
        expect(got, reference("leave_one_out_advantages")(jnp.asarray(r)), case, [
            Mistake("the baseline of sample i leaves sample i OUT: divide the others' sum by k - 1, not k",
                    lambda: x - (total - x) / k),
            Mistake("leave sample i out of its own baseline: that is the mean of the OTHER k - 1 rewards",
                    lambda: x - x.mean(axis=1, keepdims=True)),
            Mistake("the baseline comes from the same prompt's group (sum over axis=1), not the whole batch",
                    lambda: x - (x.sum() - x) / (x.size - 1)),
            Mistake("the advantage is R_i minus the baseline, not the baseline minus R_i",
                    lambda: (total - x) / (k - 1) - x),
        ])
        expect_traceable(fn, (jnp.asarray(r),))
    return "groups of 2, 4 and 6"
