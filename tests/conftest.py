"""Shared test settings: the compilation cache, and a fixed, small set of hypothesis examples."""
# jax's persistent compilation cache (minirlhf/compile_cache.py), the same one every entry point uses: the
# user's folder (~/.cache/minirlhf/xla), or wherever MINIRLHF_COMPILE_CACHE (off or a PATH) says. A second
# `python -m pytest` reads back the steps the first compiled; a cache hit is the executable a fresh compile would
# build, so no number changes (tests/test_compile_cache.py checks a run warm, cold and off). The processes the
# tests start (the CLI runs, the grader's workers, the sharding child, the notebooks' kernels) inherit the
# setting through the environment. A clean machine, like CI's, starts with an empty folder.
from minirlhf.compile_cache import enable_compile_cache  # imports jax, which compiles nothing yet

enable_compile_cache()
from hypothesis import HealthCheck, settings  # noqa: E402

# derandomize: the same examples on every run (a property test that fails, fails every time);
# no deadline: the first example of a jitted function includes its compile.
settings.register_profile(
    "minirlhf", max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("minirlhf")

# The tests train, like the command line does: keep freed memory for reuse (see the function's docstring).
import minirlhf  # noqa: E402

minirlhf.keep_freed_memory()
