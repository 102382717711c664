"""Observation operators: adjoint and Jacobian identities, the spec language, QC flags."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from interfaces.errors import UsageError
from interfaces.models.lorenz96 import Lorenz96
from interfaces.observations import QC_MISSING, QC_USED, Observations, build_operator

MODEL = Lorenz96()
SPECS = ["all", "every:2", "every:3", "random:0.25", "random:0.5", "indices:0,5,39"]


def _operator(spec, seed=0, std=None):
    return build_operator(spec, MODEL, torch.Generator().manual_seed(seed), std, climatology=MODEL.climatology(200))


@settings(max_examples=40, deadline=None)
@given(spec=st.sampled_from(SPECS), seed=st.integers(0, 10_000), members=st.integers(1, 5))
def test_linear_operator_adjoint_identity(spec, seed, members):
    """<H x, y> = <x, H^T y> for the matrix, the gather and the autograd adjoint."""
    op = _operator(spec, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(members, 40, generator=g, dtype=torch.float64)
    y = torch.randn(members, op.n_obs, generator=g, dtype=torch.float64)
    lhs = (op(x) * y).sum()
    assert torch.allclose(lhs, (x * op.adjoint(y)).sum(), rtol=1e-12)
    assert torch.allclose(lhs, (x * (y @ op.matrix())).sum(), rtol=1e-12)
    flat = x.clone().requires_grad_(True)
    (vjp,) = torch.autograd.grad(op.apply(flat), flat, grad_outputs=y)
    assert torch.allclose(vjp, op.adjoint(y), atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(spec=st.sampled_from(["arctan+" + s for s in SPECS] + SPECS), seed=st.integers(0, 10_000))
def test_jacobian_matches_finite_differences(spec, seed):
    """The autograd Jacobian of every operator agrees with central differences (Taylor test)."""
    op = _operator(spec, seed)
    g = torch.Generator().manual_seed(seed)
    x = MODEL.climatology(5)[seed % 5]
    dx = torch.randn(40, generator=g, dtype=torch.float64)
    J = op.jacobian(x)
    if op.linear:
        assert torch.allclose(J, op.matrix())
    eps = 1e-5
    fd = (op(x[None] + eps * dx) - op(x[None] - eps * dx))[0] / (2 * eps)
    assert torch.allclose(J @ dx, fd, rtol=1e-6, atol=1e-8)


def test_spec_language_sizes_and_defaults():
    assert _operator("all").n_obs == 40
    assert _operator("every:4").n_obs == 10
    assert _operator("random:0.25").n_obs == 10
    assert torch.equal(_operator("random:0.25", seed=3).index, _operator("random:0.25", seed=3).index)
    assert torch.all(_operator("all").std == 1.0)
    assert torch.all(_operator("all", std="0.5").std == 0.5)
    arctan = _operator("arctan+every:2")
    assert not arctan.linear and arctan.n_obs == 20 and torch.all(arctan.std == 0.05)
    values = arctan(MODEL.climatology(50))
    assert values.abs().max() < math.pi / 2


@pytest.mark.parametrize("spec,fragment", [
    ("random:0", "fraction in (0, 1]"), ("random:1.5", "fraction in (0, 1]"), ("random:x", "fraction"),
    ("every:0", "positive integer"), ("every:-2", "positive integer"), ("nope", "valid kinds"),
    ("sqrt+all", "valid transforms"), ("all@q", "unknown variable"), ("indices:40", "grid-point indices"),
])
def test_bad_specs_name_the_problem(spec, fragment):
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        _operator(spec)


@pytest.mark.parametrize("std", ["0", "-1", "nan", "abc", "y=1"])
def test_bad_obs_std(std):
    with pytest.raises(UsageError):
        _operator("all", std=std)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.5, -2.0, math.nan, math.inf, -math.inf]), min_size=1, max_size=30))
def test_non_finite_values_are_flagged_and_removed(values):
    obs = Observations.from_values(torch.tensor(values), 1.0)
    finite = torch.isfinite(obs.values)
    assert torch.equal(obs.qc == QC_MISSING, ~finite)
    assert torch.equal(obs.used, obs.qc == QC_USED)
    assert torch.isfinite(obs.select(obs.used).values).all()


def test_subset_restricts_every_attribute():
    op = _operator("arctan+every:2")
    mask = torch.arange(op.n_obs) % 3 == 0
    sub = op.subset(mask)
    x = MODEL.climatology(3)
    assert torch.allclose(sub(x), op(x)[:, mask])
    assert torch.equal(sub.locations, op.locations[mask]) and sub.n_obs == int(mask.sum())
