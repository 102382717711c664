"""Equal-cost views of a comparison table: the cost columns (seconds, forecasts and network
calls per cycle), one row per configuration of a method run several ways, the closest-cost
pairing of two methods, and the RMSE-against-cost figure (issue 13, item 4)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from interfaces import aggregate, report, suites
from interfaces.errors import UsageError
from interfaces.registry import get_registry
from interfaces.statistics import t_interval


def rec(method, seed, rmse, seconds, members=1, options=None):
    job = {"model": "m", "model_options": {}, "obs": "all", "cycles": 20, "burn_in": 5, "members": members,
           "method": method, "seed": seed, "method_options": options or {}}
    return {"job": job, "status": "complete",
            "summary": {"analysis_rmse": rmse, "members": members, "burn_in": 5, "seconds_per_cycle": seconds}}


def letkf_table():
    """letkf at three ensemble sizes, dps at two step counts, losda once, 3dvar once; 3 seeds.
    RMSE falls with size; seconds grow with size and steps."""
    records = []
    for seed in range(3):
        for n, rmse, sec in ((6, 0.30, 0.02), (10, 0.20, 0.04), (20, 0.15, 0.08)):
            records.append(rec("letkf", seed, rmse + 0.01 * seed, sec, members=n))
        for steps, rmse, sec in ((5, 0.50, 0.6), (20, 0.40, 2.4)):
            records.append(rec("dps", seed, rmse + 0.02 * seed, sec, options={"steps": steps, "zeta": 3.0}))
        records.append(rec("losda", seed, 0.35 + 0.03 * seed, 2.0, options={"steps": 10}))
        records.append(rec("3dvar", seed, 0.45 + 0.01 * seed, 0.01))
    return records


# --- rows ---------------------------------------------------------------------------------------
def test_variants_of_one_method_are_separate_rows_with_their_costs():
    (table,) = aggregate.aggregate(letkf_table(), [("losda", "dps")])
    rows = {r["method"]: r for r in table["rows"]}
    assert list(rows) == ["letkf (members=6)", "letkf (members=10)", "letkf (members=20)",
                          "dps (steps=5)", "dps (steps=20)", "losda", "3dvar"]
    for n, rmse in ((6, 0.30), (10, 0.20), (20, 0.15)):
        row = rows[f"letkf (members={n})"]
        # Three seeds each, not nine merged into one 'letkf' row.
        assert row["seeds"] == 3 and row["variant_of"] == "letkf" and row["variant"] == {"members": n}
        assert row["analysis_rmse"] == pytest.approx(rmse + 0.01)
        # Filled from the ensemble size for run files written before the cost record.
        assert row["forecasts_per_cycle"] == n
    assert rows["dps (steps=20)"]["variant"] == {"steps": 20}  # zeta is common: not in the label
    assert rows["losda"]["variant"] == {} and rows["losda"]["forecasts_per_cycle"] == 1
    assert {"seconds_per_cycle", "forecasts_per_cycle"} <= set(table["columns"])
    # The paired differences from the best row follow the row, seed by seed.
    assert rows["letkf (members=20)"]["best"] == "letkf (members=20)"
    assert rows["letkf (members=6)"]["rmse_minus_best"] == pytest.approx(0.15)
    # A method with several rows is left out of the plain pairs (ambiguous) ...
    assert table["pairs"] == []
    md = report.markdown_table(table)
    assert "| letkf (members=6) | 6 | 3 |" in md and "forecasts/cycle" in md


def test_a_method_with_variants_is_paired_at_the_blocks_own_settings():
    """With the protocol saying which jobs are the block's own (not a declared variant), a plain
    pair names that row; the variants still meet the other method at equal cost."""
    from interfaces.sweep import job_hash

    records = letkf_table()
    base = {job_hash(r["job"]) for r in records if r["job"]["method"] != "dps" or r["job"]["method_options"]["steps"] == 20}
    protocol = {"m-all": {"base_jobs": base}}
    (table,) = aggregate.aggregate(records, [("losda", "dps")], protocol)
    (pair,) = table["pairs"]
    assert (pair["a"], pair["b"]) == ("losda", "dps (steps=20)")
    assert [r["base"] for r in table["rows"] if r["variant_of"] == "dps"] == [False, True]
    # Without that knowledge (run files read back alone) the pair stays ambiguous and is left out.
    (table,) = aggregate.aggregate(records, [("losda", "dps")])
    assert table["pairs"] == []


def test_plain_pairs_between_single_rows_are_unchanged():
    (table,) = aggregate.aggregate(letkf_table(), [("losda", "3dvar")])
    (pair,) = table["pairs"]
    assert (pair["a"], pair["b"]) == ("losda", "3dvar")
    assert pair["analysis_rmse_diff"] == pytest.approx(np.mean([0.35 + 0.03 * s - 0.45 - 0.01 * s for s in range(3)]))


# --- equal cost -------------------------------------------------------------------------------
def test_equal_cost_pair_takes_the_rows_whose_seconds_are_closest():
    records = letkf_table()
    (table,) = aggregate.aggregate(records, [("losda", "dps"), ("letkf", "3dvar")])
    first, second = table["equal_cost_pairs"]
    # losda at 2.0 s: dps at 2.4 s (log ratio 0.18) beats dps at 0.6 s (1.2).
    assert (first["a"], first["b"]) == ("losda", "dps (steps=20)")
    assert (first["a_method"], first["b_method"]) == ("losda", "dps")
    assert first["a_seconds_per_cycle"] == pytest.approx(2.0) and first["b_seconds_per_cycle"] == pytest.approx(2.4)
    diffs = [(0.35 + 0.03 * s) - (0.40 + 0.02 * s) for s in range(3)]
    # Two pairs in this family: the interval is at the Bonferroni level 1 - 0.05/2.
    mean, half, _ = t_interval(diffs, level=1 - 0.05 / 2)
    assert first["analysis_rmse_diff"] == pytest.approx(mean) and first["analysis_rmse_diff_ci95"] == pytest.approx(half)
    assert first["seeds"] == 3 and first["family"] == 2
    # 3dvar at 0.01 s is closest (on a log scale) to letkf N=6 at 0.02 s.
    assert (second["a"], second["b"]) == ("letkf (members=6)", "3dvar")
    assert (second["a_forecasts_per_cycle"], second["b_forecasts_per_cycle"]) == (6, 1)
    line = report.equal_cost_lines(table)
    assert "losda − dps (steps=20)" in line and "2 s, 1 forecast" in line and "2.4 s" in line


def test_closest_cost_is_judged_by_ratio_not_difference():
    # losda 1.0 s; dps 0.5 s (ratio 2) or 1.8 s (ratio 1.8, although 0.8 s away, not 0.5).
    records = [rec("losda", s, 0.3, 1.0) for s in range(2)]
    records += [rec("dps", s, 0.4, 0.5, options={"steps": 5}) for s in range(2)]
    records += [rec("dps", s, 0.35, 1.8, options={"steps": 20}) for s in range(2)]
    (table,) = aggregate.aggregate(records, [("losda", "dps")])
    (pair,) = table["equal_cost_pairs"]
    assert pair["b"] == "dps (steps=20)"



def test_a_variant_that_asks_another_question_is_not_a_cost_view():
    """A prior trained on other data is a row of its own question, not LO-SDA at another cost:
    though it ran faster (load decides that), the equal-cost pair keeps the block's own row; a
    variant that changes a cost option (the ensemble) stays a cost view."""
    from interfaces.sweep import job_hash

    records = []
    for s in range(3):
        records.append(rec("letkf", s, 0.15 + 0.01 * s, 0.3, members=20))
        records.append(rec("losda", s, 0.16 + 0.01 * s, 5.9, options={"steps": 40}))
        records.append(rec("losda", s, 0.17 + 0.01 * s, 5.1, options={"steps": 40, "train_data": "jet_speed=70"}))
        records.append(rec("losda", s, 0.14 + 0.01 * s, 28.0, members=20, options={"steps": 40, "rtps": 0.5}))
    base = {job_hash(r["job"]) for r in records if r["job"]["members"] == 20 and r["job"]["method"] == "letkf"
            or r["job"]["method"] == "losda" and r["job"]["members"] == 1 and "train_data" not in r["job"]["method_options"]}
    (table,) = aggregate.aggregate(records, [("losda*", "letkf")], {"m-all": {"base_jobs": base}})
    rows = {r["method"]: r for r in table["rows"]}
    truth = next(r for r in rows.values() if r["variant"].get("train_data") == "jet_speed=70")
    ensemble = next(r for r in rows.values() if r["variant"].get("members") == 20 and r["variant_of"] == "losda")
    own = next(r for r in rows.values() if r["variant_of"] == "losda" and r["base"])
    assert [r["method"] for r in aggregate.cost_views(table["rows"], "losda")] == [own["method"], ensemble["method"]]
    (pair,) = table["equal_cost_pairs"]
    assert pair["a"] == own["method"] and pair["a_seconds_per_cycle"] == pytest.approx(5.9)
    # Every LO-SDA row is still paired with the LETKF at its own settings ('losda*').
    assert {p["a"] for p in table["pairs"]} == {own["method"], truth["method"], ensemble["method"]}
    # Read back without the protocol (no block row known), every row counts again.
    (table,) = aggregate.aggregate(records, [("losda*", "letkf")])
    assert table["equal_cost_pairs"][0]["a"] == truth["method"]

# --- the figure -------------------------------------------------------------------------------
def _series(ax):
    return {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}


def test_cost_figure_has_one_point_per_row_and_a_series_per_method(tmp_path):
    from interfaces import plots

    (table,) = aggregate.aggregate(letkf_table())
    out = tmp_path / "cost.png"
    fig = plots.compare_cost(table["rows"], out=out, title="t")
    assert out.stat().st_size > 0
    seconds_ax, forecasts_ax = fig.axes[:2]
    assert seconds_ax.get_xscale() == "log" and forecasts_ax.get_xscale() == "log"
    by_method = _series(seconds_ax)
    assert set(by_method) == {"letkf", "dps", "losda", "3dvar"}
    rows = {r["method"]: r for r in table["rows"]}
    letkf = by_method["letkf"]
    # Connected in order of cost: N=6, 10, 20.
    assert list(letkf.get_xdata()) == pytest.approx([0.02, 0.04, 0.08])
    assert list(letkf.get_ydata()) == pytest.approx([rows[f"letkf (members={n})"]["analysis_rmse"] for n in (6, 10, 20)])
    assert list(_series(forecasts_ax)["letkf"].get_xdata()) == [6, 10, 20]
    assert list(_series(forecasts_ax)["dps"].get_xdata()) == [1, 1]
    assert list(by_method["dps"].get_xdata()) == pytest.approx([0.6, 2.4])
    # Error bars: the 95 % interval over seeds of each point.
    caps = [c for c in seconds_ax.containers if c.get_label() == "losda"][0]
    segment = caps.lines[2][0].get_segments()[0]
    half = rows["losda"]["analysis_rmse_ci95"]
    assert segment[1][1] - segment[0][1] == pytest.approx(2 * half)
    # The legend, outside the panels, names every row (its settings included) once.
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [r["method"] for r in table["rows"]]
    fig.canvas.draw()
    assert all(ax.get_window_extent().x1 <= legend.get_window_extent().x0 for ax in (seconds_ax, forecasts_ax))


def test_cost_figure_leaves_out_rows_without_a_cost():
    from interfaces import plots

    rows = [{"method": "a", "variant_of": "a", "variant": {}, "analysis_rmse": 0.2, "analysis_rmse_ci95": 0.01,
             "seconds_per_cycle": float("nan"), "forecasts_per_cycle": 1},
            {"method": "b", "variant_of": "b", "variant": {}, "analysis_rmse": 0.3, "analysis_rmse_ci95": float("nan"),
             "seconds_per_cycle": 0.5, "forecasts_per_cycle": 4}]
    fig = plots.compare_cost(rows)
    assert set(_series(fig.axes[0])) == {"b"}
    assert set(_series(fig.axes[1])) == {"a", "b"}
    with pytest.raises(UsageError):
        plots.compare_cost([])


# --- suites: variants -------------------------------------------------------------------------
def _args(**kw):
    base = dict(model=None, methods=None, cycles=None, seeds=None, obs=None, options=[], members=None,
                obs_std=None, burn_in=None)
    return SimpleNamespace(**{**base, **kw})


def _suite(**block):
    return {"name": "t", "path": "t.toml",
            "experiments": [{"model": "lorenz96", "methods": ["letkf", "3dvar"], "obs": "every:2", "cycles": 10,
                             "scoring_seeds": [0, 1], "members": {"letkf": 20}, **block}]}


def test_suite_variants_add_rows_at_their_sizes_and_options():
    suite = _suite(variants={"letkf": [{"members": 6, "inflation": 1.1}, {"members": 10}]})
    jobs = suites.build_jobs(_args(), suite, get_registry())
    letkf = {(j["members"], j["method_options"].get("inflation")) for j in jobs if j["method"] == "letkf"}
    default_infl = get_registry().assimilator("letkf").factory.defaults["inflation"]
    assert letkf == {(20, None), (6, 1.1), (10, None)}  # the default is not written into the job
    assert sum(j["method"] == "letkf" for j in jobs) == 6 and sum(j["method"] == "3dvar" for j in jobs) == 2
    records = [{"job": j, "status": "complete",
                "summary": {"analysis_rmse": 0.1, "members": j["members"], "burn_in": 2, "seconds_per_cycle": 0.1}}
               for j in jobs]
    (table,) = aggregate.aggregate(records)
    labels = [r["method"] for r in table["rows"]]
    assert labels == ["letkf (members=20, inflation=%s)" % default_infl, "letkf (members=6, inflation=1.1)",
                      "letkf (members=10, inflation=%s)" % default_infl, "3dvar"]


@pytest.mark.parametrize("variants, message", [
    ({"enkf": [{"members": 6}]}, "method 'enkf', which the block does not run"),
    ({"letkf": [{"no_such": 1}]}, "unknown option 'no_such' for method 'letkf'"),
    ({"letkf": {"members": 6}}, "'letkf' must be a list of non-empty option tables"),
])
def test_bad_variants_are_one_clear_line(variants, message):
    with pytest.raises(UsageError, match=message) as err:
        suites.build_jobs(_args(), _suite(variants=variants), get_registry())
    assert "\n" not in str(err.value)


# --- the per-run cost record ------------------------------------------------------------------
def test_a_run_records_its_forecasts_per_cycle():
    from interfaces import api

    ds = api.run("lorenz96", "letkf", obs="every:2", cycles=4, burn_in=1, members=5, seed=0)
    summary = json.loads(ds.attrs["summary"])
    assert summary["forecasts_per_cycle"] == 5 and "network_calls_per_cycle" not in summary


@pytest.mark.parametrize("output, final_decodes", [("decode", 1), ("increment", 2)])
def test_latent_methods_count_their_network_calls(output, final_decodes):
    """DPS with 4 steps: one denoiser call per reverse step, one decoder call inside each step's
    misfit gradient, and the final decode of the analysis (output=increment: of the background
    too). A small prior with random weights: the count is a property of the code."""
    from interfaces.observations import Observations, SparseLinearOperator
    from losda_plugin.config import PRESETS
    from losda_plugin.geometry import Geometry
    from losda_plugin.methods import DPS
    from losda_plugin.prior import LatentPrior, build_networks

    torch.manual_seed(0)
    shape = (3, 8, 16)
    cfg = {**PRESETS[("sphere", "quick")], "vae_widths": [4, 8], "latent_channels": 2, "denoiser_width": 8,
           "denoiser_blocks": 1}
    geometry = Geometry("sphere", shape[1:], shape[0], True)
    vae, denoiser = build_networks(cfg, geometry, torch.zeros(shape), torch.ones(shape), sigma_data=0.5)
    prior = LatentPrior(geometry, cfg, vae, denoiser, 0.1 + torch.rand(vae.latent_shape)).eval()
    index = torch.arange(0, math.prod(shape), 7)
    op = SparseLinearOperator(shape, index, torch.ones(len(index)), torch.full((len(index),), 0.5),
                              torch.zeros(len(index), 2), index // (shape[1] * shape[2]), "every:7")
    background = torch.randn(1, *shape, dtype=torch.float64)
    obs = Observations.from_values(op(background)[0], op.std)
    method = DPS(**{**DPS.defaults, "steps": 4, "samples": 3, "output": output})
    method.use_prior(prior, torch.Generator().manual_seed(1))
    for _ in range(2):  # counted per cycle, not accumulated over cycles
        method.assimilate(background, obs, op)
        diag = method.diagnostics()
        assert (diag["denoiser_calls"], diag["decoder_calls"]) == (4, 4 + final_decodes)


def test_every_table_gets_its_cost_figure_and_equal_cost_line(tmp_path):
    records = [{**r, "file": str(tmp_path / "no-run-file.nc")} for r in letkf_table()]  # no maps to draw
    (table,) = aggregate.aggregate(records, [("losda", "dps")])
    files = report.write_all([table], records, tmp_path, {"commit": "x"}, plots=True)
    assert tmp_path / "m-all-cost.png" in files and (tmp_path / "m-all-cost.png").stat().st_size > 0
    md = (tmp_path / "m-all.md").read_text()
    assert "At equal cost" in md and "losda − dps (steps=20)" in md
    with open(tmp_path / "m-all.csv") as fh:
        header = fh.readline()
    assert "forecasts_per_cycle" in header and "seconds_per_cycle" in header


def test_row_labels_show_sizes_and_defaults_plainly_and_stay_distinct():
    """The regimes table's LO-SDA rows read 'losda (members=1, rtps=0.0)' and 'losda (members=20,
    rtps=0.5)': never 'members=None' or 'train_data=', and a setting left unset is left out of the
    name while the rows stay apart; two configurations never share a label."""
    from interfaces.aggregate import label_rows

    def rec(method, members, **options):
        return {"job": {"method": method, "members": members, "cycles": 10, "burn_in": 2, "obs_std": None,
                        "method_options": options}}

    recs = [rec("losda", None, rtps=0.0, train_data=""), rec("losda", 20, rtps=0.5, train_data=""),
            rec("losda", None, rtps=0.0, train_data="jet_speed=70.0")]
    label_rows(recs)
    assert [r["row"] for r in recs] == ["losda (members=1, rtps=0.0)", "losda (members=20, rtps=0.5)",
                                        "losda (members=1, rtps=0.0, train_data=jet_speed=70.0)"]
    # A row with every differing setting unset is the method's bare name.
    unset = [rec("losda", None, train_data="", train_backgrounds="forecast"),
             rec("losda", None, train_data="", train_backgrounds=""),
             rec("losda", None, train_data="x", train_backgrounds="")]
    label_rows(unset)
    assert [r["row"] for r in unset] == ["losda (train_backgrounds=forecast)", "losda", "losda (train_data=x)"]
    # members None is the LETKF's own 20: shown as 20 would merge two rows, so the raw value stays.
    clash = [rec("letkf", None), rec("letkf", 20)]
    label_rows(clash)
    assert [r["row"] for r in clash] == ["letkf (members=None)", "letkf (members=20)"]


def test_row_labels_leave_out_tuned_options_when_the_rest_tells_rows_apart():
    """Each LETKF size is tuned on its own, so its rows differ in every tuned value: they read
    'letkf (members=20)' and 'letkf (members=6)', the tuned values going to the table's notes.
    Rows that only tuned values tell apart keep them in their names."""
    from interfaces.aggregate import label_rows
    from interfaces.grouping import group_name
    from interfaces.sweep import job_hash

    def rec(members, **options):
        job = {"model": "m", "model_options": {}, "obs": "all", "seed": 0, "method": "letkf", "members": members,
               "cycles": 10, "burn_in": 2, "obs_std": None, "method_options": options}
        return {"job": job}

    def protocol(recs):
        tuned = {job_hash(r["job"]): {k: v for k, v in r["job"]["method_options"].items() if k != "rtps"} for r in recs}
        return {group_name(recs[0]["job"]): {"tuned_jobs": tuned}}

    recs = [rec(20, inflation=1.0, rtps=0.0), rec(6, inflation=0.9, rtps=0.3)]
    label_rows(recs, protocol(recs))
    assert [r["row"] for r in recs] == ["letkf (members=20, rtps=0.0)", "letkf (members=6, rtps=0.3)"]
    assert recs[1]["variant"] == {"members": 6, "rtps": 0.3}
    label_rows(recs)  # without the tuned file's record, every differing option is named
    assert recs[1]["row"] == "letkf (members=6, inflation=0.9, rtps=0.3)"
    same_size = [rec(20, inflation=1.0, rtps=0.0), rec(20, inflation=1.1, rtps=0.0)]
    label_rows(same_size, protocol(same_size))
    assert [r["row"] for r in same_size] == ["letkf (inflation=1.0)", "letkf (inflation=1.1)"]
