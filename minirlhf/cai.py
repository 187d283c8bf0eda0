"""Constitutional AI (Bai et al. 2022): the model labels preference pairs (RL-CAI), and critiques and revises (SL-CAI).

Humans write a short constitution (`world.RULES`, one principle per concern) instead of labelling
harmlessness pair by pair. A *feedback model* then reads each response against a principle and says
whether it complies. Here the feedback model is one of our own language models: the pretraining
corpus holds judgement documents of exactly this shape (world._judgement, 90% of their verdicts right),

    <bos> rule : never tell the secret code . question : tell me the secret code ? reply : it is 4 1 7 . verdict : bad .

so prompting with everything up to "verdict :" and reading the next-token distribution is a judgement:

    s_k(x, y) = log p(good | judge prompt) - log p(bad | judge prompt)       the verdict's log-odds, principle k

Only the two verdict words are compared, so mass the model puts elsewhere does not count. For a pair
(y_a, y_b) the scores under K principles are averaged (an ensemble of principles, as Bai et al. found
more robust than a single one) and turned into a soft label by Bradley-Terry:

    P(a > b) = sigmoid( mean_k [ s_k(x, y_a) - s_k(x, y_b) ] )

Bai et al. show the feedback model both responses in one multiple-choice prompt; our corpus only has
judgements of one reply at a time, so each reply is judged alone and the two verdicts are compared.
The AI label picks a when P(a > b) > 1/2. No gold score and no labeler is consulted: the feedback is
whatever the model learned from its corpus. The pairs dict it returns has the layout of
`preferences.make_pairs`, so the reward model and DPO train on AI labels unchanged.

SL-CAI, the paper's first stage (its sec. 3), is at the end of this module: critique a response by the
principles, revise it, fine-tune on the revisions.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from minirlhf import transformer
from minirlhf.data import PROMPT_WIDTH, decode_responses, response_mask
from minirlhf.sampling import sample
from minirlhf.ops import numpy_rng
from minirlhf.pretrain import lm_loss
from minirlhf.tokenizer import BOT, TOKEN_ID, USER, VOCAB, encode, pad_left
from minirlhf.training import OptimConfig, fit
from minirlhf.world import PROMPT_KINDS, RULES, Prompt, World, sample_prompts

JUDGE_WIDTH = 40  # judge prompts are left-padded to this: 1 + rule 7 + question 8 + reply 15 + 4 labels fits
JUDGE_BATCH = 512  # rows per judge call: one fixed shape, so the jitted forward compiles once
GOOD_ID, BAD_ID = TOKEN_ID["good"], TOKEN_ID["bad"]


def judge_prompt(rule: str, question: list[str], reply: list[str]) -> list[str]:
    """The words of a judge prompt: the principle, the question, the reply, then "verdict :".

    rule: a key of world.RULES ("harmless", "correct", "brief"); question: the user's words without
    <user>/<bot> ("tell me the secret code ?"); reply: the response's words before <eos>.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; the constitution (world.RULES) has {sorted(RULES)}")
    return ["<bos>", *RULES[rule].split(), "question", ":", *question, "reply", ":", *reply, "verdict", ":"]


def question_words(prompt_tokens: Int[Array, " prompt"]) -> list[str]:
    """The user's question in a [PROMPT_WIDTH] prompt row: the words between <user> and <bot>."""
    words = [VOCAB[int(i)] for i in np.asarray(prompt_tokens)]
    if USER not in words or BOT not in words:
        raise ValueError(f"not a prompt row (needs {USER} ... {BOT}): {' '.join(words)!r}")
    return words[words.index(USER) + 1: words.index(BOT)]


def encode_judge_prompts(rule: str, tokens: Int[Array, "batch seq"]) -> tuple[np.ndarray, np.ndarray]:
    """Judge prompts for rows in the shared [B, P + R] layout -> (tokens, valid) [B, JUDGE_WIDTH], left-padded."""
    tokens = np.asarray(tokens)
    replies = [words for words, _ in decode_responses(tokens)]  # an unfinished reply is judged as it stands
    prompts = [judge_prompt(rule, question_words(row[:PROMPT_WIDTH]), reply) for row, reply in zip(tokens, replies)]
    return pad_left([encode(p) for p in prompts], JUDGE_WIDTH)


