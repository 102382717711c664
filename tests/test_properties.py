"""Property tests: the run file round trip, metric invariants and observation-operator
properties that tests/test_metrics.py and tests/test_observations.py do not already cover."""

import dataclasses
import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from interfaces import io, metrics
from interfaces.harness import Experiment, Recorder, setup
from interfaces.models.lorenz96 import Lorenz96
from interfaces.observations import QC_MEANINGS, Observations, build_operator

SETTINGS = settings(max_examples=20, deadline=None)
MODEL = Lorenz96()
CYCLES = 7


@pytest.fixture(scope="module")
def setups():
    """One Setup per ensemble size (building one costs a truth run; examples reuse them)."""
    return {m: setup(Experiment(method="free", cycles=CYCLES, members=m)) for m in (1, 3)}


def fill(s, rec, n, rng):
    """Random content for the first ``n`` cycles of a Recorder (NaN-free fields, random QC)."""
    shape = (n, *s.model.state_shape)
    rec.background[:n], rec.analysis[:n] = rng.normal(size=shape), rng.normal(size=shape) * 1e3
    if rec.ensemble:
        rec.background_spread[:n], rec.analysis_spread[:n] = rng.random(shape), rng.random(shape)
    rec.obs_qc[:n] = rng.integers(0, len(QC_MEANINGS.split()), size=rec.obs_qc[:n].shape)
    for name in ("obs_used", "omb_rms", "diag_cost"):
        for k in range(n):
            rec.scalar(name, k, float(rng.normal()))
    rec.completed = n


@SETTINGS
@given(members=st.sampled_from([1, 3]), n=st.integers(1, CYCLES), seed=st.integers(0, 2**32 - 1),
       state=st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.floats(allow_nan=False), st.text()), max_size=4))
def test_run_file_round_trip(setups, tmp_path_factory, members, n, seed, state):
    """What build_dataset writes, load_resume and open_run read back bit for bit."""
    s = setups[members]
    rng = np.random.default_rng(seed)
    rec = Recorder(s)
    fill(s, rec, n, rng)
    resume = {"ensemble": rng.normal(size=(members, *s.model.state_shape)),
              "forecast_rng": rng.integers(0, 256, 5056).astype(np.uint8),
              "method_rng": rng.integers(0, 256, 5056).astype(np.uint8),
              "method_state": pickle.dumps(state)}
    path = tmp_path_factory.mktemp("rt") / "run.nc"
    io.write_run(path, s, rec, resume)

    back = Recorder(s)
    got = io.load_resume(path, s, back)
    assert got["completed"] == back.completed == n
    for name in ("background", "analysis", "background_spread", "analysis_spread"):
        a, b = getattr(rec, name), getattr(back, name)
        assert (a is None and b is None) or np.array_equal(a[:n], b[:n]), name
    assert np.array_equal(rec.obs_qc[:n], back.obs_qc[:n])
    for name, values in rec.scalars.items():
        assert np.array_equal(values[:n], back.scalars[name][:n]), name
    assert np.array_equal(got["ensemble"].numpy(), resume["ensemble"])
    assert np.array_equal(got["forecast_rng"].numpy(), resume["forecast_rng"])
    assert np.array_equal(got["method_rng"].numpy(), resume["method_rng"])
    assert got["method_state"] == state
    with io.open_run(path) as ds:
        assert np.array_equal(ds["truth"].values, s.truth[1 : n + 1].numpy())
        assert np.array_equal(ds["obs_value"].values, s.obs_values[:n].numpy())
        assert ds.attrs["status"] == ("complete" if n == CYCLES else "partial") and ds.sizes["time"] == n


@SETTINGS
@given(spec=st.sampled_from(["all", "every:3", "random:0.3", "indices:0,7,39", "indices:5"]),
       seed=st.integers(0, 10_000), missing=st.floats(0.0, 1.0), std=st.floats(0.1, 3.0))
def test_observations_file_round_trip(setups, tmp_path_factory, spec, seed, missing, std):
    """A run file read back with load_observations gives the same network, values and flags."""
    s = setups[1]
    op = build_operator(spec, s.model, torch.Generator().manual_seed(seed), std)
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(CYCLES, op.n_obs, generator=g, dtype=torch.float64)
    values[torch.rand(values.shape, generator=g) < missing] = float("nan")
    qc = torch.zeros(values.shape, dtype=torch.int8)
    qc[~torch.isfinite(values)] = 1
    s2 = dataclasses.replace(s, operator=op, obs_values=values, obs_std=op.std, obs_qc=qc)
    rec = Recorder(s2)
    rec.completed = CYCLES
    path = tmp_path_factory.mktemp("obs") / "run.nc"
    io.write_run(path, s2, rec)
    got, v, sd, q = io.load_observations(path, s.model, CYCLES, None)
    assert torch.equal(got.index, op.index) and torch.equal(got.weight, op.weight)
    assert torch.equal(got.channels, op.channels) and torch.equal(got.locations, op.locations)
    assert torch.equal(sd, op.std) and torch.equal(q, qc)
    assert torch.equal(torch.isnan(v), torch.isnan(values)) and torch.equal(v.nan_to_num(), values.nan_to_num())
    x = s.climatology[:4]
    assert torch.equal(got(x), op(x))


# --- metrics ----------------------------------------------------------------------------------

def fields(seed, n=5, size=12):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, size, generator=g, dtype=torch.float64)
    b = torch.randn(n, size, generator=g, dtype=torch.float64)
    w = torch.rand(size, generator=g, dtype=torch.float64) + 0.1
    return a, b, w / w.mean()


