"""The judge's verdict read one slot early, as if the shift of token_logprobs applied."""
import jax

from minirlhf import transformer
from minirlhf.cai import BAD_ID, GOOD_ID

EXERCISE, HINT = "verdict_logprobs", "no shift, since nothing follows"


def verdict_logprobs(params, tokens, valid, cfg):
    logits, _ = transformer.forward(params, tokens, valid, cfg)
    logp = jax.nn.log_softmax(logits[:, -2], axis=-1)  # shifted by one, as token_logprobs shifts
    return logp[:, GOOD_ID], logp[:, BAD_ID]
