"""Checks for SFT: the mask that keeps only the response in the loss."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from minirlhf.grade.checks.common import (Mistake, check_for, expect, expect_traceable, in_layout, reference,
                                          response_layout)
from minirlhf.data import PROMPT_WIDTH, RESPONSE_WIDTH


@check_for("response_mask")
def check_response_mask(fn) -> str:
    _, small = response_layout(8, [1, 3, 5, 2], prompt_width=4, response_width=5)
    _, full = response_layout(9, [3, RESPONSE_WIDTH], prompt_width=PROMPT_WIDTH, response_width=RESPONSE_WIDTH)
    cases = [("prompts of width 4, responses ending at different places", small, 4),
             ("the default prompt width (data.PROMPT_WIDTH)", full, None)]
    for case, valid, width in cases:
        args = (valid,) if width is None else (valid, width)
        got = fn(*(a.copy() if isinstance(a, np.ndarray) else a for a in args))
        want = reference("response_mask")(*args)
        P = PROMPT_WIDTH if width is None else width
        index = np.arange(valid.shape[1])[None, :]
        expect(got, want, case, [
            Mistake("kept the padding after EOS: a response token must also be valid (valid & ...)",
                    lambda: np.broadcast_to(index >= P, valid.shape)),
            Mistake("kept the prompt: response tokens are those at index >= prompt_width", lambda: valid),
            Mistake("off by one: the response starts AT index prompt_width (>=, not >)", lambda: valid & (index > P)),
            Mistake("the mask is the wrong way round: True on the response, False on the prompt",
                    lambda: valid & (index < P)),
        ], where=in_layout(np.asarray(want)))
    # PPO and DPO call it inside their jitted steps.
    expect_traceable(lambda v: fn(v, 4), (jnp.asarray(small),), caller="the PPO rollout and the DPO loss")
    return f"{len(cases)} cases"
