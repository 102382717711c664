"""Comparison figures (interfaces.plots, drawn by compare through interfaces.report): built from
small fake run files, checked on the drawn matplotlib objects rather than on a file existing."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")
xr = pytest.importorskip("xarray")

from interfaces import plots, report  # noqa: E402
from interfaces.errors import UsageError  # noqa: E402


NLAT, NLON, CYCLES, BURN_IN = 6, 12, 10, 3
LAT = np.linspace(75, -75, NLAT)
LON = np.arange(NLON) * 30.0
OBS_LAT = np.radians([60.0, 0.0, -30.0, 45.0])
OBS_LON = np.radians([30.0, 90.0, 180.0, 270.0])
OBS_VAR = np.array(["h", "h", "u", "h"], dtype=object)
OBS_STD = np.array([35.0, 35.0, 2.0, 35.0])


def sphere_run(error_scale: float, seed: int, obs: str = "random:0.05") -> xr.Dataset:
    """A run file as `da-harness run` writes it on the sphere, with analysis errors of about
    ``error_scale`` metres in h (and a tenth of that in m/s in u and v)."""
    rng = np.random.default_rng(seed)
    truth = {"h": 10_000 + 300 * rng.standard_normal((CYCLES, NLAT, NLON)),
             "u": 20 * rng.standard_normal((CYCLES, NLAT, NLON)), "v": 20 * rng.standard_normal((CYCLES, NLAT, NLON))}
    units = {"h": "m", "u": "m s-1", "v": "m s-1"}
    data = {}
    for v, t in truth.items():
        scale = error_scale * (1 if v == "h" else 0.1)
        data[f"truth_{v}"] = (("time", "lat", "lon"), t, {"units": units[v]})
        data[f"background_{v}"] = (("time", "lat", "lon"), t + 2 * scale * rng.standard_normal(t.shape), {"units": units[v]})
        data[f"analysis_{v}"] = (("time", "lat", "lon"), t + scale * rng.standard_normal(t.shape), {"units": units[v]})
        data[f"analysis_rmse_{v}"] = ("time", scale * (1 + 0.1 * rng.random(CYCLES)), {"units": units[v]})
        data[f"background_rmse_{v}"] = ("time", 2 * scale * (1 + 0.1 * rng.random(CYCLES)), {"units": units[v]})
    data["analysis_rmse"] = ("time", error_scale / 300 * (1 + 0.1 * rng.random(CYCLES)), {"units": "1"})
    data["background_rmse"] = ("time", 2 * error_scale / 300 * (1 + 0.1 * rng.random(CYCLES)), {"units": "1"})
    data["obs_value"] = (("time", "obs"), rng.standard_normal((CYCLES, 4)))
    data["obs_std"] = (("time", "obs"), np.tile(OBS_STD, (CYCLES, 1)))
    data["obs_qc"] = (("time", "obs"), np.zeros((CYCLES, 4), dtype=np.int8))
    coords = {"lat": LAT, "lon": LON, "cycle": ("time", np.arange(CYCLES)), "obs_lat": ("obs", OBS_LAT),
              "obs_lon": ("obs", OBS_LON), "obs_variable": ("obs", OBS_VAR)}
    return xr.Dataset(data, coords=coords, attrs={"burn_in": BURN_IN, "obs": obs})


def ring_run(error_scale: float, seed: int) -> xr.Dataset:
    """A one-variable (Lorenz-96-like) run file: fields 'truth', 'analysis', obs at even sites."""
    rng = np.random.default_rng(seed)
    truth = 3 * rng.standard_normal((CYCLES, 40))
    data = {"truth": (("time", "site"), truth, {"units": "1"}),
            "background": (("time", "site"), truth + 2 * error_scale * rng.standard_normal(truth.shape), {"units": "1"}),
            "analysis": (("time", "site"), truth + error_scale * rng.standard_normal(truth.shape), {"units": "1"}),
            "analysis_rmse": ("time", error_scale * (1 + 0.1 * rng.random(CYCLES)), {"units": "1"}),
            "background_rmse": ("time", 2 * error_scale * (1 + 0.1 * rng.random(CYCLES)), {"units": "1"}),
            "obs_value": (("time", "obs"), truth[:, ::2] + rng.standard_normal((CYCLES, 20))),
            "obs_std": (("time", "obs"), np.full((CYCLES, 20), 1.0))}
    coords = {"site": np.arange(40), "cycle": ("time", np.arange(CYCLES)), "obs_index": ("obs", np.arange(0, 40, 2))}
    return xr.Dataset(data, coords=coords, attrs={"burn_in": BURN_IN, "obs": "every:2"})


def _axes_titled(fig, words):
    return [ax for ax in fig.axes if words in ax.get_title()]


def _mesh(ax):
    (mesh,) = [c for c in ax.collections if hasattr(c, "get_clim") and c.get_array() is not None and c.get_array().ndim == 2]
    return mesh


def test_error_limit_is_set_by_the_assimilating_methods_not_the_free_run():
    errors = {"free": np.array([[-900.0, 800.0]]), "3dvar": np.array([[30.0, -40.0]]), "letkf": np.array([[10.0, 5.0]])}
    assert plots.error_limit(errors) == 40.0
    assert plots.error_limit({"free": errors["free"]}) == 900.0  # only references: their own scale
    assert plots.error_limit({"a": np.zeros((2, 2))}) == 1.0  # a perfect analysis still gets a scale
    # A method that assimilates but fails (RMS over ten times the best) saturates too.
    failing = {**errors, "ensf": np.array([[-700.0, 650.0]])}
    assert plots.error_limit(failing) == 40.0
    assert plots.error_limit({**failing, "letkf": np.zeros((1, 2))}) == 40.0  # a perfect one is no yardstick


def test_maps_share_a_da_error_scale_mark_observations_and_label_axes_and_units():
    runs = {"free": sphere_run(500.0, 0), "3dvar": sphere_run(40.0, 0), "letkf": sphere_run(15.0, 0)}
    fig = plots.compare_maps(runs)
    h_errors = {m: ds["analysis_h"].values[-1] - ds["truth_h"].values[-1] for m, ds in runs.items()}
    expected = max(np.abs(h_errors["3dvar"]).max(), np.abs(h_errors["letkf"]).max())
    free_max = np.abs(h_errors["free"]).max()
    assert expected < free_max / 3  # the fake free run is far worse, as a real one is
    for method in runs:
        (ax,) = _axes_titled(fig, f"{method}{' (no DA)' if method == 'free' else ''} error")
        assert _mesh(ax).get_clim() == pytest.approx((-expected, expected))  # one scale, not the free run's
        assert ax.get_ylabel() == plots.LAT_LABEL
        # The observation sites of h (three of the four) are circled on every error map.
        (sites,) = [c for c in ax.collections if c is not _mesh(ax)]
        assert sorted(sites.get_offsets()[:, 0]) == pytest.approx([30.0, 90.0, 270.0])
    assert "saturated" in _axes_titled(fig, "free (no DA) error")[0].get_title()
    assert "saturated" not in _axes_titled(fig, "letkf error")[0].get_title()
    assert any(ax.get_xlabel() == plots.LON_LABEL for ax in fig.axes)
    colour_bars = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert "h (m)" in colour_bars and "h analysis − truth (m)" in colour_bars


def test_maps_of_a_one_variable_model_share_y_limits_set_by_the_da_methods():
    runs = {"free": ring_run(4.0, 1), "enkf": ring_run(0.2, 1)}
    fig = plots.compare_maps(runs)
    da_max = np.abs(runs["enkf"]["analysis"].values[-1] - runs["enkf"]["truth"].values[-1]).max()
    for method in runs:
        (ax,) = _axes_titled(fig, f"{method}{' (no DA)' if method == 'free' else ''} error")
        assert ax.get_ylim() == pytest.approx((-1.05 * da_max, 1.05 * da_max))


def test_rmse_plot_mean_band_background_obs_level_burn_in_and_legend_outside():
    seeds = {"free": [sphere_run(500.0, s) for s in (0, 1, 2)], "letkf": [sphere_run(15.0, s) for s in (0, 1, 2)]}
    fig = plots.compare_rmse(seeds)
    panels = [ax for ax in fig.axes if ax.get_title() in ("overall", "h", "u", "v")]
    assert [ax.get_title() for ax in panels] == ["overall", "h", "u", "v"]
    h = panels[1]
    assert h.get_ylabel() == "RMSE of h (m)" and panels[2].get_ylabel() == "RMSE of u (m s-1)"
    assert panels[0].get_ylabel() == "RMSE / climatological std"
    # Per method: the mean over seeds (solid) and the background mean (dashed).
    letkf_mean = np.mean([ds["analysis_rmse_h"].values for ds in seeds["letkf"]], axis=0)
    solid = [line for line in h.lines if line.get_linestyle() == "-" and len(line.get_ydata()) == CYCLES]
    assert any(np.allclose(line.get_ydata(), letkf_mean) for line in solid)
    assert sum(line.get_linestyle() == "--" for line in h.lines) == 2
    # The min-max band over seeds: one filled polygon per method, spanning the seeds' extremes.
    bands = [c for c in h.collections if type(c).__name__ in ("PolyCollection", "FillBetweenPolyCollection")]
    assert len(bands) == 2
    letkf = np.array([ds["analysis_rmse_h"].values for ds in seeds["letkf"]])
    ys = bands[1].get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(letkf.min(0).min()) and ys.max() == pytest.approx(letkf.max(0).max())
    # The observation-error level of h (35 m) in the h panel; none in the normalised panel.
    dotted = [line for line in h.lines if line.get_linestyle() == ":"]
    assert len(dotted) == 1 and dotted[0].get_ydata()[0] == pytest.approx(35.0)
    assert not [line for line in panels[0].lines if line.get_linestyle() == ":"]
    # The burn-in is shaded over cycles 0..BURN_IN-1.
    spans = [p for p in h.patches if p.get_facecolor()[:3] == pytest.approx((0.88, 0.88, 0.88))]
    assert len(spans) == 1 and spans[0].get_x() == -0.5 and spans[0].get_width() == pytest.approx(BURN_IN)
    # One figure legend, right of every panel (never over the curves).
    (legend,) = fig.legends
    fig.canvas.draw()
    legend_left = legend.get_window_extent().x0
    assert all(ax.get_window_extent().x1 <= legend_left for ax in panels)
    assert {"free", "letkf", "min-max over seeds", "observation-error std"} <= {t.get_text() for t in legend.get_texts()}


def test_rmse_plot_draws_every_row_of_a_long_table_in_its_own_colour():
    # Eleven rows (the imperfect-physics table): matplotlib's default cycle would draw the
    # eleventh in the first row's colour.
    from matplotlib.colors import to_rgb

    runs = {f"method{i}": [sphere_run(10.0 + i, 0)] for i in range(18)}
    fig = plots.compare_rmse(runs)
    (legend,) = fig.legends
    drawn = {t.get_text(): to_rgb(h.get_color()) for t, h in zip(legend.get_texts(), legend.legend_handles)
             if t.get_text().startswith("method")}
    assert len(drawn) == 18 and len(set(drawn.values())) == 18
    overall = next(ax for ax in fig.axes if ax.get_title() == "overall")
    solid = {to_rgb(line.get_color()) for line in overall.lines if line.get_linestyle() == "-"}
    assert solid == set(drawn.values())


def test_a_row_has_the_same_colour_in_the_rmse_and_the_cost_figure():
    # The cost figure drew its points by method (letkf-6 in letkf-20's colour) and the RMSE figure
    # by row, so the perfect-model table's EnSF was purple in one and red in the other.
    from matplotlib.colors import to_rgb

    rows = [{"method": m, "variant_of": base, "variant": variant, "analysis_rmse": rmse,
             "analysis_rmse_ci95": 0.01, "seconds_per_cycle": sec, "forecasts_per_cycle": n}
            for m, base, variant, rmse, sec, n in (
                ("free", "free", {}, 1.4, 0.1, 1), ("letkf (members=20)", "letkf", {"members": 20}, 0.04, 0.5, 20),
                ("letkf (members=6)", "letkf", {"members": 6}, 0.05, 0.25, 6), ("ensf", "ensf", {}, 0.9, 1.9, 20))]
    colours = plots.row_colours(r["method"] for r in rows)
    assert len(set(colours.values())) == 4
    cost = plots.compare_cost(rows, colours=colours)
    points = {c.get_label(): to_rgb(c.lines[0].get_color()) for c in cost.axes[0].containers}
    assert points == {m: to_rgb(c) for m, c in colours.items()}
    (legend,) = cost.legends
    assert [t.get_text() for t in legend.get_texts()] == [r["method"] for r in rows]
    # The two LETKF rows are still one series (a grey line, in order of cost).
    series = [line for line in cost.axes[0].get_lines() if line.get_gid() == "letkf"]
    assert len(series) == 1 and list(series[0].get_xdata()) == [0.25, 0.5]
    # The RMSE figure, given the same colours (in another order of runs), draws each row in its own.
    runs = {m: [sphere_run(10.0 + i, 0)] for i, m in enumerate(reversed(list(colours)))}
    rmse = plots.compare_rmse(runs, colours=colours)
    (fig_legend,) = rmse.legends
    drawn = {t.get_text(): to_rgb(h.get_color()) for t, h in zip(fig_legend.get_texts(), fig_legend.legend_handles)
             if t.get_text() in colours}
    assert drawn == {m: to_rgb(c) for m, c in colours.items()}
    # A long row name is wrapped in both legends, so that it does not squeeze the panels.
    long_name = "losda (members=1, train_data=jet_speed=70.0;drag_days=7.0, rtps=0.0, train_backgrounds=forecast)"
    assert max(map(len, plots.legend_label(long_name).splitlines())) <= 44
    assert plots.legend_label(long_name).replace("\n  ", " ") == long_name


def test_a_table_title_longer_than_the_figure_wraps_inside_it():
    # The sixth regimes table's title (model, obs, truth model, bias correction, cycles) is 167
    # characters; drawn on one line it ran off both edges of the figure.
    title = ("sw (resolution=32x64), obs random:0.05, truth model drag_days=7.0, jet_speed=70.0, forecasts "
             "bias-corrected from drag_days=7.0;jet_speed=70.0, 300 cycles (100 burn-in): RMSE per cycle")
    fig = plots.compare_rmse({"letkf": [sphere_run(15.0, 0)]}, title=title)
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width
    assert fig._suptitle.get_text().replace("\n", " ") == title


def test_no_obs_level_for_nonlinear_observations_and_one_variable_level_in_state_units():
    fig = plots.compare_rmse({"3dvar": [sphere_run(40.0, 0, obs="arctan+random:0.05")]})
    assert not [line for ax in fig.axes for line in ax.lines if line.get_linestyle() == ":"]
    assert plots.obs_error_level(ring_run(0.2, 0)) == 1.0
    assert plots.obs_error_level(sphere_run(1.0, 0), "u") == 2.0
    assert plots.obs_error_level(sphere_run(1.0, 0)) is None  # the normalised score has no such level
    with pytest.raises(UsageError):
        plots.compare_rmse({})


def test_report_draws_every_seed_in_the_rmse_plot_and_one_shared_seed_in_the_maps(tmp_path):
    records, table = [], {"name": "sw-fake", "model": "sw", "model_options": {}, "obs": "random:0.05",
                          "cycles": CYCLES, "burn_in": BURN_IN}
    for method, scale in (("free", 500.0), ("3dvar", 40.0)):
        for seed in (0, 1):
            path = tmp_path / f"{method}-{seed}.nc"
            sphere_run(scale, seed).to_netcdf(path)
            records.append({"job": {"method": method, "seed": seed, "model": "sw", "model_options": {}, "obs": "random:0.05",
                                    "cycles": CYCLES}, "status": "done", "file": str(path)})
    records.append({**records[0], "status": "failed"})
    from interfaces.grouping import group_name

    table["name"] = group_name(records[0]["job"])
    runs = report.seed_runs(table, records)
    assert {m: list(s) for m, s in runs.items()} == {"free": [0, 1], "3dvar": [0, 1]}
    chosen, which = report.map_seed_runs({"free": runs["free"], "3dvar": {1: runs["3dvar"][1]}})
    assert which == "seed 1" and chosen["free"].name == "free-1.nc"
    for png in (report.plot_rmse(runs, table, tmp_path / "r.png"), report.plot_maps(runs, table, tmp_path / "m.png")):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
