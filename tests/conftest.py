"""Shared test settings: hypothesis runs a fixed, small set of examples, so CI is deterministic and fast."""
from hypothesis import HealthCheck, settings

# derandomize: the same examples on every run (a property test that fails, fails every time);
# no deadline: the first example of a jitted function includes its compile.
settings.register_profile(
    "minirlhf", max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("minirlhf")
