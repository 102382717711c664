"""`da-harness diagnose`: innovation diagnostics of a run file. In the linear-Gaussian testbed a
large ETKF is near the Kalman filter, where Desroziers' relations hold: the estimates must find
the observation-error std the run used, the background's true error and its spread, and an
innovation ratio of 1. A background trusted too much must show up; bad input is one line."""

import json

import pytest

from interfaces import archive
from interfaces.diagnostics import innovation_statistics


def run(cli, out, *args):
    code, text, err = cli("run", "--out", str(out), "--json", "--no-progress", *args)
    assert code == 0, err
    return json.loads(text)


@pytest.fixture(scope="module")
def near_kalman(tmp_path_factory):
    from interfaces.cli import main

    out = tmp_path_factory.mktemp("diagnose") / "etkf.nc"
    assert main(["run", "--model", "linear", "--method", "enkf", "--members", "200", "--obs", "every:2",
                 "--cycles", "600", "--burn-in", "50", "--seed", "3", "--out", str(out), "--no-progress"]) == 0
    return out


def test_desroziers_relations_hold_for_a_filter_near_the_kalman_filter(near_kalman):
    stats = innovation_statistics(near_kalman)
    assert stats["cycles_scored"] == 550 and stats["burn_in"] == 50 and stats["members"] == 200
    (row,) = stats["variables"].values()
    assert row["n"] == 550 * 5
    assert row["sigma_o_assumed"] == pytest.approx(1.0)
    assert row["sigma_o_desroziers"] == pytest.approx(row["sigma_o_assumed"], rel=0.08)
    assert row["sigma_b_desroziers"] == pytest.approx(row["sigma_b_true"], rel=0.15)
    assert row["sigma_b_spread"] == pytest.approx(row["sigma_b_true"], rel=0.1)
    assert row["innovation_ratio"] == pytest.approx(1.0, abs=0.12)
    # E[d_b^2] = HBH^T + R, seen through the true background error.
    assert row["omb_rms"] ** 2 == pytest.approx(row["sigma_b_true"] ** 2 + row["sigma_o_assumed"] ** 2, rel=0.12)


@pytest.mark.parametrize("scale, trusted", [(0.01, "background"), (100.0, "observations")])
def test_a_misweighted_b_shows_in_the_estimates(cli, tmp_path, scale, trusted):
    """3D-Var with B = scale x the climatological covariance. Too small a B keeps the background:
    the analysis departures are the background's, so sqrt(E[d_a d_b]) reads far above the true
    observation error and the B it behaved as if it had (sigma_b_desroziers) far below the
    background's real error. Too large a B draws to the observations: the reverse."""
    run(cli, tmp_path / "b.nc", "--model", "linear", "--method", "3dvar", "--set", "b_source=climatology",
        "--set", f"scale={scale}", "--obs", "every:2", "--cycles", "300", "--burn-in", "50", "--seed", "3")
    (row,) = innovation_statistics(tmp_path / "b.nc")["variables"].values()
    if trusted == "background":
        assert row["sigma_o_desroziers"] > 1.3 * row["sigma_o_assumed"]
        assert row["sigma_b_desroziers"] < 0.5 * row["sigma_b_true"]
    else:
        assert row["sigma_o_desroziers"] < 0.5 * row["sigma_o_assumed"]
        assert row["sigma_b_desroziers"] > 1.3 * row["sigma_b_true"]
    assert row["sigma_b_spread"] != row["sigma_b_spread"]  # NaN: one member has no spread


def test_arctan_departures_are_in_radians_through_the_run_files_own_scaling(cli, tmp_path):
    run(cli, tmp_path / "arctan.nc", "--model", "lorenz96", "--method", "letkf", "--members", "20",
        "--obs", "arctan+every:2", "--cycles", "60", "--burn-in", "20", "--seed", "1")
    (row,) = innovation_statistics(tmp_path / "arctan.nc")["variables"].values()
    assert row["sigma_o_assumed"] == pytest.approx(0.05)
    assert 0 < row["oma_rms"] < row["omb_rms"] < 1.0  # radians, analysis closer than background
    assert row["sigma_b_spread"] != row["sigma_b_spread"]  # nonlinear operator: not projected


def test_the_command_prints_a_table_or_json_and_takes_a_burn_in(near_kalman, cli):
    from interfaces import api

    assert api.diagnose(near_kalman, burn_in=500)["cycles_scored"] == 100
    code, text, _ = cli("diagnose", str(near_kalman))
    assert code == 0 and "| x | 2750 |" in text and "Desroziers" in text
    code, text, _ = cli("diagnose", str(near_kalman), "--burn-in", "500", "--json")
    data = json.loads(text)
    assert code == 0 and data["cycles_scored"] == 100 and data["variables"]["x"]["n"] == 500