@SETTINGS
@given(seed=st.integers(0, 10_000), shift=st.floats(-100, 100), c=st.floats(-10, 10).filter(lambda x: abs(x) > 1e-3))
def test_rmse_is_a_translation_invariant_scale_equivariant_metric(seed, shift, c):
    a, b, w = fields(seed)
    r = metrics.rmse(a, b, w)
    assert torch.all(r >= 0) and torch.equal(metrics.rmse(a, a, w), torch.zeros_like(r))
    assert torch.allclose(r, metrics.rmse(b, a, w))
    assert torch.allclose(r, metrics.rmse(a + shift, b + shift, w), rtol=1e-9, atol=1e-9 * (1 + abs(shift)))
    assert torch.allclose(metrics.rmse(c * a, c * b, w), abs(c) * r, rtol=1e-10)


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_mse_is_bias_squared_plus_error_variance(seed):
    a, b, w = fields(seed)
    e = a - b
    bias = metrics.bias(a, b, w)
    var = metrics.per_variable((e - bias) ** 2, w, False)
    assert torch.allclose(metrics.rmse(a, b, w) ** 2, bias ** 2 + var, rtol=1e-10, atol=1e-12)


@SETTINGS
@given(seed=st.integers(0, 10_000), shift=st.floats(-50, 50), c=st.floats(0.01, 10))
def test_spread_and_crps_invariances(seed, shift, c):
    ens, truth, w = fields(seed, n=6)
    truth = truth[0]
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(seed))
    sp, crps = metrics.spread(ens, w), metrics.crps_fair(ens, truth, w)
    assert torch.allclose(metrics.spread(ens[perm], w), sp) and torch.allclose(metrics.crps_fair(ens[perm], truth, w), crps)
    assert torch.allclose(metrics.spread(ens + shift, w), sp, atol=1e-9 * (1 + abs(shift)))
    assert torch.allclose(metrics.crps_fair(ens + shift, truth + shift, w), crps, atol=1e-9 * (1 + abs(shift)))
    assert torch.allclose(metrics.spread(c * ens, w), c * sp) and torch.allclose(metrics.crps_fair(c * ens, c * truth, w), c * crps)
    same = ens[:1].expand(6, -1)
    assert torch.allclose(metrics.spread(same, w), torch.zeros(1, dtype=torch.float64))
    # a collapsed ensemble scores its absolute error
    assert torch.allclose(metrics.crps_fair(same, truth, w), metrics.per_variable((ens[0] - truth).abs(), w, False))


@SETTINGS
@given(seed=st.integers(0, 10_000), n=st.integers(0, 30))
def test_departures_rms(seed, n):
    g = torch.Generator().manual_seed(seed)
    y, hx = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    if n == 0:
        assert math.isnan(metrics.departures_rms(y, hx))
        return
    assert metrics.departures_rms(y, y) == 0.0
    assert math.isclose(metrics.departures_rms(y, hx), float(metrics.rmse(y, hx, torch.ones(n, dtype=torch.float64))[0]), rel_tol=1e-12)


# --- observation operators --------------------------------------------------------------------

SPECS = ["all", "every:2", "every:5", "random:0.3", "indices:3,4,30", "arctan+every:3", "arctan+random:0.5"]


def operator(spec, seed):
    return build_operator(spec, MODEL, torch.Generator().manual_seed(seed), None, climatology=MODEL.climatology(200))


@SETTINGS
@given(spec=st.sampled_from(SPECS), seed=st.integers(0, 10_000), members=st.integers(1, 6))
def test_operators_act_member_by_member(spec, seed, members):
    op = operator(spec, seed)
    x = torch.randn(members, 40, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y = op(x)
    assert y.shape == (members, op.n_obs) and y.dtype == torch.float64
    for i in range(members):
        assert torch.equal(y[i], op(x[i : i + 1])[0])


@SETTINGS
@given(spec=st.sampled_from(SPECS), seed=st.integers(0, 10_000))
def test_subsets_compose(spec, seed):
    """Restricting twice equals restricting once to the combined selection, for Observations too."""
    op = operator(spec, seed)
    g = torch.Generator().manual_seed(seed)
    m1 = torch.rand(op.n_obs, generator=g) < 0.7
    m2 = torch.rand(int(m1.sum()), generator=g) < 0.6
    both = m1.clone()
    both[m1] = m2
    x = MODEL.climatology(3)
    assert torch.equal(op.subset(m1).subset(m2)(x), op.subset(both)(x))
    assert torch.equal(op.subset(m1).subset(m2).std, op.std[both])
    obs = Observations.from_values(torch.randn(op.n_obs, generator=g, dtype=torch.float64), op.std)
    assert torch.equal(obs.select(m1).select(m2).values, obs.values[both])


@SETTINGS
@given(points=st.lists(st.integers(0, 39), min_size=1, max_size=40, unique=True), frac=st.floats(0.01, 1.0),
       seed=st.integers(0, 10_000))
def test_selections_observe_exactly_their_points(points, frac, seed):
    op = operator("indices:" + ",".join(map(str, points)), seed)
    x = torch.randn(2, 40, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert torch.equal(op(x), x[:, points]) and torch.equal(op.locations[:, 0], torch.tensor(points, dtype=torch.float64))
    rnd = operator(f"random:{frac}", seed)
    picked = rnd.index[:, 0]
    assert rnd.n_obs == max(1, round(frac * 40)) and len(set(picked.tolist())) == rnd.n_obs
    assert torch.all(picked[1:] > picked[:-1]) and torch.equal(picked, operator(f"random:{frac}", seed).index[:, 0])
    assert torch.all(rnd.weight == 1) and torch.all(rnd(x) == x[:, picked])
