"""Shared test settings: hypothesis runs a fixed, small set of examples, so CI is deterministic and fast."""
from hypothesis import HealthCheck, settings

# derandomize: the same examples on every run (a property test that fails, fails every time);
# no deadline: the first example of a jitted function includes its compile.
settings.register_profile(
    "minirlhf", max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("minirlhf")

# The tests train, like the command line does: keep freed memory for reuse (see the function's docstring).
import minirlhf  # noqa: E402

minirlhf.keep_freed_memory()
