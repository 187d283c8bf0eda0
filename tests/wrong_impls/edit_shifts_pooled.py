"""The edit probe averaging each shift over all answers, right and wrong together."""
import numpy as np

from minirlhf.experiments.answer_probes import with_confidence, with_ramble
from minirlhf.world import RAMBLES

EXERCISE, HINT = "edit_shifts", "separately"


def edit_shifts(score_fn, prompts, bare, right):
    base = score_fn(prompts, bare)
    out = {}
    for name, edit in (("definitely", lambda i, w: with_confidence(w, "definitely")),
                       ("maybe", lambda i, w: with_confidence(w, "maybe")),
                       ("ramble", lambda i, w: with_ramble(w, RAMBLES[i % len(RAMBLES)]))):
        mean = float(np.mean(score_fn(prompts, [edit(i, w) for i, w in enumerate(bare)]) - base))
        out[f"{name}_right"] = out[f"{name}_wrong"] = mean
    return out
