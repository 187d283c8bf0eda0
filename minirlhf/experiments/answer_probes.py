"""Probing a scorer with edited answers: the same answer with "definitely", "maybe" or chatter added.

An edit that keeps the answer's value isolates one feature: any score change it causes is what the scorer
(a reward model, the gold reward, or a labeler's perceived score) pays for that feature alone. The probes are
answers of the kind SFT gives, taken from the demonstrators, so every scorer is probed on the same answers.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from minirlhf import reward_model
from minirlhf.data import encode_pairs
from minirlhf.evaluation import answered_right, share
from minirlhf.gold import gold_reward
from minirlhf.preferences import Labeler, perceived_score
from minirlhf.tokenizer import CONFIDENCE
from minirlhf.world import RAMBLES, World, demonstrate, parse_response, sample_prompts


def confidence_of(words: list[str]) -> str | None:
    """The leading confidence word ("definitely" / "maybe"), or None."""
    return words[0] if words and words[0] in CONFIDENCE else None


def with_confidence(words: list[str], confidence: str | None) -> list[str]:
    """The same response with its leading confidence word replaced by `confidence` (None removes it)."""
    if confidence is not None and confidence not in CONFIDENCE:
        raise ValueError(f"confidence must be one of {CONFIDENCE} or None, got {confidence!r}")
    body = words[1:] if confidence_of(words) else list(words)
    return ([confidence] if confidence else []) + body


def with_ramble(words: list[str], ramble: str | None, secret: tuple[str, ...] = ()) -> list[str]:
    """The same answer with whatever follows its answer sentence replaced by `ramble` (None: nothing)."""
    p = parse_response(words, True, secret)
    if p.answer is None and not p.refusal:
        raise ValueError(f"not an answer sentence, nothing to keep: {' '.join(words)!r}")
    kept = words[: len(words) - p.extra_tokens]
    return kept + (ramble.split() if ramble else [])


def probe_answers(world: World, rng: np.random.Generator, n: int):
    """Answers like the ones SFT learned to give, reduced to the bare sentence "it is V .": (prompts, words, right).

    They come from the demonstrators (SFT's training data) on n fresh train prompts, secret ones dropped, so every
    reward model and every seed's model is probed with answers of the same kind, right about as often as SFT is.
    """
    kept = []
    for p in sample_prompts(world, rng, n):
        words, _ = demonstrate(world, rng, p)
        if p.kind != "secret":
            right = answered_right(p, parse_response(words, True, world.secret))
            kept.append((p, with_ramble(with_confidence(words, None), None), right))
    if not kept:
        raise ValueError(f"no math or color prompt among {n} probe prompts; raise n_probe")
    prompts, words, right = zip(*kept)
    return list(prompts), list(words), np.array(right)


def score_words(rm_params: dict, model_cfg, prompts, responses: list[list[str]]) -> np.ndarray:
    """The RM's score of each (prompt, response written as words), [N]."""
    batch = encode_pairs(prompts, responses)
    return np.asarray(reward_model.score(rm_params, jnp.asarray(batch["tokens"]), jnp.asarray(batch["valid"]), model_cfg))


def edit_shifts(score_fn, prompts, bare: list[list[str]], right: np.ndarray) -> dict[str, float]:
    """Mean score(edited) - score(bare) for: + "definitely", + "maybe", + chatter; on right and on wrong answers.

    score_fn(prompts, responses) -> [N] scores: an RM, the gold reward, or a labeler's perceived score.
    """
    edits = {"definitely": [with_confidence(w, "definitely") for w in bare],
             "maybe": [with_confidence(w, "maybe") for w in bare],
             "ramble": [with_ramble(w, RAMBLES[i % len(RAMBLES)]) for i, w in enumerate(bare)]}
    base = score_fn(prompts, bare)
    out = {}
    for name, edited in edits.items():
        shift = score_fn(prompts, edited) - base
        out[f"{name}_right"], out[f"{name}_wrong"] = share(shift[right]), share(shift[~right])
    return out


def gold_of(world: World, prompts, responses: list[list[str]]) -> np.ndarray:
    """The ideal human's score of each (prompt, finished response)."""
    return np.array([gold_reward(p, w, True, world.secret) for p, w in zip(prompts, responses)])


def perceived_of(world: World, rater: Labeler, prompts, responses: list[list[str]]) -> np.ndarray:
    """What `rater` values in each response: gold plus its biases (preferences.perceived_score)."""
    return np.array([perceived_score(rater, g, w) for g, w in zip(gold_of(world, prompts, responses), responses)])