def test_bad_input_is_one_line_naming_the_file(near_kalman, cli, tmp_path):
    slim = archive.slim(near_kalman, tmp_path / "slim.nc")
    for argv, needle in [((str(slim),), "slim archive copy"), ((str(tmp_path / "absent.nc"),), "cannot read run file"),
                         ((str(near_kalman), "--burn-in", "600"), "leaves no scored cycle")]:
        code, _, err = cli("diagnose", *argv)
        assert code != 0 and needle in err and len(err.strip().splitlines()) == 1


def test_errors_split_by_coverage_against_a_hand_made_case():
    """Background off the truth by 1 at the observed grid points and by 2 elsewhere, analysis by
    0.5 and 3: the split must return exactly those, and the share of points observed."""
    import torch

    from interfaces.diagnostics import error_by_coverage
    from interfaces.harness import build_model
    from interfaces.observations import build_operator
    from interfaces.registry import get_registry

    model = build_model(get_registry(), "lorenz96", {}, None)
    op = build_operator("every:2", model, torch.Generator().manual_seed(0))
    seen = torch.zeros(model.state_shape, dtype=torch.bool)
    seen[op.index.reshape(-1)] = True
    truth = torch.randn(7, *model.state_shape, dtype=torch.float64)
    background = truth + torch.where(seen, 1.0, 2.0)
    analysis = truth - torch.where(seen, 0.5, 3.0)
    (row,) = error_by_coverage(model, op, background, analysis, truth).values()
    assert row["observed_points"] == pytest.approx(0.5)
    assert (row["rmse_b_observed"], row["rmse_b_unobserved"]) == (pytest.approx(1.0), pytest.approx(2.0))
    assert (row["rmse_a_observed"], row["rmse_a_unobserved"]) == (pytest.approx(0.5), pytest.approx(3.0))
    assert error_by_coverage(model, op, background, analysis, None) == {}  # no truth: no split


def test_a_filter_is_closer_to_the_truth_where_it_observes(near_kalman):
    (row,) = innovation_statistics(near_kalman)["coverage"].values()
    assert row["observed_points"] == pytest.approx(0.5)
    assert row["rmse_a_observed"] < row["rmse_a_unobserved"] and row["rmse_a_observed"] < row["rmse_b_observed"]


def test_systematic_error_against_a_hand_made_case():
    """Background = truth + a fixed field of RMS 3 + noise of RMS 4 whose sign alternates by
    cycle (time mean exactly 0): bias 3, RMS error 5, share 9/25. The analysis carries only the
    alternating part: bias 0."""
    import torch

    from interfaces.diagnostics import systematic_error
    from interfaces.harness import build_model
    from interfaces.registry import get_registry

    model = build_model(get_registry(), "lorenz96", {}, None)
    truth = torch.randn(8, *model.state_shape, dtype=torch.float64)
    fixed = torch.where(torch.arange(model.state_shape[0]) % 2 == 0, 3.0, -3.0).double()
    sign = torch.tensor([(-1.0) ** t for t in range(8)], dtype=torch.float64)[:, None]
    background = truth + fixed + 4.0 * sign
    analysis = truth + 0.5 * sign
    (row,) = systematic_error(model, background, analysis, truth).values()
    assert (row["rmse_b"], row["bias_b"], row["bias_share_b"]) == (pytest.approx(5.0), pytest.approx(3.0),
                                                                 pytest.approx(9 / 25))
    assert (row["rmse_a"], row["bias_a"], row["bias_share_a"]) == (pytest.approx(0.5), pytest.approx(0.0, abs=1e-12),
                                                                 pytest.approx(0.0, abs=1e-12))
    assert systematic_error(model, background, analysis, None) == {}  # no truth: nothing to split


def test_a_model_error_shows_as_a_systematic_share(cli, tmp_path):
    """The same LETKF and seed on Lorenz-96, the truth at forcing 8 (perfect model) and at 10
    (the forecast model keeps 8): with a perfect model the time-mean error is sampling noise (2 %
    of the MSE here); with the wrong forcing a lasting bias appears (16 %)."""
    shares = {}
    for forcing in (8, 10):
        out = tmp_path / f"f{forcing}.nc"
        run(cli, out, "--model", "lorenz96", "--method", "letkf", "--members", "20", "--set", "inflation=1.1",
            "--obs", "every:2", "--cycles", "300", "--burn-in", "50", "--seed", "3", "--truth-set", f"forcing={forcing}")
        code, text, _ = cli("diagnose", str(out), "--json")
        assert code == 0
        shares[forcing] = json.loads(text)["systematic"]["x"]["bias_share_b"]
    assert shares[8] < 0.05 and shares[10] > 3 * shares[8]
    code, text, _ = cli("diagnose", str(tmp_path / "f10.nc"))
    assert "| x |" in text and "bias_share_b" in text and "250 scored cycles" in text


def test_a_filter_near_the_kalman_filter_has_no_systematic_error(near_kalman):
    (row,) = innovation_statistics(near_kalman)["systematic"].values()
    assert row["bias_share_b"] < 0.05 and row["bias_share_a"] < 0.05
    assert row["rmse_a"] < row["rmse_b"]
