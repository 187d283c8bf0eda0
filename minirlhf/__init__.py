"""minirlhf: RLHF from scratch in JAX, small enough to learn on a laptop CPU.

Stages, in the order the course runs them: world/gold (the toy task and the ideal human) ->
transformer/sampling -> pretrain -> sft -> preferences/reward_model -> ppo -> dpo -> best_of_n ->
evaluation; pipeline runs them all (`python -m minirlhf run`).
"""
import ctypes


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks for reuse instead of handing them back to the OS.

    XLA:CPU allocates one scratch buffer per call (tens of MB for the training step here) and frees it
    afterwards. glibc returns any block above 32 MB to the OS at once, so every step starts on fresh pages:
    at the bench size, some 12,800 page faults a step against a few hundred with this call, and a step about a
    third slower (medians of three runs each; jax 0.10, 2 cores).
    Applies to the whole process (torch included), so the library never calls it at import: the command line,
    the notebooks' setup and the benchmark call it before they train. Returns False where there is no glibc.
    """
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False

