"""Checks for scoring tokens: token log-probs (the shift), masked means, the LM loss, sampling one token."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from minirlhf.grade.checks.common import (MODEL_BATCH, TINY, Mistake, check_for, expect, expect_traceable, f32, fast_forward,
                                    mask_of, np_log_softmax, np_token_logprobs, reference, response_layout, rng,
                                    tiny_params)
from minirlhf.sampling import SampleConfig


@check_for("token_logprobs")
def check_token_logprobs(fn) -> str:
    r = rng(3)
    logits = f32(r.normal(0, 2, size=(3, 6, 5)))
    tokens = r.integers(0, 5, size=(3, 6)).astype(np.int32)
    cases = [("3 sequences of 6 tokens, temperature 1", logits, tokens, 1.0),
             ("the same with temperature 0.7", logits, tokens, 0.7),
             ("sequences of a single token (nothing is predicted: all 0)", logits[:, :1], tokens[:, :1], 1.0)]
    for case, lg, tok, temp in cases:
        got = fn(jnp.asarray(lg), jnp.asarray(tok), temp)
        want = reference("token_logprobs")(jnp.asarray(lg), jnp.asarray(tok), temp)

        def tlp(temperature=temp, shift=True, pad_end=False, transform=lambda lp: lp, raw=False, axis=-1):
            def out():
                scaled = lg / temperature
                logp = scaled if raw else np_log_softmax(scaled, axis=axis)
                if not shift:
                    return transform(np.take_along_axis(logp, tok[..., None], axis=-1)[..., 0])
                picked = np.take_along_axis(logp[:, :-1], tok[:, 1:, None], axis=-1)[..., 0]
                return transform(np.pad(picked, ((0, 0), (0, 1)) if pad_end else ((0, 0), (1, 0))))
            return out

        expect(got, want, case, [
            Mistake("no shift: the logits at position t predict the token at t + 1, so score tokens[:, 1:] with "
                    "logits[:, :-1], and give position 0 (nothing predicts it) a 0", tlp(shift=False)),
            Mistake("shifted, but not aligned with the tokens: the log-prob of tokens[:, t] must sit at index t, "
                    "so pad the FRONT (position 0), not the end", tlp(pad_end=True)),
            Mistake("forgot the temperature: divide the logits by it before log_softmax", tlp(temperature=1.0)),
            Mistake("multiplied by the temperature: divide the logits by it", tlp(temperature=1 / temp)),
            Mistake("returned probabilities: return log-probabilities (jax.nn.log_softmax)", tlp(transform=np.exp)),
            Mistake("picked raw logits: normalise them with log_softmax over the vocabulary first", tlp(raw=True)),
            Mistake("log_softmax over the wrong axis: normalise over the vocabulary, the last axis", tlp(axis=1)),
        ])
    expect_traceable(lambda lg, tok: fn(lg, tok, 0.7), (jnp.asarray(logits), jnp.asarray(tokens)))
    return f"{len(cases)} cases"


@check_for("masked_mean")
def check_masked_mean(fn) -> str:
    r = rng(4)
    x = f32(r.normal(1.0, 2.0, size=(3, 5)))
    mask = r.random((3, 5)) < 0.6
    mask[0, :2] = True
    mask[2] = False  # a row with nothing masked in
    cases = [("a 1-D array", x[0], mask[0], None), ("a [3, 5] array, axis=1, one row fully masked out", x, mask, 1),
             ("a [3, 5] array, axis=None", x, mask, None), ("a [3, 5] array, axis=0", x, mask, 0)]
    for case, xs, m, axis in cases:
        got = fn(jnp.asarray(xs), jnp.asarray(m), axis)
        want = reference("masked_mean")(jnp.asarray(xs), jnp.asarray(m), axis)
        total = lambda: np.where(m, xs, 0.0).sum(axis=axis)
        count = m.sum(axis=axis)
        with np.errstate(all="ignore"):
            nan_mean = total() / count
        expect(got, want, case, [
            Mistake("divided by the total number of entries: divide by the number of True entries of the mask",
                    lambda: total() / (xs.size if axis is None else xs.shape[axis])),
            Mistake("returned the masked sum: divide it by the number of True entries", total),
            Mistake("ignored the mask: only entries where mask is True count", lambda: xs.mean(axis=axis)),
            Mistake("where the mask has no True entry the mean must be 0, not NaN: divide by max(count, 1)",
                    lambda: nan_mean),
            Mistake("ignored `axis`: reduce only along it (axis=None: over everything)",
                    lambda: np.where(m, xs, 0.0).sum() / max(m.sum(), 1)),
        ])
    expect_traceable(lambda xs, m: fn(xs, m, 1), (jnp.asarray(x), jnp.asarray(mask)))
    return f"{len(cases)} cases"


def _lm_batches() -> list[tuple[str, dict]]:
    """A pretraining batch (right-padded documents) and an SFT batch (prompt + response)."""
    r = rng(5)
    T = TINY.max_len
    tokens = r.integers(3, TINY.vocab_size, size=(MODEL_BATCH, T)).astype(np.int32)
    lengths = np.array([T, 9, 5, 12])
    valid = np.arange(T)[None, :] < lengths[:, None]
    tokens[~valid] = 0
    pretrain = {"tokens": tokens, "valid": valid, "loss_mask": valid & (np.arange(T) > 0)[None, :]}
    sft_tokens, sft_valid = response_layout(6, [4, 2, 1, 4], prompt_width=10, response_width=4, vocab=TINY.vocab_size)
    sft = {"tokens": sft_tokens, "valid": sft_valid, "loss_mask": mask_of(sft_valid, 10)}
    return [("a pretraining batch (right-padded documents)", pretrain),
            ("an SFT batch (loss mask = the response only)", sft)]


@check_for("lm_loss")
def check_lm_loss(fn) -> str:
    params = tiny_params()
    batches = _lm_batches()
    with fast_forward() as forward:
        for case, batch in batches:
            jbatch = {k: jnp.asarray(v) for k, v in batch.items()}
            got = fn(params, jbatch, TINY)
            want = reference("lm_loss")(params, jbatch, TINY)
            logits = np.asarray(forward(params, jbatch["tokens"], jbatch["valid"], TINY).logits)
            lp = np_token_logprobs(logits, batch["tokens"])

            def loss(mask, logp=lp, sign=-1.0, reduce="mean"):
                def out():
                    total = np.where(mask, logp, 0.0).sum()
                    nll = sign * (total / mask.sum() if reduce == "mean" else total)
                    return nll, {"perplexity": np.exp(nll)}
                return out

            everything = np.ones_like(batch["valid"])
            expect(got, want, case, [
                Mistake("forgot the loss mask: average only over batch['loss_mask'] (no padding, no position 0, "
                        "and in SFT no prompt)", loss(everything)),
                Mistake("averaged over batch['valid']: use batch['loss_mask'], which also leaves out position 0 "
                        "and, in SFT, the prompt", loss(batch["valid"])),
                Mistake("the sign is flipped: the loss is the NEGATIVE mean log-likelihood", loss(batch["loss_mask"],
                                                                                                  sign=1.0)),
                Mistake("summed the log-probs: average them over the loss mask", loss(batch["loss_mask"], reduce="sum")),
                Mistake("no shift: score each token with the logits of the position BEFORE it (token_logprobs does "
                        "this)", loss(batch["loss_mask"], logp=np_token_logprobs(logits, batch["tokens"], shift=False))),
            ])
        jbatch = {k: jnp.asarray(v) for k, v in batches[1][1].items()}
        expect_traceable(lambda p, b: fn(p, b, TINY), (params, jbatch))
    return f"{len(batches)} batches"


def _np_sample(logits, gumbel, temperature, top_k, noise_first=False, greedy=False, lp_from_topk=False,
               lp_unscaled=False, ignore_top_k=False):
    scaled = logits / temperature
    logp = np_log_softmax(logits if lp_unscaled else scaled)
    pick = scaled.copy()
    if top_k is not None and not ignore_top_k:
        kth = np.sort(scaled, axis=-1)[:, -top_k][:, None]
        pick = np.where(scaled >= kth, scaled, -1e9)
        if lp_from_topk:
            logp = np_log_softmax(pick)
    if noise_first:
        pick = np.where(pick > -1e8, (logits + gumbel) , -1e9)
        token = pick.argmax(-1)
    else:
        token = (pick if greedy else pick + gumbel).argmax(-1)
    return token, np.take_along_axis(logp, token[:, None], axis=-1)[:, 0]


@check_for("sample_token")
def check_sample_token(fn) -> str:
    r = rng(7)
    logits = f32(r.normal(0, 2, size=(6, 7)))
    gumbel = f32(r.gumbel(size=(6, 7)))
    cases = [("temperature 1", SampleConfig(temperature=1.0)), ("temperature 0.5", SampleConfig(temperature=0.5)),
             ("temperature 1.5, top_k=2", SampleConfig(temperature=1.5, top_k=2))]
    for case, cfg in cases:
        got = fn(jnp.asarray(logits), jnp.asarray(gumbel), cfg)
        want = reference("sample_token")(jnp.asarray(logits), jnp.asarray(gumbel), cfg)
        s = lambda **kw: (lambda: _np_sample(logits, gumbel, cfg.temperature, cfg.top_k, **kw))
        expect(got, want, case, [
            Mistake("greedy: add the Gumbel noise before the argmax; argmax(logits / T + g) is a sample",
                    s(greedy=True)),
            Mistake("add the noise to the temperature-scaled logits: argmax(logits / temperature + gumbel)",
                    s(noise_first=True)),
            Mistake("ignored top_k: only the k most likely tokens may be drawn", s(ignore_top_k=True)),
            Mistake("the log-prob is under the full temperature-scaled distribution, before top-k removes tokens",
                    s(lp_from_topk=True)),
            Mistake("the log-prob must come from the temperature-scaled logits, the distribution that was sampled",
                    s(lp_unscaled=True)),
        ], name="(token, logprob)")
    expect_traceable(lambda lg, g: fn(lg, g, cases[2][1]), (jnp.asarray(logits), jnp.asarray(gumbel)),
                     caller="generate (inside lax.scan)")
    return f"{len(cases)} cases"
