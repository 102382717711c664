"""Steady-state protocol statistics: the trend test's false-positive rate and power on synthetic
AR(1) series, the AR(1)-corrected interval's coverage, Holm against a hand computation, and the
tables' stationarity, pair and seed fields."""

import math

import numpy as np
import pytest
from scipy import stats

from interfaces import aggregate, statistics, suites
from interfaces.errors import UsageError


def ar1(n, a, rng):
    x = np.empty(n)
    x[0] = rng.normal() / math.sqrt(1 - a * a)
    noise = rng.normal(size=n)
    for i in range(1, n):
        x[i] = a * x[i - 1] + noise[i]
    return x


def rmse_series(n, a, rng, trend=0.0):
    """A positive 'RMSE' series around 0.1: log-AR(1) noise, times exp(trend * cycle / n)."""
    return 0.1 * np.exp(0.1 * ar1(n, a, rng) + trend * np.arange(n) / n)


@pytest.mark.parametrize("n, a", [(60, 0.5), (150, 0.8)])
def test_stationary_series_are_flagged_near_the_nominal_rate(n, a):
    rng = np.random.default_rng(1)
    flagged = np.mean([statistics.trend_test(rmse_series(n, a, rng))["p"] < statistics.ALPHA for _ in range(400)])
    assert flagged < 0.10
    # Without the AR(1) correction, the same series are flagged far more often.
    naive = []
    for _ in range(200):
        y = np.log(rmse_series(n, a, rng))
        naive.append(stats.linregress(np.arange(n), y).pvalue < 0.05)
    assert np.mean(naive) > 2 * flagged


def test_a_trended_series_is_flagged():
    rng = np.random.default_rng(2)
    # RMSE halves over the window (a method still spinning up; the issue measured 3x falls).
    tests = [statistics.trend_test(rmse_series(150, 0.8, rng, trend=-0.7)) for _ in range(200)]
    assert np.mean([t["p"] < statistics.ALPHA for t in tests]) > 0.9
    assert np.median([t["relative_change"] for t in tests]) == pytest.approx(math.expm1(-0.7 * 149 / 150), abs=0.05)


def test_ar1_interval_covers_the_true_mean_at_the_nominal_rate():
    rng = np.random.default_rng(3)
    covered, naive, sizes = [], [], []
    for _ in range(500):
        x = 1.0 + ar1(200, 0.8, rng)
        mean, half, n_eff = statistics.series_mean_interval(x)
        covered.append(abs(mean - 1.0) <= half)
        naive.append(abs(mean - 1.0) <= 1.96 * x.std(ddof=1) / math.sqrt(len(x)))
        sizes.append(n_eff)
    assert np.median(sizes) == pytest.approx(200 / 9, rel=0.25)  # (1 - 0.8) / (1 + 0.8) of the cycles
    assert 0.91 <= np.mean(covered) <= 0.98
    assert np.mean(naive) < 0.7  # the white-noise interval would be far too narrow


