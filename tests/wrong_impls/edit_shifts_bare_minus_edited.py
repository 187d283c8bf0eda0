"""The edit probe with the shift taken the other way round: score(bare) - score(edited)."""
import numpy as np

from minirlhf.experiments.answer_probes import with_confidence, with_ramble
from minirlhf.world import RAMBLES

EXERCISE, HINT = "edit_shifts", "other way round"


def edit_shifts(score_fn, prompts, bare, right):
    edits = {"definitely": [with_confidence(w, "definitely") for w in bare],
             "maybe": [with_confidence(w, "maybe") for w in bare],
             "ramble": [with_ramble(w, RAMBLES[i % len(RAMBLES)]) for i, w in enumerate(bare)]}
    out = {}
    for name, edited in edits.items():
        shift = score_fn(prompts, bare) - score_fn(prompts, edited)
        out[f"{name}_right"], out[f"{name}_wrong"] = float(np.mean(shift[right])), float(np.mean(shift[~right]))
    return out
