"""Pairs of rows from two tables that share truths and observations (a suite's [[cross_pairs]]):
checked before anything runs, paired seed by seed, Holm-adjusted as one family."""

import pytest

from interfaces import aggregate, report, suites, sweep
from interfaces.errors import UsageError
from interfaces.grouping import group_name
from interfaces.registry import get_registry

TRUTH = {"jet_speed": 70.0}


def job(method, seed, fb=None, members=None, truth=TRUTH, **options):
    fields = dict(model="sw", method=method, obs="random:0.05", cycles=300, burn_in=100, seed=seed, members=members,
                  model_options={"resolution": "32x64"}, truth_options=dict(truth), method_options=options)
    if fb:
        fields["forecast_bias"] = fb
    return sweep.make_job(**fields)


PLAIN, CORRECTED = group_name(job("letkf", 0)), group_name(job("letkf", 0, fb="jet_speed=70.0"))


def record(j, rmse, row):
    return {"job": j, "status": "complete", "summary": {"analysis_rmse": rmse}, "row": row}


def test_rows_of_two_tables_pair_seed_by_seed():
    recs = []
    for s in range(5):
        recs += [record(job("losda", s, train_backgrounds="forecast"), 0.12 + 0.01 * s, "losda (reanalysis)"),
                 record(job("losda", s), 0.17 + 0.01 * s, "losda"),
                 record(job("letkf", s, fb="jet_speed=70.0", members=20), 0.08 + 0.01 * s, "letkf")]
    recs.append(record(job("letkf", 9, fb="jet_speed=70.0", members=20), 0.5, "letkf"))  # no partner: left out
    specs = [{"a": {"table": PLAIN, "method": "losda", "options": {"train_backgrounds": "forecast"}},
              "b": {"table": CORRECTED, "method": "letkf"}, "why": "w"},
             {"a": {"table": PLAIN, "method": "dps"}, "b": {"table": CORRECTED, "method": "letkf"}}]
    first, missing = aggregate.cross_table_pairs(recs, specs)
    assert first["seeds"] == 5 and first["analysis_rmse_diff"] == pytest.approx(0.04)
    assert first["a"] == f"{PLAIN}: losda (reanalysis)" and first["b"] == f"{CORRECTED}: letkf"
    assert first["family"] == 2 and first["p_holm"] >= first["p"]
    assert missing["seeds"] == 0 and "not run yet" in missing["a"]
    text = report.cross_pairs_section([first, missing])
    assert "## Pairs across tables" in text and "| 0.04 ±" in text and "not run yet" in text
    assert f"{CORRECTED}: letkf ahead" in text
    # A side that several rows match names them.
    with pytest.raises(UsageError, match="matches several rows"):
        aggregate.cross_table_pairs(recs, [{"a": {"table": PLAIN, "method": "losda"},
                                            "b": {"table": CORRECTED, "method": "letkf"}}])


def _suite(pairs):
    return {"name": "t", "defaults": {"model": "sw", "model_options": {"resolution": "32x64"}},
            "experiments": [{"obs": ["random:0.05"], "truth_options": TRUTH},
                            {"obs": ["random:0.05"], "truth_options": TRUTH, "forecast_bias": "jet_speed=70.0"},
                            {"obs": ["random:0.01"], "truth_options": TRUTH}],
            "cross_pairs": pairs}


def test_cross_pairs_are_checked_before_anything_runs():
    jobs = [job("letkf", 0), job("letkf", 0, fb="jet_speed=70.0")]
    ok = {"a": {"table": PLAIN, "method": "letkf"}, "b": {"table": CORRECTED, "method": "letkf"}}
    assert len(suites.cross_pairs(_suite([ok]), jobs)) == 1
    # A table this run leaves out (--tables, --methods): the pair is dropped, not an error.
    assert suites.cross_pairs(_suite([ok]), jobs[:1]) == []
    with pytest.raises(UsageError, match="no table 'nope' in the suite; tables: "):
        suites.cross_pairs(_suite([{"a": {"table": "nope", "method": "letkf"}, "b": ok["b"]}]), jobs)
    other = {**job("letkf", 0), "obs": "random:0.01"}
    with pytest.raises(UsageError, match="do not share their truths and observations \\(obs differ\\)"):
        suites.cross_pairs(_suite([{"a": ok["a"], "b": {"table": group_name(other), "method": "letkf"}}]),
                           jobs + [other])
    with pytest.raises(UsageError, match="a and b each need a table and a method"):
        suites.cross_pairs(_suite([{"a": {"table": PLAIN}}]), jobs)


def test_the_regimes_suite_pairs_its_two_imperfect_tables():
    from interfaces.cli import build_parser

    suite = suites.load_suite("regimes")
    args = build_parser().parse_args(["compare", "--suite", "regimes"])  # the CLI's own defaults
    crossed = suites.cross_pairs(suite, suites.build_jobs(args, suite, get_registry()))
    assert len(crossed) == 3
    assert all("truth" in p["a"]["table"] and "truth" in p["b"]["table"] for p in crossed)
