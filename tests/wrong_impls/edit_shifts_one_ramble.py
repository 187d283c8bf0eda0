"""The edit probe adding the same chatter, RAMBLES[0], to every answer."""
import numpy as np

from minirlhf.experiments.answer_probes import with_confidence, with_ramble
from minirlhf.world import RAMBLES

EXERCISE, HINT = "edit_shifts", "not always the first"


def edit_shifts(score_fn, prompts, bare, right):
    edits = {"definitely": [with_confidence(w, "definitely") for w in bare],
             "maybe": [with_confidence(w, "maybe") for w in bare],
             "ramble": [with_ramble(w, RAMBLES[0]) for w in bare]}
    base, out = score_fn(prompts, bare), {}
    for name, edited in edits.items():
        shift = score_fn(prompts, edited) - base
        out[f"{name}_right"], out[f"{name}_wrong"] = float(np.mean(shift[right])), float(np.mean(shift[~right]))
    return out
