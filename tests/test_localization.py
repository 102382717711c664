"""Gaspari-Cohn localisation: its defining properties, and the weights used by the LETKF."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from baselines.localization import gaspari_cohn, observation_weights
from interfaces.models.lorenz96 import Lorenz96

half_widths = st.floats(0.1, 50.0)


@given(half_widths)
def test_one_at_zero(c):
    assert gaspari_cohn(torch.zeros(1), c).item() == 1.0


@given(half_widths, st.floats(2.0, 100.0))
def test_zero_from_twice_the_half_width(c, factor):
    assert gaspari_cohn(torch.tensor([factor * c], dtype=torch.float64), c).item() == 0.0


@given(half_widths, st.lists(st.floats(0.0, 3.0), min_size=2, max_size=50))
def test_monotone_and_bounded(c, rs):
    d = torch.tensor(sorted(rs), dtype=torch.float64) * c
    w = gaspari_cohn(d, c)
    assert torch.all((w >= 0) & (w <= 1))
    assert torch.all(w[1:] <= w[:-1] + 1e-15)


def test_continuous_at_the_branch_points():
    c = 1.7
    for r in (1.0, 2.0):
        left, right = gaspari_cohn(torch.tensor([r * c * (1 - 1e-9), r * c * (1 + 1e-9)], dtype=torch.float64), c)
        assert abs(left - right) < 1e-7
    assert abs(gaspari_cohn(torch.tensor([c], dtype=torch.float64), c).item() - 5 / 24) < 1e-12  # known value at r = 1


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-20.0, 20.0), min_size=2, max_size=40), half_widths)
def test_correlation_matrix_is_positive_semidefinite(xs, c):
    # GC is a correlation function in up to three dimensions, so on any point set of a line
    # the matrix of its values is positive semidefinite.
    x = torch.tensor(xs, dtype=torch.float64)
    C = gaspari_cohn(x[:, None] - x[None, :], c)
    assert torch.linalg.eigvalsh(C).min() >= -1e-10 * len(xs)


def test_sparse_weights_equal_dense():
    model = Lorenz96()
    locs = torch.arange(0, 40, 3, dtype=torch.float64).unsqueeze(1)
    dense = observation_weights(model, locs, 4.0)
    sparse = observation_weights(model, locs, 4.0, chunk=7, sparse_above=0)
    assert sparse.layout == torch.sparse_coo
    torch.testing.assert_close(sparse.to_dense(), dense, rtol=0, atol=0)
    assert dense[5, 0].item() == gaspari_cohn(torch.tensor([5.0]), 4.0).item()