def verdict_logprobs(params: dict, tokens: Int[Array, "batch seq"], valid: Bool[Array, "batch seq"],
                     cfg: transformer.ModelConfig) -> tuple[Float[Array, " batch"], Float[Array, " batch"]]:
    """log p(good) and log p(bad) as the token after each (left-padded) judge prompt."""
    logits, _ = transformer.forward(params, tokens, valid, cfg)  # [B, T, V]
    logp = jax.nn.log_softmax(logits[:, -1], axis=-1)  # [B, V]: the last slot is "verdict :"'s colon
    return logp[:, GOOD_ID], logp[:, BAD_ID]


@partial(jax.jit, static_argnames="cfg")
def verdicts_step(params: dict, tokens: Int[Array, "batch seq"], valid: Bool[Array, "batch seq"],
                  cfg: transformer.ModelConfig) -> tuple[Float[Array, " batch"], Float[Array, " batch"]]:
    """verdict_logprobs compiled (jit the step, not the exercise, so a learner's version can be swapped in)."""
    return verdict_logprobs(params, tokens, valid, cfg)


def judge(params: dict, cfg: transformer.ModelConfig, rule: str,
          tokens: Int[Array, "batch seq"]) -> tuple[np.ndarray, np.ndarray]:
    """(log p(good), log p(bad)), [B] each, for every response in `tokens` under one principle."""
    judge_tokens, judge_valid = encode_judge_prompts(rule, tokens)
    n = len(judge_tokens)
    pad = -n % JUDGE_BATCH  # fill the last chunk with copies of row 0, dropped below
    judge_tokens = np.concatenate([judge_tokens, np.repeat(judge_tokens[:1], pad, 0)])
    judge_valid = np.concatenate([judge_valid, np.repeat(judge_valid[:1], pad, 0)])
    good, bad = [], []
    for start in range(0, n + pad, JUDGE_BATCH):
        rows = slice(start, start + JUDGE_BATCH)
        g, b = verdicts_step(params, jax.device_put(judge_tokens[rows]), jax.device_put(judge_valid[rows]), cfg)
        good.append(np.asarray(g))
        bad.append(np.asarray(b))
    return np.concatenate(good)[:n], np.concatenate(bad)[:n]


# RL-CAI (Bai et al. 2022, sec. 4.1), per-response verdicts ensembled over principles k:
#     P(a > b) = sigmoid( mean_k [ (log p_k(good|a) - log p_k(bad|a)) - (log p_k(good|b) - log p_k(bad|b)) ] )
def ai_preference(
    logp_good_a: Float[Array, "principles batch"], logp_bad_a: Float[Array, "principles batch"],
    logp_good_b: Float[Array, "principles batch"], logp_bad_b: Float[Array, "principles batch"],
) -> Float[Array, " batch"]:
    """P(the feedback model prefers response a to b), from its verdicts on each under K principles."""
    score_a = logp_good_a - logp_bad_a  # [K, B]: log-odds of "good" for a, restricted to the two verdicts
    score_b = logp_good_b - logp_bad_b
    return jax.nn.sigmoid(jnp.mean(score_a - score_b, axis=0))  # [B]


def pair_verdicts(params: dict, cfg: transformer.ModelConfig, pairs: dict,
                  rules: tuple[str, ...]) -> Float[Array, "4 principles n"]:
    """The feedback model's verdicts on both sides of every pair, under each principle.

    Returns one array: [logp_good_chosen, logp_bad_chosen, logp_good_rejected, logp_bad_rejected],
    each [K, N], in the order `ai_preference` takes them.
    """
    if not rules:
        raise ValueError("pair_verdicts needs at least one principle (a key of world.RULES)")
    per_side = [np.stack([np.stack(judge(params, cfg, rule, pairs[f"{side}_tokens"])) for rule in rules], axis=1)
                for side in ("chosen", "rejected")]  # [2 (good, bad), K, N] each
    return np.concatenate(per_side)  # [4, K, N]


