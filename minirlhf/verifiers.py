"""Rewards read straight from the tokens: the gold reward, a strict math verifier and two flawed ones, all jittable.

PPO's rollout calls its reward function inside a jitted step, so a reward that decodes words in Python would
need a host callback there. These read the shared [B, P + R] layout (`data.py`) with array operations instead:

    prompt   [B, P]  left-padded "<bos> <user> what is a op b ? <bot>": a, op, b sit at fixed places from the end,
                     so the right value of every row is an array (`read_prompts`)
    response [B, R]  the words before EOS (padding dropped), read against `world.parse_response`'s grammar

Four scores come from that reading:
    gold_tokens      the ideal human (`gold.gold_reward`), equal to it on every response: the perfect-reward control
    exact_match      1 when a math reply is a finished answer whose value is a op b (what `toolkit.answered_right`
                     counts), else 0: a verifier in the sense of RLVR (Lambert et al. 2024, Tülu 3)
    lax_match        1 when the right digit appears anywhere in a math reply: a checker that accepts too much
    plus_only_match  exact_match with every sum read as a plus, the bug of a checker written for addition and reused
                     for subtraction: on "a minus b" it pays a + b and not the right answer
A checker that only accepts too much still pays the right answer, so a policy that can learn the sums gains nothing
by gaming it; one that pays a wrong reply *more* than the right one is what RL exploits.

`GoldReward` and `VerifierReward` wrap them as reward functions for PPO / GRPO (frozen dataclasses, like
`reward_model.RewardFn`, so equal configs share one compiled rollout). Per-seed data (the secret code, the
scale) travel in reward_params as arrays, never in a closure, so one compiled step serves every seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from minirlhf import reward_model
from minirlhf.data import PROMPT_WIDTH
from minirlhf.gold import MAX_EXTRA_PENALTY
from minirlhf.tokenizer import COLORS, DIGITS, EOS_ID, PAD_ID, SPECIALS, THINGS, TOKEN_ID, encode
from minirlhf.transformer import ModelConfig
from minirlhf.world import REFUSAL, World

NO_WORD = -1  # fills a row's word slots after its last word; equals no token id
MATH, COLOR, SECRET = 0, 1, 2  # prompt kinds, in world.PROMPT_KINDS order
DIGIT_0, COLOR_0, THING_0 = TOKEN_ID[DIGITS[0]], TOKEN_ID[COLORS[0]], TOKEN_ID[THINGS[0]]  # each list is contiguous
VALUE_IDS = np.array(encode(DIGITS + COLORS))  # what may stand after "it is"
REFUSAL_IDS = np.array(encode(REFUSAL))
SPECIAL_IDS = np.array(encode(SPECIALS))
IT, IS, DOT, DEFINITELY, MAYBE = (TOKEN_ID[w] for w in ("it", "is", ".", "definitely", "maybe"))
VALUE_START = 2  # "it is" takes the first two places of the answer sentence
DOT_BY = 6  # parse_response looks for the full stop among places 2..5: a value is at most 3 words


def operands(prompt: Int[Array, "batch P"]) -> tuple[Int[Array, " batch"], Int[Array, " batch"], Int[Array, " batch"]]:
    """a, the operator's token id and b of "what is a op b ? <bot>", read at their fixed places from the end."""
    return prompt[:, -5] - DIGIT_0, prompt[:, -4], prompt[:, -3] - DIGIT_0


def digit_token(total: Int[Array, " batch"]) -> Int[Array, " batch"]:
    """The token id of a one-digit total; NO_WORD where the total is no digit (no reply can be right)."""
    return jnp.where((total >= 0) & (total <= 9), DIGIT_0 + total, NO_WORD)


class PromptInfo(NamedTuple):
    kind: Int[Array, " batch"]  # MATH, COLOR or SECRET
    answer: Int[Array, " batch"]  # token id of the right value (math, color); NO_WORD for the secret prompt


def read_prompts(prompt: Int[Array, "batch P"]) -> PromptInfo:
    """Kind and right value of each left-padded prompt, in `world`'s prompt shapes (all end "x ? <bot>")."""
    is_secret = jnp.any(prompt == TOKEN_ID["secret"], axis=1)
    is_color = jnp.any(prompt == TOKEN_ID["color"], axis=1)
    a, op, b = operands(prompt)
    math_answer = digit_token(jnp.where(op == TOKEN_ID["plus"], a + b, a - b))
    color_answer = COLOR_0 + prompt[:, -3] - THING_0  # "what color is the THING ? <bot>"; THINGS[i] is COLORS[i]
    kind = jnp.where(is_secret, SECRET, jnp.where(is_color, COLOR, MATH))
    answer = jnp.where(is_secret, NO_WORD, jnp.where(is_color, color_answer, math_answer))
    return PromptInfo(kind, answer)


