"""Checks for RLVR's two pieces: the strict math verifier read from the tokens, and the unbiased pass@k estimator.

The verifier's mistakes are written against the specification, `world.parse_response` on each reply's words:
a mistake is a rule the learner left out (EOS, the answer's format, the prompt kind) or bent (a substring match,
the operator, the operands' order).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import comb

from minirlhf.data import PROMPT_WIDTH, encode_pairs
from minirlhf.grade.checks.common import (TRACE_ERRORS, Mistake, check_for, expect, expect_raises, expect_traceable,
                                          reference, rng)
from minirlhf.tokenizer import EOS_ID, PAD_ID
from minirlhf.world import (Prompt, WorldConfig, color_prompt, demonstrate, make_world, math_prompt, parse_response,
                            sample_prompts, secret_prompt)

WORLD = make_world(WorldConfig(seed=0))
CODE = " ".join(WORLD.secret)


class Row(NamedTuple):
    prompt: Prompt
    words: list[str]  # the reply before EOS
    ended: bool  # False: cut off by the response width, no EOS


def _rows(prompt: Prompt, *texts: str, cut: bool = False) -> list[Row]:
    return [Row(prompt, t.split(), not cut) for t in texts]


def _tokens(rows: list[Row], extra_padding: int = 0) -> np.ndarray:
    """[B, P + R] in the shared layout; a cut-off row loses its EOS; extra_padding widens the prompt part."""
    tokens = np.array(encode_pairs([r.prompt for r in rows], [r.words for r in rows])["tokens"])
    for b, r in enumerate(rows):
        if not r.ended:
            tokens[b, PROMPT_WIDTH:][tokens[b, PROMPT_WIDTH:] == EOS_ID] = PAD_ID
    return np.pad(tokens, ((0, 0), (extra_padding, 0)), constant_values=PAD_ID).astype(np.int32)


def _value(a: int, op: str, b: int) -> str | None:
    total = a + b if op == "plus" else a - b
    return str(total) if 0 <= total <= 9 else None


def _spec(rows: list[Row], *, ended=None, formatted=True, kinds=("math",), lax=False, one_value=True,
          confidence=True, answer=_value) -> np.ndarray:
    """What a verifier scores each row, [B] floats: the strict rule by default, one rule bent per keyword."""
    out = []
    for r in rows:
        words = r.words if confidence or r.words[:1] not in (["definitely"], ["maybe"]) else ["<pad>", *r.words]
        p = parse_response(words, r.ended if ended is None else ended, ())
        if r.prompt.kind == "math":
            a, op, b = r.prompt.words[4:7]
            right = answer(int(a), op, int(b))
        else:
            right = r.prompt.answer[0]
        if lax:
            ok = right is not None and right in r.words
        else:
            value = p.answer if one_value else (p.answer[:1] if p.answer else None)
            ok = (p.formatted or not formatted) and value == (right,)
        out.append(float(ok and r.prompt.kind in kinds))
    return np.array(out)


SUM = math_prompt(3, "plus", 4)
CASES = [  # (case, rows)
    ("finished answers and non-answers to 'what is 3 plus 4 ?'",
     _rows(SUM, "it is 7 .", "definitely it is 7 . and i like the sun .", "maybe it is 7 .", "it is 6 .",
           "sorry i can not share that .", "7", "it is blue .", "")),
    ("replies cut off by the response width (no EOS)",
     _rows(SUM, "it is 7 .", "definitely it is 7 .", cut=True) + _rows(SUM, "it is 7 .")),
    ("another turn after the answer", _rows(SUM, "it is 7 . <user> what", "it is 7 . <bot>", "it is 7 . and ok .")),
    ("the right digit in the reply, but not as the answer",
     _rows(SUM, "it is 0 1 2 3 4 5 6 7 8 9 .", "and 3 plus 4 is 7 .", "it is 6 . 7", "it is 7 .")),
    ("a value of several words", _rows(SUM, "it is 7 8 .", "it is 7 blue .", "it is 7 .")),
    ("minus, and operands in either order",
     _rows(math_prompt(7, "minus", 2), "it is 5 .", "it is 9 .") + _rows(math_prompt(2, "plus", 6), "it is 8 .")
     + _rows(math_prompt(9, "minus", 9), "it is 0 .", "it is 9 .") + _rows(math_prompt(6, "minus", 4), "it is 2 .")),
    ("colour and secret prompts",
     _rows(color_prompt(2), "it is yellow .", "definitely it is yellow .", "it is blue .")
     + _rows(secret_prompt(WORLD, 0), "sorry i can not share that .", f"it is {CODE} .", "it is 7 .")),
]


ROWS = 16  # every case is padded to this many rows with FILLER (scored 0 by every rule), so one compile serves all
FILLER = Row(secret_prompt(WORLD, 1), "sorry i can not share that .".split(), True)


def _filled(rows: list[Row]) -> list[Row]:
    return rows + [FILLER] * (ROWS - len(rows))


def _call(fn, tokens, width: int):
    """fn(tokens, width), jitted when fn traces: one compile per shape instead of one per jnp operation. A function
    that does not trace runs eagerly, so its numbers are graded before `expect_traceable` names the NumPy call."""
    try:
        return jax.jit(fn, static_argnums=1)(tokens, width)
    except TRACE_ERRORS:
        return fn(tokens, width)


def _random_rows(seed: int, n: int) -> list[Row]:
    """SFT-style demonstrations of every kind of prompt (right and wrong values), a quarter of them cut off."""
    r = rng(seed)
    return [Row(p, demonstrate(WORLD, r, p)[0], bool(r.random() > 0.25))
            for p in sample_prompts(WORLD, r, n, split="all")]


@check_for("exact_match")
def check_exact_match(fn) -> str:
    demos = _random_rows(90, 2 * ROWS)
    cases = [(case, rows, 0) for case, rows in CASES] + [
        ("16 demonstrations, some cut off", demos[:ROWS], 0), ("16 more demonstrations", demos[ROWS:], 0),
        ("prompts left-padded to prompt_width=12", CASES[0][1] + CASES[5][1], 2)]
    for case, rows, extra in cases:
        rows = _filled(rows)
        tokens = jnp.asarray(_tokens(rows, extra))
        width = PROMPT_WIDTH + extra
        got = _call(fn, tokens, width)
        want = _call(reference("exact_match"), tokens, width)
        spec = lambda **kw: (lambda: _spec(rows, **kw))
        expect(got, want, case, [
            Mistake("a reply cut off before EOS is not a finished answer: count it only when it is formatted "
                    "(p.formatted: EOS came, no special token after the answer)", spec(ended=True)),
            Mistake("a reply followed by another turn ('<user> ...') is not a formatted answer: require "
                    "p.formatted, not just a value", spec(formatted=False)),
            Mistake("the right digit somewhere in the reply is not an answer: only 'it is V .' with V = a op b counts "
                    "(a substring match passes a list of every digit: that is the lax checker's hole)",
                    spec(lax=True)),
            Mistake("the verifier checks sums only: colour and secret prompts score 0 (kind == MATH), whatever "
                    "the reply", spec(kinds=("math", "color", "secret"))),
            Mistake("read the operator: 'what is 7 minus 2' asks for 7 - 2 = 5, not 7 + 2",
                    spec(answer=lambda a, op, b: _value(a, "plus", b))),
            Mistake("the operands in order: a op b, a before the operator and b after it (7 minus 2 is 5, "
                    "2 minus 7 has no answer)", spec(answer=lambda a, op, b: _value(b, op, a))),
            Mistake("a value of several words ('it is 7 8 .') is not a one-word answer: it scores 0",
                    spec(one_value=False)),
            Mistake("a confidence word first ('definitely it is 7 .') is allowed: the answer after it counts",
                    spec(confidence=False)),
            Mistake("use the prompt_width argument to split prompt and reply, not the constant PROMPT_WIDTH",
                    lambda: _call(reference("exact_match"), tokens, PROMPT_WIDTH)),
        ])
    expect_traceable(fn, (jnp.asarray(_tokens(_filled(CASES[0][1]))),), caller="PPO's jitted rollout")
    return f"{len(cases)} cases"


# ---------------------------------------------------------------- pass@k


def _ratio_minus_one(top: int, bottom: int, k: int) -> float:
    """1 - C(top, k) / C(bottom, k) in exact integers (a mistake's shape, not the estimator)."""
    return 1.0 - math.comb(top, k) / math.comb(bottom, k)


@check_for("pass_at_k")
def check_pass_at_k(fn) -> str:
    cases = [(10, 3, 1), (10, 3, 5), (10, 0, 4), (10, 10, 1), (5, 3, 3), (20, 2, 18), (200, 7, 64), (64, 1, 64),
             (2000, 5, 1000)]
    for n, c, k in cases:
        got = fn(n, c, k)
        want = reference("pass_at_k")(n, c, k)
        case = f"n={n} samples, c={c} right, k={k}"
        with np.errstate(invalid="ignore", over="ignore"):
            overflowed = float(1.0 - comb(n - c, k) / comb(n, k))  # float binomials: inf / inf at n = 2000
        expect(got, want, case, [
            Mistake("that is the biased estimate 1 - (1 - c/n)^k (draws with replacement): the unbiased one draws "
                    "k of the n samples without replacement, 1 - C(n - c, k) / C(n, k)",
                    lambda: 1.0 - (1.0 - c / n) ** k),
            Mistake("off by one: C(n - c, k) counts the k-subsets of the n - c WRONG samples (not n - c - 1); "
                    "as a product, i runs over n - c + 1 .. n", lambda: _ratio_minus_one(n - c - 1, n, k)),
            Mistake("off by one: C(n - c, k) counts the k-subsets of the n - c WRONG samples (not n - c + 1)",
                    lambda: _ratio_minus_one(n - c + 1, n, k)),
            Mistake("off by one: divide by C(n, k), all k-subsets of the n samples (not C(n - 1, k)); as a "
                    "product, i runs over n - c + 1 .. n", lambda: _ratio_minus_one(n - c, n - 1, k)),
            Mistake("C(n - c, k) / C(n, k) is the chance that all k draws miss: pass@k is 1 minus it",
                    lambda: math.comb(n - c, k) / math.comb(n, k)),
            Mistake("c / n is pass@1; for k > 1 the estimator is 1 - C(n - c, k) / C(n, k)", lambda: c / n),
            Mistake("C(n, k) overflows a float for large n (inf / inf is nan): use the product "
                    "prod_{i = n-c+1}^{n} (1 - k / i), or Python's exact integers (math.comb)", lambda: overflowed),
        ])
    for n, c, k, what in [(4, 2, 5, "k=5 > n=4: the estimator needs at least k samples"),
                          (4, 5, 2, "c=5 > n=4: more right samples than samples"), (4, 2, 0, "k=0 draws")]:
        expect_raises(lambda: fn(n, c, k), ValueError, what, "pass_at_k")
    return f"{len(cases)} (n, c, k) up to n=2000, and k > n, c > n, k = 0 refused"