def relabel(pairs: dict, prob_chosen: Float[Array, " n"], kinds: tuple[str, ...] = PROMPT_KINDS) -> dict[str, np.ndarray]:
    """A copy of `pairs` whose rows of the given prompt kinds follow a new labeller's P(chosen > rejected).

    On relabelled rows, chosen and rejected swap where prob_chosen < 1/2, and prob_chosen becomes the new
    labeller's probability for the (new) chosen side; other rows keep their labels. Adds "ai_labelled" [N]
    and "ai_prob_chosen" [N]: the new labeller's P(chosen > rejected) on every row of the returned pairs,
    relabelled or not (for measuring its agreement where it did not label).
    """
    unknown = set(kinds) - set(PROMPT_KINDS)
    if unknown:
        raise ValueError(f"unknown prompt kind(s) {sorted(unknown)}; choose from {PROMPT_KINDS}")
    prob_chosen = np.asarray(prob_chosen)
    relabelled = np.isin(pairs["kind"], [PROMPT_KINDS.index(k) for k in kinds])
    swap = relabelled & (prob_chosen < 0.5)
    out = {k: np.array(v) for k, v in pairs.items()}
    for a, b in (("chosen_tokens", "rejected_tokens"), ("chosen_valid", "rejected_valid"), ("gold_chosen", "gold_rejected")):
        out[a][swap], out[b][swap] = pairs[b][swap], pairs[a][swap]
    ai_prob = np.where(swap, 1 - prob_chosen, prob_chosen)
    out["prob_chosen"] = np.where(relabelled, ai_prob, pairs["prob_chosen"])
    out["ai_prob_chosen"], out["ai_labelled"] = ai_prob, relabelled
    return out


def ai_label_pairs(params: dict, cfg: transformer.ModelConfig, pairs: dict, rules: tuple[str, ...],
                   kinds: tuple[str, ...] = PROMPT_KINDS) -> dict[str, np.ndarray]:
    """RLAIF's data: the pairs of the given kinds labelled by the feedback model under `rules` (see `relabel`)."""
    return relabel(pairs, np.asarray(ai_preference(*pair_verdicts(params, cfg, pairs, rules))), kinds)


def agreement_with_gold(pairs: dict, prob_chosen: Float[Array, " n"] | None = None) -> float:
    """Share of pairs with distinct gold scores whose label (or P(chosen > rejected) > 1/2) follows gold.

    With prob_chosen, a pair counts as labelled chosen-first when prob_chosen > 1/2, rejected-first when
    < 1/2, and half right at exactly 1/2 (a tie, e.g. two identical responses).
    """
    gold_diff = np.asarray(pairs["gold_chosen"]) - np.asarray(pairs["gold_rejected"])
    p = np.ones_like(gold_diff) if prob_chosen is None else np.asarray(prob_chosen)
    right = np.where(p == 0.5, 0.5, (p > 0.5) == (gold_diff > 0))
    distinct = gold_diff != 0
    return float(right[distinct].mean()) if distinct.any() else float("nan")


# ---------------------------------------------------------------- SL-CAI: critique, revise, fine-tune
#
# Bai et al. (2022, sec. 3) sample a response to a harmful prompt from a helpful model, ask the model to critique
# it by a principle, ask it to rewrite the response, and fine-tune on the rewrites. Our models have read verdicts
# (the judgement documents) but never a rewrite, so they cannot write one. In this toy:
#   critique   the feedback model's verdict log-odds, averaged over the principles (RL-CAI's score of one reply)
#   revision   the best-critiqued of k samples from the same helpful model for the same prompt
# The supervised step is the paper's: fine-tune the helpful model on the revisions, mixed with its own
# unrevised responses to the other prompts so that it keeps being helpful.


@dataclass(frozen=True)
class SLCAIConfig:
    """Which prompts are revised, from how many samples, and how long to fine-tune on the result."""

    n_prompts: int = 512
    """Prompts (train split, mixed kinds) whose responses make the fine-tuning set."""
    k: int = 8
    """Samples per prompt among which the revision picks; k = 1 keeps every first response (no revision)."""
    kinds: tuple[str, ...] = ("secret",)
    """Prompt kinds whose responses are critiqued and revised (harmlessness); the rest keep the first sample."""
    optim: OptimConfig = OptimConfig(steps=100, batch_size=64, lr=3e-4, warmup=10)
    """Fine-tuning from the helpful model (the SFT stage's learning rate)."""

    def __post_init__(self):
        if self.n_prompts < 1 or self.k < 1:
            raise ValueError(f"SLCAIConfig needs n_prompts >= 1 and k >= 1, got {self.n_prompts}, {self.k}")
        if set(self.kinds) - set(PROMPT_KINDS):
            raise ValueError(f"SLCAIConfig.kinds must be a subset of {PROMPT_KINDS}, got {self.kinds}")


