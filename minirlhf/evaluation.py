"""Measuring a policy: gold reward, answer rate, what the responses do (per prompt kind), and exact KL to a reference.

These are the course's ground truth. Gold reward, answer rate and behaviour read decoded samples, each behaviour
through ONE reading of what a response does (`answered_right`, `refused`, ...); the KL is computed exactly over
the (small) vocabulary at every sampled position,

    KL(pi || pi_ref) = E_{y ~ pi} sum_t sum_v pi(v | x, y_<t) (log pi(v | x, y_<t) - log pi_ref(v | x, y_<t)),

so it has no estimator noise beyond the choice of sampled prefixes.

A cut-off response (no EOS within the response width) is not an answer: it is never "right", never
"says definitely", never "refused", never "rambles", because the gold reward scores any unfinished reply -0.5
whatever its words. A leak counts wherever the code appears, finished or not, as gold charges it either way.
"""
from __future__ import annotations

from functools import partial

import jax
import numpy as np

from minirlhf import transformer
from minirlhf.data import PROMPT_WIDTH, decode_responses, response_mask
from minirlhf.gold import gold_reward
from minirlhf.ops import exact_kl, masked_sum
from minirlhf.sampling import sample
from minirlhf.tokenizer import EOS_ID, PAD_ID
from minirlhf.world import PROMPT_KINDS, Parsed, Prompt, World, parse_response

def gold_scores(world: World, prompts: list[Prompt], tokens: np.ndarray) -> np.ndarray:
    """The ideal human's score of every sampled response, [B]."""
    return np.array([gold_reward(p, w, ended, world.secret) for p, (w, ended) in zip(prompts, decode_responses(tokens))])


def answered(world: World, tokens: np.ndarray) -> np.ndarray:
    """Does each response take the assistant's format at all? [B] bools."""
    return np.array([parse_response(w, ended, world.secret).formatted for w, ended in decode_responses(tokens)])


# ---------------------------------------------------------------- what a response does (one definition each)


def answered_right(prompt: Prompt, p: Parsed) -> bool:
    """A finished assistant answer whose value is the prompt's (math, color)."""
    return p.formatted and p.answer == prompt.answer


def says_definitely(p: Parsed) -> bool:
    """A finished assistant reply that opens with "definitely"."""
    return p.formatted and p.confidence == "definitely"


def refused(p: Parsed) -> bool:
    """A finished reply that is the refusal sentence."""
    return p.formatted and p.refusal


def leaked(p: Parsed) -> bool:
    """The secret code appears in the reply, finished or not."""
    return p.leaked


def rambles(p: Parsed) -> bool:
    """A finished assistant reply that goes on after its answer sentence (what gold's "concise" charges)."""
    return p.formatted and p.extra_tokens > 0


def parse_all(world: World, tokens: np.ndarray) -> list[tuple[list[str], Parsed]]:
    """Each response's words (before EOS) and its reading by the answer grammar."""
    return [(w, parse_response(w, ended, world.secret)) for w, ended in decode_responses(np.asarray(tokens))]


def standard_error(values) -> float:
    """The standard error of the mean of `values`: std / sqrt(n) (numpy's std, ddof = 0)."""
    return float(np.std(values) / np.sqrt(len(values)))


def share(flags) -> float:
    """The mean of a list of bools, or nan for an empty list (a share of nothing is unknown, not 0)."""
    return float(np.mean(flags)) if len(flags) else float("nan")


def behaviour(world: World, prompts: list[Prompt], tokens: np.ndarray) -> dict[str, float]:
    """Rates of what the responses do. "answerable": math and color prompts; "secret": the secret prompts."""
    read = parse_all(world, tokens)
    ask = [(q, p) for q, (_, p) in zip(prompts, read) if q.kind != "secret"]
    secret = [p for q, (_, p) in zip(prompts, read) if q.kind == "secret"]
    return {"answer_rate": share([p.formatted for _, p in read]),
            "right_answerable": share([answered_right(q, p) for q, p in ask]),
            "refuses_answerable": share([refused(p) for _, p in ask]),
            "refuses_secret": share([refused(p) for p in secret]),
            "leaks": share([leaked(p) for p in secret]),  # of secret prompts: only they ask for the code
            "definitely": share([says_definitely(p) for _, p in read]),
            "words": float(np.mean([len(w) for w, _ in read]))}


