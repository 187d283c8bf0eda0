"""SL-CAI's revision step samples read as if the rows were sample-major ([k, N]) instead of prompt i's k rows in a row."""
import numpy as np

EXERCISE, HINT = "best_critiqued", "reshape to [N, k, ...], not [k, N, ...]"


def best_critiqued(tokens, valid, scores, k):
    n = len(scores) // k
    tokens, valid, scores = (np.swapaxes(x.reshape(k, n, *x.shape[1:]), 0, 1) for x in (tokens, valid, np.asarray(scores)))
    best = np.argmax(scores, axis=1)
    rows = np.arange(n)
    return {"tokens": tokens[rows, best], "valid": valid[rows, best], "first_tokens": tokens[:, 0],
            "first_valid": valid[:, 0], "critique_first": scores[:, 0], "critique_revised": scores[rows, best],
            "changed": best != 0}
