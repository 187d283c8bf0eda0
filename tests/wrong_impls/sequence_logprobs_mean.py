"""A sequence's log-prob as the MEAN of its tokens' log-probs."""
from minirlhf import transformer
from minirlhf.data import response_mask
from minirlhf.ops import masked_mean, token_logprobs

EXERCISE, HINT = "sequence_logprobs", "averaged"


def sequence_logprobs(params, tokens, valid, cfg):
    logits, _ = transformer.forward(params, tokens, valid, cfg)
    return masked_mean(token_logprobs(logits, tokens), response_mask(valid), axis=1)
