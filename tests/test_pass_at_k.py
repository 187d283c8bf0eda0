"""pass@k (Chen et al. 2021): the unbiased estimator against counting every k-subset of the n samples."""
from itertools import combinations

import numpy as np
import pytest

from minirlhf.evaluation import pass_at_k


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_is_the_share_of_k_subsets_that_hold_a_right_sample(n):
    for c in range(n + 1):
        right = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = [any(s) for s in combinations(right, k)]
            assert pass_at_k(n, c, k) == pytest.approx(np.mean(subsets), abs=1e-12), (
                f"n={n}, c={c}, k={k}: pass@k is the share of the C(n, k) subsets with a right sample in them")


def test_pass_at_k_edge_cases():
    assert pass_at_k(10, 0, 5) == 0.0, "no right sample: no subset passes"
    assert pass_at_k(10, 10, 1) == 1.0 and pass_at_k(10, 1, 10) == 1.0, "k = n draws all the samples"
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3), "pass@1 is the share of right samples, c / n"
    assert 0.0 < pass_at_k(1000, 1, 64) < 1.0, "large n must not overflow"
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)  # k > n: the estimator needs n >= k samples