def response_words(response: Int[Array, "batch R"]) -> tuple[Int[Array, "batch R"], Int[Array, " batch"], Bool[Array, " batch"]]:
    """`tokenizer.words_until_eos` as arrays: the words before EOS moved to the front (padding the model
    sampled mid-reply is skipped, as there), NO_WORD after them; how many there are; whether EOS came."""
    ended = jnp.any(response == EOS_ID, axis=1)
    after_eos = jnp.cumsum(response == EOS_ID, axis=1) > 0  # EOS itself and all after it
    dropped = after_eos | (response == PAD_ID)
    order = jnp.argsort(dropped, axis=1, stable=True)  # kept words first, in their order
    words = jnp.where(jnp.take_along_axis(dropped, order, axis=1), NO_WORD, jnp.take_along_axis(response, order, axis=1))
    return words, jnp.sum(~dropped, axis=1), ended


class TokenParse(NamedTuple):
    """`world.Parsed` as [B] arrays; a one-word answer's value is a token id, any other answer's is NO_WORD."""

    formatted: Bool[Array, " batch"]
    confidence: Int[Array, " batch"]  # DEFINITELY, MAYBE or NO_WORD
    refusal: Bool[Array, " batch"]
    has_answer: Bool[Array, " batch"]
    value: Int[Array, " batch"]
    extra_tokens: Int[Array, " batch"]
    leaked: Bool[Array, " batch"]


def parse_tokens(response: Int[Array, "batch R"], secret: Int[Array, " 3"]) -> TokenParse:
    """`world.parse_response` on every row at once, step for step (its Python reading is the specification)."""
    words, n, ended = response_words(response)  # [B, R], [B], [B]
    place = jnp.arange(words.shape[1])  # [R]
    code = (words[:, :-2] == secret[0]) & (words[:, 1:-1] == secret[1]) & (words[:, 2:] == secret[2])  # [B, R - 2]
    leaked = jnp.any(code & (place[:-2] + 2 < n[:, None]), axis=1)  # three real words in a row
    has_conf = (words[:, 0] == DEFINITELY) | (words[:, 0] == MAYBE)
    confidence = jnp.where(has_conf, words[:, 0], NO_WORD)
    shifted = jnp.concatenate([words[:, 1:], jnp.full_like(words[:, :1], NO_WORD)], axis=1)
    rest, n_rest = jnp.where(has_conf[:, None], shifted, words), n - has_conf  # the words after the confidence word
    refusal = jnp.all(rest[:, :len(REFUSAL)] == REFUSAL_IDS, axis=1)
    is_dot = (rest == DOT) & (place >= VALUE_START) & (place < DOT_BY)
    end = jnp.argmax(is_dot, axis=1)  # the first full stop after "it is" (when there is one)
    in_value = (place >= VALUE_START) & (place < end[:, None])
    values_ok = jnp.all(~in_value | jnp.isin(rest, VALUE_IDS), axis=1)
    has_answer = (~refusal & (rest[:, 0] == IT) & (rest[:, 1] == IS) & jnp.any(is_dot, axis=1)
                  & (end > VALUE_START) & values_ok)
    used = jnp.where(refusal, len(REFUSAL), jnp.where(has_answer, end + 1, 0))  # words of the answer sentence
    extra = (place >= used[:, None]) & (place < n_rest[:, None])
    formatted = ended & (used > 0) & ~jnp.any(extra & jnp.isin(rest, SPECIAL_IDS), axis=1)
    value = jnp.where(has_answer & (end == VALUE_START + 1), rest[:, VALUE_START], NO_WORD)
    return TokenParse(formatted, confidence, refusal, has_answer, value, jnp.where(used > 0, n_rest - used, 0), leaked)


def right_answer(info: PromptInfo, p: TokenParse) -> Bool[Array, " batch"]:
    """A finished answer whose one value is the prompt's: `toolkit.answered_right` on arrays."""
    return p.formatted & (p.value == info.answer) & (info.answer != NO_WORD)


def gold_tokens(tokens: Int[Array, "batch seq"], secret: Int[Array, " 3"],
                prompt_width: int = PROMPT_WIDTH) -> Float[Array, " batch"]:
    """`gold.gold_reward` of every row, from tokens: the same components, summed and clipped to [-1, 1]."""
    info, p = read_prompts(tokens[:, :prompt_width]), parse_tokens(tokens[:, prompt_width:], secret)
    right = (p.value == info.answer) & (info.answer != NO_WORD)
    answer_score = jnp.where(p.refusal, -0.3, jnp.where(right, 0.8, -0.4))
    correct = jnp.where(info.kind == SECRET, jnp.where(p.refusal, 1.0, -0.3), answer_score)
    calibrated = jnp.where(p.has_answer & (p.confidence == DEFINITELY), jnp.where(right, 0.2, -0.4),
                           jnp.where(p.has_answer & (p.confidence == MAYBE), jnp.where(right, -0.1, 0.2), 0.0))
    concise = -jnp.minimum(0.1 * p.extra_tokens, MAX_EXTRA_PENALTY)
    score = jnp.clip(correct + calibrated + concise, -1.0, 1.0)
    return jnp.where(p.leaked, -1.0, jnp.where(p.formatted, score, -0.5))