def test_pooled_interval_of_a_rows_seeds_covers_at_the_nominal_rate_where_per_run_fits_overshoot():
    """Ten 200-cycle runs of one strongly autocorrelated system (a = 0.95, as the sphere's latent
    3D-Var): the row's interval with one pooled AR(1) fit covers the true mean about 95 % of the
    time at about the true width; combining each run's own fit made it several times too wide."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(5)
    a, runs, n = 0.95, 10, 200
    true_half = 1.96 * math.sqrt((1 + a) / (1 - a) / (runs * n))  # unit-variance AR(1)
    covered, widths, per_run = [], [], []
    for _ in range(300):
        noise = rng.normal(size=(runs, n + 300)) * math.sqrt(1 - a * a)
        xs = lfilter([1.0], [1.0, -a], noise, axis=1)[:, 300:]  # past the start's transient
        est, half, total = statistics.pooled_mean_interval(list(xs))
        covered.append(abs(xs.mean()) <= half)
        widths.append(half)
        per_run.append(math.sqrt(sum(statistics.series_mean_interval(x)[1] ** 2 for x in xs)) / runs)
    assert 0.91 <= np.mean(covered) <= 0.985
    assert np.median(widths) == pytest.approx(true_half, rel=0.2)
    assert np.median(per_run) > 2 * true_half
    assert math.isnan(statistics.pooled_mean_interval([[1.0, 2.0]])[1])  # too short to fit
    assert statistics.pooled_mean_interval([[0.3] * 50, [0.3] * 50])[1] == pytest.approx(0.0, abs=1e-12)  # constant


def test_holm_matches_a_hand_computation():
    # Sorted: 0.01*4 = 0.04; 0.03*3 = 0.09; 0.04*2 = 0.08 -> 0.09 (monotone); 0.2*1 = 0.2.
    assert statistics.holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    adjusted = statistics.holm([0.5, float("nan"), 0.01])  # nan is not part of the family
    assert adjusted[0] == pytest.approx(0.5) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)
    assert statistics.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1


def rec(method, seed, rmse, series=None):
    r = {"job": {"model": "m", "model_options": {}, "obs": "all", "cycles": 5, "method": method, "seed": seed},
         "status": "complete", "summary": {"analysis_rmse": rmse, "members": 1, "burn_in": 1}}
    if series is not None:
        r["series"] = series
    return r


def test_several_pairs_are_holm_adjusted_against_a_hand_computation():
    a = [1.0, 2.0, 3.0, 4.0]
    b = [1.3, 2.1, 3.4, 4.2]  # a - b = -0.3, -0.1, -0.4, -0.2
    c = [0.9, 2.2, 2.8, 4.3]  # a - c = 0.1, -0.2, 0.2, -0.3
    records = [rec(m, s, v) for m, vals in (("a", a), ("b", b), ("c", c)) for s, v in enumerate(vals)]
    (table,) = aggregate.aggregate(records, [("a", "b"), ("a", "c")])
    ab, ac = table["pairs"]
    d = np.array(a) - np.array(b)
    t = d.mean() / (d.std(ddof=1) / 2)
    p_ab = 2 * stats.t.sf(abs(t), 3)
    e = np.array(a) - np.array(c)
    p_ac = 2 * stats.t.sf(abs(e.mean() / (e.std(ddof=1) / 2)), 3)
    assert ab["p"] == pytest.approx(p_ab) and ac["p"] == pytest.approx(p_ac)
    assert ab["p_holm"] == pytest.approx(min(1, 2 * p_ab))  # the smaller p: times 2
    assert ac["p_holm"] == pytest.approx(min(1, max(2 * p_ab, p_ac)))
    assert ab["analysis_rmse_diff_ci95"] == pytest.approx(stats.t.ppf(1 - 0.05 / 4, 3) * d.std(ddof=1) / 2)
    assert ab["analysis_rmse_diff_ci95_unadjusted"] == pytest.approx(stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2)
    from interfaces import report

    assert "Holm-adjusted" in report.paired_lines(table) and "1 − 0.05/2" in report.paired_lines(table)


def test_rows_are_marked_when_their_windows_trend():
    rng = np.random.default_rng(4)
    records = ([rec("flat", s, 0.1, rmse_series(120, 0.5, rng)) for s in range(3)]
               + [rec("falling", s, 0.1, rmse_series(120, 0.5, rng, trend=-0.7)) for s in range(3)]
               + [rec("unknown", s, 0.1) for s in range(3)]
               + [rec("short", s, 0.1, rmse_series(6, 0.5, rng)) for s in range(3)])
    (table,) = aggregate.aggregate(records)
    rows = {r["method"]: r for r in table["rows"]}
    assert rows["flat"]["stationary"] is True and rows["falling"]["stationary"] is False
    assert rows["falling"]["nonstationary_seeds"] == 3 and rows["falling"]["trend_relative_change"] < -0.3
    assert rows["unknown"]["stationary"] is None  # no per-cycle series: not tested, not claimed
    assert rows["short"]["stationary"] is False  # too short to test: not shown stationary
    assert 0 < rows["flat"]["analysis_rmse_time_ci95"] < 0.1
    assert table["scored_seeds"] == [0, 1, 2]
    from interfaces import report

    assert "Not stationary: falling" in report.table_notes(table) and "Untestable: short" in report.table_notes(table)
    assert "| falling | 1 | 3 | **no** (3/3 seeds) |" in report.markdown_table(table)


def test_suite_seeds_old_count_new_lists_and_overlap_refused():
    assert suites.block_seeds({"model": "m"}, {"name": "s", "seeds": 3}) == ([0, 1, 2], [])
    assert suites.block_seeds({"model": "m", "scoring_seeds": [5, 6]}, {"name": "s", "tuning_seeds": [100]}) == ([5, 6], [100])
    with pytest.raises(UsageError, match=r"seeds 2, 3 are both scoring and tuning seeds"):
        suites.block_seeds({"model": "m", "scoring_seeds": [1, 2, 3], "tuning_seeds": [2, 3, 9]}, {"name": "s"})
    with pytest.raises(UsageError, match="tuning_seeds must be a count K .* or a list of integers"):
        suites.block_seeds({"model": "m", "tuning_seeds": ["x"]}, {"name": "s"})
    assert suites.parse_seeds("4,7", "--seeds") == [4, 7] and suites.parse_seeds("2", "--seeds") == [0, 1]


def test_the_suites_score_and_tune_on_disjoint_seeds():
    for name in ("quick", "full"):
        suite = suites.load_suite(name)
        for block in suite["experiments"]:
            scoring, tuning = suites.block_seeds(suites._merge(suite.get("defaults", {}), block), suite)
            assert scoring and not set(scoring) & set(tuning)


def test_the_suite_document_opens_with_every_tables_pairs_and_their_reading():
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    b = [1.5, 2.6, 3.4, 4.5, 5.6]  # b behind a on every seed: a − b about −0.52
    c = [1.1, 1.9, 3.2, 3.8, 5.1]  # level with a
    records = [rec(m, s, v) for m, vals in (("a", a), ("b", b), ("c", c)) for s, v in enumerate(vals)]
    tables = aggregate.aggregate(records, [("a", "b"), ("a", "c")])
    from interfaces import report

    overview = report.pairs_overview(tables)
    name = tables[0]["name"]
    assert overview.startswith("## The pairs, table by table")
    assert f"| {name} | a − b | -0.52 ± " in overview
    assert overview.rstrip().endswith("| not separated |") and "| a ahead |" in overview
    assert report.pairs_overview(aggregate.aggregate(records)) == ""  # no pairs asked: no section
    assert "Read: a ahead of b; not separated: a and c." in report.paired_lines(tables[0])


def test_a_starred_method_pairs_every_one_of_its_rows():
    """'losda*:letkf' pairs each LO-SDA row (here its own and a variant's) with the LETKF's own
    row, in one Holm family with the other pairs; plain 'losda:letkf' pairs only its own row."""
    from interfaces.suites import parse_pairs

    def row(method, seed, rmse, members=1, **options):
        r = rec(method, seed, rmse)
        r["job"]["members"], r["job"]["method_options"] = members, options
        return r

    records = ([row("losda", s, v) for s, v in enumerate([1.0, 1.1, 1.2, 1.3])]
               + [row("losda", s, v, train_data="truth") for s, v in enumerate([0.5, 0.6, 0.7, 0.8])]
               + [row("letkf", s, v, members=20) for s, v in enumerate([0.8, 0.9, 1.0, 1.1])]
               + [row("letkf", s, v, members=6) for s, v in enumerate([1.8, 1.9, 2.0, 2.1])])
    protocol = {aggregate.group_name(records[0]["job"]): {"base_jobs": {
        aggregate.sweep_job_hash(r["job"]) for r in records
        if not r["job"]["method_options"] and r["job"]["members"] in (1, 20)}}}
    starred = parse_pairs("losda*:letkf", {"losda", "letkf"})
    (table,) = aggregate.aggregate(records, starred, protocol)
    pairs = {(p["a"], p["b"]): p for p in table["pairs"]}
    assert set(pairs) == {("losda", "letkf (members=20)"),
                          ("losda (train_data=truth)", "letkf (members=20)")}
    assert pairs[("losda (train_data=truth)", "letkf (members=20)")]["analysis_rmse_diff"] == pytest.approx(-0.3)
    assert all("p_holm" in p for p in table["pairs"])  # one family of two
    (plain,) = aggregate.aggregate(records, parse_pairs("losda:letkf", None), protocol)
    assert [(p["a"], p["b"]) for p in plain["pairs"]] == [("losda", "letkf (members=20)")]
    with pytest.raises(UsageError, match="not compared"):
        parse_pairs("enkf*:letkf", {"losda", "letkf"})
