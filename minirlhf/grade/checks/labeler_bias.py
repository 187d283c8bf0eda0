"""Checks for the edit probe: what a scorer pays for "definitely", "maybe" or chatter added to an unchanged answer."""
from __future__ import annotations

import numpy as np

from minirlhf.experiments.answer_probes import probe_answers, with_confidence, with_ramble
from minirlhf.grade.checks.common import Mistake, check_for, expect, reference, rng
from minirlhf.world import RAMBLES, make_world


def _toy_scorer(prompts, seed: int):
    """A scorer whose price for each edit differs from prompt to prompt, so right and wrong answers shift apart."""
    r = rng(seed)
    weight = {id(p): w for p, w in zip(prompts, r.uniform(0.5, 1.5, len(prompts)))}

    def score_fn(prompts, responses):  # [N]
        w = np.array([weight[id(p)] for p in prompts])
        sure = np.array([("definitely" in x) - 0.5 * ("maybe" in x) for x in responses])
        return w * (0.3 * sure + 0.02 * np.array([len(x) for x in responses])) + 0.1 * w**2
    return score_fn


def _np_shifts(score_fn, prompts, bare, right, sign=1.0, pooled=False, swap=False, one_ramble=False):
    """edit_shifts with a mistake: bare - edited, right and wrong pooled or swapped, the same chatter everywhere."""
    edits = {"definitely": [with_confidence(w, "definitely") for w in bare],
             "maybe": [with_confidence(w, "maybe") for w in bare],
             "ramble": [with_ramble(w, RAMBLES[0 if one_ramble else i % len(RAMBLES)]) for i, w in enumerate(bare)]}
    base, out = score_fn(prompts, bare), {}
    for name, edited in edits.items():
        shift = sign * (score_fn(prompts, edited) - base)
        on_right, on_wrong = (shift, shift) if pooled else (shift[right], shift[~right])
        out[f"{name}_right"], out[f"{name}_wrong"] = (np.mean(on_wrong), np.mean(on_right)) if swap else (
            np.mean(on_right), np.mean(on_wrong))
    return {k: float(v) for k, v in out.items()}


@check_for("edit_shifts")
def check_edit_shifts(fn) -> str:
    world = make_world()
    cases = []
    for seed, n in ((60, 40), (61, 12)):
        prompts, bare, right = probe_answers(world, rng(seed), n)
        cases.append((prompts, bare, right, seed, f"{len(bare)} probe answers ({int(right.sum())} right)"))
    for prompts, bare, right, seed, case in cases:
        score_fn = _toy_scorer(prompts, seed)
        got = fn(score_fn, list(prompts), [list(w) for w in bare], right.copy())
        want = reference("edit_shifts")(score_fn, prompts, bare, right)
        wrong = lambda **kw: (lambda: _np_shifts(score_fn, prompts, bare, right, **kw))
        expect(got, want, case, [
            Mistake("the shift is score(edited) - score(bare): what the scorer pays FOR the edit (yours is the "
                    "other way round)", wrong(sign=-1.0)),
            Mistake("average the shifts over the right answers and over the wrong ones separately (the *_right "
                    "and *_wrong keys): a scorer may pay for confidence on one and not the other", wrong(pooled=True)),
            Mistake("*_right and *_wrong are swapped: `right` is True where the bare answer is right",
                    wrong(swap=True)),
            Mistake("answer i gets chatter RAMBLES[i % len(RAMBLES)]: every chatter, not always the first",
                    wrong(one_ramble=True)),
        ])
    return f"{len(cases)} sets of probe answers, scored by a toy scorer"
