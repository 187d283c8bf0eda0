"""The judge's verdict read as raw logits, not normalised."""
from minirlhf import transformer
from minirlhf.cai import BAD_ID, GOOD_ID

EXERCISE, HINT = "verdict_logprobs", "raw logits are log-probabilities only up to a constant"


def verdict_logprobs(params, tokens, valid, cfg):
    logits, _ = transformer.forward(params, tokens, valid, cfg)
    logp = logits[:, -1]  # not normalised over the vocabulary
    return logp[:, GOOD_ID], logp[:, BAD_ID]