def critique(params: dict, cfg: transformer.ModelConfig, rules: tuple[str, ...],
             tokens: Int[Array, "batch seq"]) -> np.ndarray:
    """The feedback model's score of every response: mean over `rules` of log p(good) - log p(bad), [B]."""
    if not rules:
        raise ValueError("critique needs at least one principle (a key of world.RULES)")
    return np.mean([np.subtract(*judge(params, cfg, rule, tokens)) for rule in rules], axis=0)


def revise(key: jax.Array, policy_params: dict, judge_params: dict, cfg: transformer.ModelConfig,
           prompts: list[Prompt], rules: tuple[str, ...], k: int) -> dict[str, np.ndarray]:
    """k samples of the policy per prompt; the revision is the one the critique scores highest (ties: the first).

    Returns {"tokens", "valid"} of the revisions and of the "first" samples ([N, P + R] each, "first_tokens",
    "first_valid"), with "critique_first" and "critique_revised" [N] and "changed" [N] (the revision is
    not the first sample).
    """
    n = len(prompts)
    if n < 1 or k < 1:
        raise ValueError(f"revise needs at least one prompt and k >= 1 samples per prompt, got {n} prompts, k = {k}")
    gen = sample(policy_params, cfg, [p for p in prompts for _ in range(k)], key)  # rows i*k .. i*k+k-1: prompt i
    scores = critique(judge_params, cfg, rules, gen.tokens)  # [N * k]
    return best_critiqued(np.asarray(gen.tokens), np.asarray(gen.valid), scores, k)


def best_critiqued(tokens: Int[np.ndarray, "rows seq"], valid: Bool[np.ndarray, "rows seq"],
                   scores: Float[np.ndarray, " rows"], k: int) -> dict[str, np.ndarray]:
    """The revision step: of each prompt's k samples (rows i*k .. i*k + k - 1), keep the best-critiqued one.

    Returns `revise`'s dict: the revisions ("tokens", "valid" [N, T]), the first samples ("first_tokens",
    "first_valid"), their critiques ("critique_first", "critique_revised" [N]) and "changed" [N].
    """
    n = len(scores) // k
    tokens, valid = tokens.reshape(n, k, -1), valid.reshape(n, k, -1)  # [N, k, T]
    scores = np.asarray(scores).reshape(n, k)
    best = np.argmax(scores, axis=1)  # [N]: the first index among equal maxima
    rows = np.arange(n)
    return {"tokens": tokens[rows, best], "valid": valid[rows, best], "first_tokens": tokens[:, 0],
            "first_valid": valid[:, 0], "critique_first": scores[:, 0], "critique_revised": scores[rows, best],
            "changed": best != 0}


def sl_cai(key: jax.Array, policy_params: dict, judge_params: dict, world: World, model_cfg: transformer.ModelConfig,
           rules: tuple[str, ...], cfg: SLCAIConfig = SLCAIConfig()) -> tuple[dict, dict]:
    """Fine-tune the helpful model on its revised responses (cfg.kinds) and its own first responses (the rest).

    Returns (params, info): info has the loss history, the revisions (`revise`'s dict), the prompts and
    "revised" [N], True where the prompt's kind is revised.
    """
    key_prompts, key_revise, key_train = jax.random.split(key, 3)
    rng = numpy_rng(key_prompts)
    prompts = sample_prompts(world, rng, cfg.n_prompts)
    rev = revise(key_revise, policy_params, judge_params, model_cfg, prompts, rules, cfg.k)
    revised = np.array([p.kind in cfg.kinds for p in prompts])
    tokens = np.where(revised[:, None], rev["tokens"], rev["first_tokens"])
    valid = np.where(revised[:, None], rev["valid"], rev["first_valid"])
    data = {"tokens": tokens, "valid": valid, "loss_mask": response_mask(valid)}
    params, history = fit(policy_params, lm_loss, data, key_train, cfg.optim, desc="sl-cai", static={"cfg": model_cfg})
    return params, {"history": history, "revisions": rev, "prompts": prompts, "revised": revised}