def per_kind(world: World, prompts: list[Prompt], tokens: np.ndarray) -> dict[str, dict[str, float]]:
    """What the responses do, kind by kind: {kind: {n, gold, gold_se, right, refuses, leaks, definitely, rambles}}.

    One overall gold number hides which kind moved; split by kind, a policy that refuses sums (safe in the eyes
    of a reward model that cannot check them) shows up as math's "refuses". "right" is for math and color, whose
    prompts have a value; "leaks" for secret, the prompts that ask for the code. A kind with no prompt is left out.
    gold_se: the standard error of the mean gold, std / sqrt(n).
    """
    read = [p for _, p in parse_all(world, tokens)]
    gold = gold_scores(world, prompts, tokens)  # [B]
    out = {}
    for kind in PROMPT_KINDS:
        rows = [i for i, q in enumerate(prompts) if q.kind == kind]
        if not rows:
            continue
        g, parsed = gold[rows], [(prompts[i], read[i]) for i in rows]
        d = {"n": len(rows), "gold": float(g.mean()), "gold_se": standard_error(g)}
        if kind == "secret":
            d["leaks"] = share([leaked(p) for _, p in parsed])
        else:
            d["right"] = share([answered_right(q, p) for q, p in parsed])
        d["refuses"] = share([refused(p) for _, p in parsed])
        d["definitely"] = share([says_definitely(p) for _, p in parsed])
        d["rambles"] = share([rambles(p) for _, p in parsed])
        out[kind] = d
    return out


@partial(jax.jit, static_argnames=("cfg", "temperature"))
def sequence_kl(params: dict, ref_params: dict, tokens, valid, cfg: transformer.ModelConfig, temperature: float = 1.0):
    """Exact KL(pi || pi_ref) summed over each response's positions, [B] (nats)."""
    logits, _ = transformer.forward(params, tokens, valid, cfg)
    ref_logits, _ = transformer.forward(ref_params, tokens, valid, cfg)
    kl = exact_kl(logits, ref_logits, temperature)  # [B, T], aligned with the token it predicts
    return masked_sum(kl, response_mask(valid), axis=1)


def evaluate(params: dict, cfg: transformer.ModelConfig, world: World, prompts: list[Prompt], key: jax.Array,
             ref_params: dict | None = None, tokens: np.ndarray | None = None) -> dict:
    """Gold reward, answer rate and (with ref_params) KL to the reference, on prompts' samples.

    Pass `tokens` to score given responses (e.g. best-of-n picks) instead of sampling new ones.
    """
    if len(prompts) == 0:
        raise ValueError("evaluate got no prompts: pass at least one (a mean over none is NaN)")
    if tokens is not None and len(tokens) != len(prompts):
        raise ValueError(f"evaluate got {len(tokens)} rows of tokens for {len(prompts)} prompts: one row per prompt")
    transformer.check_params(params, cfg, "evaluate's model")
    if ref_params is not None:
        transformer.check_params(ref_params, cfg, "evaluate's reference model")
    if tokens is None:
        gen = sample(params, cfg, prompts, key)
        tokens, valid = np.asarray(gen.tokens), np.asarray(gen.valid)
    else:
        valid = _valid_from_tokens(tokens)
    gold = gold_scores(world, prompts, tokens)
    result = {"gold_reward": float(gold.mean()), "gold_se": standard_error(gold),
              "answer_rate": float(answered(world, tokens).mean()), "gold": gold}
    if ref_params is not None:
        kl = sequence_kl(params, ref_params, jax.device_put(tokens), jax.device_put(valid), cfg)
        result["kl_to_sft"] = float(np.mean(kl))
    result["tokens"], result["valid"] = tokens, valid
    return result


def _valid_from_tokens(tokens: np.ndarray) -> np.ndarray:
    """Valid mask for the shared layout: prompt non-pad, response up to and including EOS."""
    tokens = np.asarray(tokens)
    valid = tokens != PAD_ID
    resp = tokens[:, PROMPT_WIDTH:]
    after_eos = np.cumsum(resp == EOS_ID, axis=1) - (resp == EOS_ID) > 0
    valid[:, PROMPT_WIDTH:] &= ~after_eos
    return valid


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k draws is right) for a prompt where c of n samples were right, without bias
    (Chen et al. 2021, eq. 1): 1 - C(n - c, k) / C(n, k), written as a product so large n does not overflow."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a right sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))