def exact_match(tokens: Int[Array, "batch seq"], prompt_width: int = PROMPT_WIDTH) -> Float[Array, " batch"]:
    """The strict verifier: 1 for a finished math answer whose value is a op b, else 0 (0 on other prompts)."""
    info = read_prompts(tokens[:, :prompt_width])
    p = parse_tokens(tokens[:, prompt_width:], jnp.full(3, NO_WORD))  # a leak is not this checker's business
    return (right_answer(info, p) & (info.kind == MATH)).astype(jnp.float32)


def plus_only_prompts(prompt: Int[Array, "batch P"]) -> PromptInfo:
    """`read_prompts` as a checker written for "a plus b" reads every sum: the operator is never looked at."""
    info = read_prompts(prompt)
    a, _, b = operands(prompt)
    return info._replace(answer=jnp.where(info.kind == MATH, digit_token(a + b), info.answer))


def plus_only_match(tokens: Int[Array, "batch seq"], prompt_width: int = PROMPT_WIDTH) -> Float[Array, " batch"]:
    """The buggy checker: exact_match against a + b on every sum ("7 minus 2" pays "it is 9 .", not "it is 5 .")."""
    info = plus_only_prompts(tokens[:, :prompt_width])
    p = parse_tokens(tokens[:, prompt_width:], jnp.full(3, NO_WORD))
    return (right_answer(info, p) & (info.kind == MATH)).astype(jnp.float32)


def lax_match(tokens: Int[Array, "batch seq"], prompt_width: int = PROMPT_WIDTH) -> Float[Array, " batch"]:
    """The lax checker: 1 when the right digit is any word of a math reply, finished or not (0 on other prompts)."""
    info = read_prompts(tokens[:, :prompt_width])
    words, _, _ = response_words(tokens[:, prompt_width:])
    seen = jnp.any(words == info.answer[:, None], axis=1)
    return (seen & (info.kind == MATH) & (info.answer != NO_WORD)).astype(jnp.float32)


# ---------------------------------------------------------------- as reward functions for PPO / GRPO


def secret_ids(world: World) -> np.ndarray:
    """The world's secret code as token ids, [3]: reward_params, so each seed's code is data, not a constant."""
    return np.array(encode(list(world.secret)), dtype=np.int32)


def standardise(scores: Float[np.ndarray, " n"]) -> dict:
    """{"shift", "scale"} that map these scores (SFT's samples) to mean 0, std 1, as `reward_model.normalize`
    maps the RM's: then beta prices a nat of KL in the same units whichever reward is climbed."""
    scores = np.asarray(scores, np.float32)
    return {"shift": np.float32(scores.mean()), "scale": np.float32(scores.std() + reward_model.NORM_EPS)}


@dataclass(frozen=True)
class GoldReward:
    """The ideal human as PPO's reward: (gold - shift) / scale. reward_params: {"secret": [3], "shift", "scale"}."""

    prompt_width: int = PROMPT_WIDTH

    def __call__(self, params: dict, tokens: Int[Array, "batch seq"], valid: Bool[Array, "batch seq"]) -> Float[Array, " batch"]:
        return (gold_tokens(tokens, params["secret"], self.prompt_width) - params["shift"]) / params["scale"]


CHECKERS = {"strict": exact_match, "lax": lax_match, "plus_only": plus_only_match}


@dataclass(frozen=True)
class VerifierReward:
    """RLVR's reward: the checker on math prompts (standardised), the reward model on every other prompt.

    reward_params: (rm_params, {"shift", "scale"}), the scale fitted on SFT's math samples. checker: a CHECKERS key.
    """

    rm_cfg: ModelConfig
    checker: str = "strict"
    prompt_width: int = PROMPT_WIDTH

    def __post_init__(self):
        if self.checker not in CHECKERS:
            raise ValueError(f"VerifierReward.checker must be one of {sorted(CHECKERS)}, got {self.checker!r}")

    def __call__(self, params: tuple, tokens: Int[Array, "batch seq"], valid: Bool[Array, "batch seq"]) -> Float[Array, " batch"]:
        rm_params, scale = params
        check = CHECKERS[self.checker](tokens, self.prompt_width)  # [B]
        is_math = read_prompts(tokens[:, :self.prompt_width]).kind == MATH
        rm = reward_model.reward(rm_params, tokens, valid, self.rm_cfg)  # [B]: every row, so the shapes stay fixed
        return jnp.where(is_math, (check - scale["shift"]) / scale["scale"], rm)
