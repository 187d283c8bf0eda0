"""log pi_sft + r / beta without subtracting log Z: the weights do not sum to one."""
EXERCISE, HINT = "log_weights", "normalise: subtract log Z"


def log_weights(logprobs, rewards, beta):
    if not beta > 0:
        raise ValueError("beta must be > 0")
    return logprobs + rewards / beta
