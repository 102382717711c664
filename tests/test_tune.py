"""`da-harness tune`: the chosen options are the argmin of the recorded search, the file records
the search and its seeds, suites apply it, and tuning/scoring seed overlaps are refused."""

import json
import math
import tomllib
from argparse import Namespace

import pytest

from interfaces import suites, tuned
from interfaces.cli import build_parser
from interfaces.registry import get_registry

TUNE = ["tune", "--method", "3dvar", "--set", "b_source=climatology", "--obs", "every:2",
        "--cycles", "14", "--burn-in", "4", "--serial", "--no-progress"]


@pytest.fixture(scope="module")
def tuned_file(tmp_path_factory):
    from interfaces.cli import main

    folder = tmp_path_factory.mktemp("tune")
    out = folder / "tuned.toml"
    code = main([*TUNE, "--grid", "scale=0.05,0.5,5", "--seeds", "100,101", "--out", str(out),
                 "--runs", str(folder / "runs")])
    assert code == 0
    return out


def test_the_chosen_value_is_the_argmin_of_the_recorded_scores(tuned_file):
    (entry,) = tomllib.loads(tuned_file.read_text())["entry"]
    scores = {s["options"]["scale"]: s["score"] for s in entry["search"]}
    assert sorted(scores) == [0.05, 0.5, 5.0] and all(math.isfinite(v) for v in scores.values())
    assert len(set(scores.values())) == 3  # the settings really ran differently
    assert entry["chosen"] == {"scale": min(scores, key=scores.get)}
    assert entry["score"] == min(scores.values())
    assert entry["seeds"] == [100, 101] and entry["table"] == "lorenz96-every2" and entry["method"] == "3dvar"
    assert "--grid scale=0.05,0.5,5" in entry["command"] and entry["commit"] and entry["date"]
    for s in entry["search"]:
        assert s["seeds"] == 2 and s["score_ci95"] > 0 and "stationary" in s
        assert s["run_seconds"] > 0  # the cycling time of its two runs, read from their files
    assert entry["run_seconds"] == pytest.approx(sum(s["run_seconds"] for s in entry["search"]), abs=0.002)


def test_a_rerun_reads_the_finished_settings_and_gives_the_same_choice(tuned_file, cli):
    before = tuned_file.read_text()
    code, out, _ = cli(*TUNE, "--grid", "scale=0.05,0.5,5", "--seeds", "100,101", "--out", str(tuned_file),
                       "--runs", str(tuned_file.parent / "runs"), "--json")
    assert code == 0
    again = json.loads(out)
    (entry,) = tuned.read(tuned_file)
    assert again["chosen"] == entry["chosen"] and again["score"] == pytest.approx(entry["score"])
    # Nothing new was found, so the record of the invocation that computed the search stays.
    assert again["unchanged"] is True and tuned_file.read_text() == before


def test_a_search_that_differs_replaces_its_entry_and_a_read_back_keeps_the_provenance(tmp_path):
    path = tmp_path / "t.toml"
    first = {"table": "t", "method": "m", "chosen": {"a": 1.0}, "seeds": [100], "score": float("nan"),
             "search": [{"options": {"a": 1.0}, "score": float("nan")}],
             "commit": "abc", "date": "2026-01-01", "wall_seconds": 900.0}
    other = {**first, "method": "other"}
    assert tuned.upsert(path, first) and tuned.upsert(path, other)
    # A read-back: same search (NaN scores included), new commit, date and wall time.
    assert not tuned.upsert(path, {**first, "commit": "def", "date": "2026-02-02", "wall_seconds": 3.0})
    assert tuned.find(tuned.read(path), "t", "m")["commit"] == "abc"
    # A different choice replaces the entry (not appended), the other method's entry kept.
    assert tuned.upsert(path, {**first, "chosen": {"a": 2.0}, "commit": "def"})
    entries = tuned.read(path)
    assert len(entries) == 2 and tuned.find(entries, "t", "m")["chosen"] == {"a": 2.0}
    assert [e["method"] for e in entries] == ["m", "other"]  # in its old place
    assert tuned.find(entries, "t", "m")["commit"] == "def" and tuned.find(entries, "t", "other")["commit"] == "abc"


def test_a_read_back_that_rescores_keeps_who_ran_the_search(tuned_file, cli, tmp_path):
    """A search read back whole (nothing run) whose derived figures come out differently (here a
    time interval, as when its formula improved) rewrites them but keeps the commit, date and wall
    time of the invocation that ran the search, and says when it was rescored."""
    (entry,) = tuned.read(tuned_file)
    entry = {**entry, "commit": "0000000", "date": "2026-01-01T00:00:00+00:00", "wall_seconds": 1234.5,
             "search": [{**s, "time_ci95": 9.0} for s in entry["search"]]}
    copy = tmp_path / "tuned.toml"
    copy.write_text(tuned.dumps([entry]))
    code, out, _ = cli(*TUNE, "--grid", "scale=0.05,0.5,5", "--seeds", "100,101", "--out", str(copy),
                       "--runs", str(tuned_file.parent / "runs"), "--json")
    assert code == 0 and json.loads(out)["unchanged"] is False
    (again,) = tuned.read(copy)
    assert (again["commit"], again["date"], again["wall_seconds"]) == ("0000000", "2026-01-01T00:00:00+00:00", 1234.5)
    assert again["rescored"].endswith(f" at {json.loads(out)['commit']}")
    assert all(s["time_ci95"] != 9.0 for s in again["search"])  # the figures were written anew
    # Read back again: the same figures, nothing written.
    before = copy.read_text()
    code, out, _ = cli(*TUNE, "--grid", "scale=0.05,0.5,5", "--seeds", "100,101", "--out", str(copy),
                       "--runs", str(tuned_file.parent / "runs"), "--json")
    assert code == 0 and json.loads(out)["unchanged"] is True and copy.read_text() == before


def test_upsert_keeps_the_provenance_only_when_asked(tmp_path):
    path = tmp_path / "t.toml"
    first = {"table": "t", "method": "m", "chosen": {"a": 1.0}, "seeds": [100], "score": 0.5,
             "commit": "abc", "date": "2026-01-01", "wall_seconds": 900.0}
    assert tuned.upsert(path, first)
    assert tuned.upsert(path, {**first, "score": 0.4, "commit": "def", "date": "2026-02-02", "wall_seconds": 3.0},
                        keep_provenance=True)
    kept = tuned.find(tuned.read(path), "t", "m")
    assert (kept["score"], kept["commit"], kept["wall_seconds"], kept["rescored"]) == (0.4, "abc", 900.0, "2026-02-02 at def")
    assert tuned.upsert(path, {**first, "score": 0.3, "commit": "ghi", "date": "2026-03-03"})
    assert tuned.find(tuned.read(path), "t", "m")["commit"] == "ghi"


def test_coordinate_descent_ends_at_a_coordinate_wise_minimum(tmp_path, cli):
    code, out, err = cli(*TUNE, "--seeds", "100", "--descent", "--grid", "scale=0.05,0.5,5",
                         "--grid", "adaptive=false,true", "--out", str(tmp_path / "t.toml"),
                         "--runs", str(tmp_path / "runs"), "--json")
    assert code == 0, err
    entry = json.loads(out)
    tried = {(s["options"]["scale"], s["options"]["adaptive"]): s["score"] for s in entry["search"]}
    assert (0.05, False) in tried and entry["strategy"] == "descent"
    assert {s["seeds"] for s in entry["search"]} == {1}  # seed 100 alone, not a count of 100 seeds
    chosen = (entry["chosen"]["scale"], entry["chosen"]["adaptive"])
    assert chosen == min(tried, key=tried.get)
    # Every move along one option from the choice was tried, and none is better.
    for neighbour in [(v, chosen[1]) for v in (0.05, 0.5, 5.0)] + [(chosen[0], a) for a in (False, True)]:
        assert tried[neighbour] >= tried[chosen]


def _suite(tmp_path, tuned_path=None, scoring="[0, 1]", tuning="[100, 101]"):
    path = tmp_path / "s.toml"
    path.write_text(f"""name = "s"
scoring_seeds = {scoring}
tuning_seeds = {tuning}
{f'tuned = "{tuned_path}"' if tuned_path else ''}
[[experiments]]
model = "lorenz96"
obs = ["every:2"]
cycles = 24
burn_in = 4
methods = ["free", "3dvar"]
method_options = {{ 3dvar = {{ b_source = "climatology", scale = 1.0 }} }}
""")
    return path


def test_tune_refuses_the_suites_scoring_seeds(tmp_path, cli):
    code, _, err = cli(*TUNE, "--grid", "scale=0.5,1", "--seeds", "1,100", "--suite", str(_suite(tmp_path)),
                       "--out", str(tmp_path / "t.toml"))
    assert code == 2 and "tuning seeds 1 are scoring seeds of suite 's'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.toml").exists()


def test_compare_applies_the_tuned_options_and_reports_them(tmp_path, tuned_file, cli):
    (entry,) = tuned.read(tuned_file)
    suite_path = str(_suite(tmp_path, tuned_file))
    suite = suites.load_suite(suite_path)
    args = build_parser().parse_args(["compare", "--suite", suite_path])
    protocol: dict = {}
    jobs = suites.build_jobs(args, suite, get_registry(), protocol)
    scales = {j["method_options"].get("scale") for j in jobs if j["method"] == "3dvar"}
    assert scales == {entry["chosen"]["scale"]}  # the tuned value wins over the block's scale = 1.0
    info = protocol["lorenz96-every2"]
    assert info["tuned"] == {"3dvar": entry["chosen"]} and info["tuning_seeds"] == {100, 101}
    code, out, err = cli("compare", "--suite", _suite(tmp_path, tuned_file), "--serial", "--no-plots", "--json",
                         "--out", tmp_path / "cmp")
    assert code == 0, err
    (table,) = json.loads(out)["tables"]
    assert table["scored_seeds"] == [0, 1] and table["tuning_seeds"] == [100, 101]
    rows = {r["method"]: r for r in table["rows"]}
    assert rows["3dvar"]["tuned"] == entry["chosen"] and rows["free"]["tuned"] is None
    assert all(isinstance(r["stationary"], bool) for r in rows.values())


def test_the_plan_estimates_an_unstarted_tuned_row_from_its_tuning_runs(tmp_path, tuned_file, cli):
    """Before any scoring run finishes, compare --plan prices the tuned row at its chosen
    setting's seconds per cycle in the tuning runs; the untuned row stays 'unknown'."""
    (entry,) = tuned.read(tuned_file)
    (chosen,) = [s for s in entry["search"] if s["options"] == entry["chosen"]]
    per_cycle = chosen["run_seconds"] / (chosen["seeds"] * entry["cycles"])
    assert tuned.seconds_per_cycle(entry) == pytest.approx(per_cycle) and per_cycle > 0
    code, out, err = cli("compare", "--suite", _suite(tmp_path, tuned_file), "--out", tmp_path / "cmp", "--plan", "--json")
    assert code == 0, err
    rows = {r["row"]: r for r in json.loads(out)["rows"]}
    assert rows["3dvar"]["estimated_from"] == "tuning runs"
    assert rows["3dvar"]["seconds_left"] == pytest.approx(per_cycle * 24 * 2)  # 24 cycles x scoring seeds 0, 1
    assert rows["free"]["estimated_from"] is None and rows["free"]["seconds_left"] is None
    code, out, _ = cli("compare", "--suite", _suite(tmp_path, tuned_file), "--out", tmp_path / "cmp", "--plan")
    assert code == 0 and f"~{per_cycle * 48:,.0f}*" in out and "1 row(s) with none ('unknown')" in out


def test_compare_refuses_to_score_the_seeds_the_applied_options_were_tuned_on(tmp_path, tuned_file, cli):
    code, _, err = cli("compare", "--suite", _suite(tmp_path, tuned_file, scoring="[0, 101]", tuning="[100]"),
                       "--serial", "--no-plots", "--out", tmp_path / "cmp")
    assert code == 2 and "scoring seeds 101 were used to tune" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("values, chosen, expected", [
    (["0.5", "0.25", "1", "0.1"], "0.1", "0.04"),  # geometric below the smallest
    (["10", "20"], "20", "40"),  # integers stay integers
    (["1.0", "1.05", "1.1"], "1.1", "1.15238"),
    (["0", "0.05", "0.1"], "0", "-0.05"),  # arithmetic through zero (the method may refuse it)
    (["0.5", "0.25", "1"], "0.5", None),  # interior
    (["decode", "increment"], "decode", None),  # not numeric
    (["3"], "3", None),  # nothing to step from
])
def test_edge_extension(values, chosen, expected):
    from interfaces.tune import edge_extension

    assert edge_extension(values, chosen) == expected


def test_extend_edges_searches_beyond_a_choice_at_the_grid_edge(tmp_path):
    """A two-value grid always chooses an edge, so --extend-edges adds one value beyond it (0.2
    above 0.1, or 0.025 below 0.05) and descends again; it stops when the choice is interior or
    its budget is spent, and records what it added."""
    from interfaces.cli import main

    out = tmp_path / "tuned.toml"
    code = main([*TUNE, "--grid", "scale=0.05,0.1", "--seeds", "100,101", "--out", str(out),
                 "--runs", str(tmp_path / "runs"), "--descent", "--rounds", "1", "--extend-edges", "2"])
    assert code == 0
    (entry,) = tomllib.loads(out.read_text())["entry"]
    added = entry["extended"]["scale"]
    assert added[0] in (0.2, 0.025) and 1 <= len(added) <= 2
    tried = [s["options"]["scale"] for s in entry["search"]]
    assert tried == [0.05, 0.1, *added]
    best = min(entry["search"], key=lambda s: s["score"])["options"]["scale"]
    assert entry["chosen"]["scale"] == best
    assert len(added) == 2 or min(tried) < best < max(tried)  # stopped: interior, or out of budget
    assert "--extend-edges 2" in entry["command"]


def test_extend_edges_needs_descent(tmp_path):
    from interfaces.cli import main

    assert main([*TUNE, "--grid", "scale=0.05,0.1", "--seeds", "100,101", "--out", str(tmp_path / "t.toml"),
                 "--extend-edges", "1"]) != 0


def test_extend_edges_skips_a_value_the_method_refuses(tmp_path):
    """RTPS chosen at 0.8 of 0.6-0.8 would step to 1.07, which the LETKF refuses (RTPS is at
    most 1): nothing is added, so no run is spent on a setting that can only fail."""
    from interfaces.tune import Search

    args = Namespace(method="letkf", model="lorenz96", obs="every:2", obs_std=None, cycles=10, burn_in=2,
                     members=None, options=[], truth_options=[], model_error=None, runs=str(tmp_path),
                     extend_edges=1)
    search = Search(args, get_registry(), {"rtps": ["0.6", "0.8"], "inflation": ["1.0", "1.05"]}, [100])
    assert search._extend_edges(("0.8", "1.05")) is True  # inflation 1.05 grows to 1.1025
    assert search.grid == {"rtps": ["0.6", "0.8"], "inflation": ["1.0", "1.05", "1.1025"]}
    assert search.extended == {"inflation": ["1.1025"]}


def test_each_option_has_its_own_extension_budget_and_an_edge_left_is_recorded(tmp_path):
    """The 6-member LETKF's search on the imperfect-physics table: inflation's list grew twice
    (to 0.952, then 0.907), and only then did additive inflation reach its list's edge (0.2). A
    budget of K extension passes stopped there; a budget per option grows additive's list too
    (to 0.4), and the choice left at an edge (inflation, its budget spent) is recorded."""
    from interfaces.tune import Search, search_table

    args = Namespace(method="letkf", model="lorenz96", obs="every:2", obs_std=None, cycles=10, burn_in=2,
                     members=None, options=[], truth_options=[], model_error=None, runs=str(tmp_path),
                     extend_edges=2, rounds=3, descent=True)
    search = Search(args, get_registry(), {"inflation": ["1.0", "1.05", "1.1"], "additive": ["0", "0.1", "0.2"]}, [100])

    def score(inflation, additive):  # optimum at inflation 0.8; the best additive grows as inflation falls
        return (inflation - 0.8) ** 2 + (additive - 0.1 - (1.0 - inflation)) ** 2

    def evaluate(settings, bar):
        for s in settings:
            search.scores.setdefault(s, {"score": score(*map(float, s)), "options": dict(zip(search.grid, s))})

    search.evaluate = evaluate
    search.descend(None)
    assert search.extended == {"inflation": ["0.952381", "0.90703"], "additive": ["0.4"]}
    best = search.pick(list(search.scores))
    assert best == ("0.90703", "0.2")  # additive 0.2 is interior now that 0.4 was tried
    assert search.at_edge(best) == {"inflation": "lower"}  # 0.864 was never tried
    assert search.at_edge(("1.0", "0.1")) is None
    entry = {"table": "t", "method": "letkf", "seeds": [100], "cycles": 10, "burn_in": 2,
             "chosen": {"inflation": 0.90703, "additive": 0.2}, "score": 0.0115, "at_edge": search.at_edge(best),
             "extended": {k: [float(v) for v in vs] for k, vs in search.extended.items()}, "search": []}
    assert ("At the edge of the search: inflation 0.90703 (lower; its list grew 2 time(s))"
            in search_table(entry))


def _search_with_scores(tmp_path, scores: dict, tolerance: float, cost_options: str = "max_iter,nmc_samples"):
    from interfaces.tune import Search

    args = Namespace(method="3dvar", model="lorenz96", obs="every:2", obs_std=None, cycles=10, burn_in=2,
                     members=None, options=["b_source=climatology"], truth_options=[], model_error=None,
                     runs=str(tmp_path), extend_edges=0, tolerance=tolerance, cost_options=cost_options)
    # 3D-Var's max_iter and nmc_samples stand in for reverse steps and posterior samples.
    grid = {"scale": ["0.5", "1"], "max_iter": ["10", "20", "40", "80"], "nmc_samples": ["4", "8"]}
    search = Search(args, get_registry(), grid, [100])
    search.scores = {s: {"score": v} for s, v in scores.items()}
    return search


def test_tolerance_prefers_the_cheapest_setting_within_the_margin(tmp_path):
    """80 steps at 0.1797 against 40 at 0.1814 (0.9 % apart, the imperfect-physics LO-SDA
    search): with a 1 % tolerance the cheaper 40 steps wins, with none the lowest score."""
    scores = {("1", "40", "8"): 0.1814, ("1", "80", "8"): 0.1797, ("1", "20", "8"): 0.1915,
              ("1", "40", "4"): 0.1900, ("0.5", "40", "8"): 0.1800}
    assert _search_with_scores(tmp_path, scores, 0.0).pick(list(scores)) == ("1", "80", "8")
    assert _search_with_scores(tmp_path, scores, 0.01).pick(list(scores)) == ("0.5", "40", "8")  # cost tie: lower score
    assert _search_with_scores(tmp_path, scores, 0.06).pick(list(scores)) == ("1", "40", "4")  # 160 < 320 < ...
    # No cost option in the grid: the tolerance changes nothing.
    assert _search_with_scores(tmp_path, scores, 0.5, cost_options="steps").pick(list(scores)) == ("1", "80", "8")


def test_tolerance_refuses_a_non_numeric_cost_option_and_a_bad_margin(tmp_path, cli):
    from interfaces.errors import UsageError
    from interfaces.tune import Search

    args = Namespace(method="3dvar", model="lorenz96", obs="every:2", obs_std=None, cycles=10, burn_in=2,
                     members=None, options=["b_source=climatology"], truth_options=[], model_error=None,
                     runs=str(tmp_path), extend_edges=0, tolerance=0.01, cost_options="adaptive")
    with pytest.raises(UsageError, match="cost option 'adaptive' needs numeric"):
        Search(args, get_registry(), {"adaptive": ["false", "true"]}, [100])
    code, _, err = cli(*TUNE, "--grid", "scale=0.05,0.5", "--seeds", "100", "--tolerance", "1.5",
                       "--out", str(tmp_path / "t.toml"))
    assert code != 0 and "--tolerance must be a relative margin" in err


def test_tolerance_end_to_end_records_what_it_traded(tmp_path, cli):
    """One CG iteration against thirty (3D-Var's max_iter standing in for reverse steps): without
    a tolerance the converged 30 wins; with a margin just wide enough, the one-iteration setting
    is chosen from the same run files and the record keeps the lowest score it gave up."""
    common = [*TUNE, "--grid", "max_iter=1,30", "--seeds", "100,101", "--runs", str(tmp_path / "runs")]
    code, text, err = cli(*common, "--out", str(tmp_path / "plain.toml"), "--json")
    assert code == 0, err
    plain = json.loads(text)
    scores = {s["options"]["max_iter"]: s["score"] for s in plain["search"]}
    assert scores[30] < scores[1] and plain["chosen"] == {"max_iter": 30}  # unconverged CG is worse
    margin = (scores[1] / scores[30] - 1) * 1.01
    out = tmp_path / "tolerant.toml"
    code, text, err = cli(*common, "--out", str(out), "--tolerance", f"{margin:.6g}", "--cost-options", "max_iter")
    assert code == 0, err
    (entry,) = tuned.read(out)
    assert entry["chosen"] == {"max_iter": 1} and entry["score"] == pytest.approx(scores[1])
    assert entry["lowest"] == {"options": {"max_iter": 30}, "score": pytest.approx(scores[30])}
    assert entry["tolerance"] == pytest.approx(margin, rel=1e-5) and entry["cost_options"] == ["max_iter"]
    assert f"--tolerance {margin:.6g} --cost-options max_iter" in entry["command"]
    assert "Chosen: the cheapest setting (product of max_iter)" in text and "| lowest |" in text
    # A margin just too narrow keeps the lowest score.
    code, text, err = cli(*common, "--out", str(out), "--tolerance", f"{margin / 1.02:.6g}",
                          "--cost-options", "max_iter", "--json")
    assert code == 0 and json.loads(text)["chosen"] == {"max_iter": 30} and json.loads(text)["lowest"] is None


def test_calibrate_prefers_the_spread_skill_nearest_one_within_the_margin(tmp_path):
    """An ensemble's spread control (RTPS) costs the same at every value: with --calibrate, of
    the settings within the tolerance the best-calibrated wins (by ratio: 0.8 is nearer 1 than
    1.3), never one outside the margin however well calibrated; without it, the lowest score."""
    from interfaces.tune import Search

    args = Namespace(method="enkf", model="lorenz96", obs="every:2", obs_std=None, cycles=10, burn_in=2,
                     members=10, options=[], truth_options=[], model_error=None, runs=str(tmp_path),
                     extend_edges=0, tolerance=0.01, cost_options="max_iter", calibrate=True)
    search = Search(args, get_registry(), {"rtps": ["0.5", "0.7", "0.9", "0.95"]}, [100])
    search.scores = {("0.5",): {"score": 0.1300, "spread_skill": 0.72}, ("0.7",): {"score": 0.1305, "spread_skill": 0.80},
                     ("0.9",): {"score": 0.1310, "spread_skill": 1.30}, ("0.95",): {"score": 0.1400, "spread_skill": 1.0}}
    assert search.pick(list(search.scores)) == ("0.7",)
    search.calibrate = False
    assert search.pick(list(search.scores)) == ("0.5",)
    search.calibrate, search.tolerance = True, 0.0
    assert search.pick(list(search.scores)) == ("0.5",)  # no margin: calibration has nothing to choose among


def test_calibrate_end_to_end_records_spread_skill_and_its_rule(tmp_path, cli):
    """A 10-member LETKF's inflation on Lorenz-96, every site observed, searched with --calibrate
    and a 40 % margin: the choice is the recorded spread-skill nearest 1 among the settings within
    the margin, which here is not the lowest score (inflation 1.06 is lowest but over-dispersive,
    1.03 near 0.9); the search table shows each spread-skill and the command says --calibrate."""
    common = ["tune", "--method", "letkf", "--obs", "all", "--cycles", "100", "--burn-in", "40", "--serial",
              "--no-progress", "--members", "10", "--seeds", "100,101", "--runs", str(tmp_path / "runs"),
              "--grid", "inflation=1.03,1.06,1.2", "--set", "rtps=0"]
    out = tmp_path / "calibrated.toml"
    code, text, err = cli(*common, "--out", str(out), "--tolerance", "0.4", "--calibrate")
    assert code == 0, err
    (entry,) = tuned.read(out)
    records = {s["options"]["inflation"]: s for s in entry["search"]}
    lowest = min(records.values(), key=lambda s: s["score"])["score"]
    near = {k: s["spread_skill"] for k, s in records.items() if s["score"] <= lowest * 1.4}
    nearest = min(near, key=lambda k: abs(math.log(near[k])))
    assert entry["chosen"] == {"inflation": nearest} and entry["calibrate"] is True
    assert entry["lowest"] is not None and entry["lowest"]["options"] != entry["chosen"]  # the rule chose
    assert "--calibrate" in entry["command"] and "| spread/skill |" in text and "spread-skill nearest 1" in text
    # --calibrate needs a margin to choose within and an ensemble to calibrate.
    code, _, err = cli(*common, "--out", str(tmp_path / "t.toml"), "--calibrate")
    assert code != 0 and "--calibrate" in err and "--tolerance" in err


def test_each_ensemble_size_takes_the_entry_tuned_at_that_size(tmp_path):
    """A suite running the LETKF at 20 members and a 6-member variant applies each size's own
    entry; with no entry at 6 the variant runs untuned (never the 20-member choice)."""
    def entry(members, inflation):
        return {"table": "lorenz96-every2", "method": "letkf", "members": members, "chosen": {"inflation": inflation},
                "seeds": [100, 101], "score": 1.0, "search": []}

    path = tmp_path / "tuned.toml"
    tuned.upsert(path, entry(20, 1.02))
    tuned.upsert(path, entry(6, 1.2))
    assert len(tuned.read(path)) == 2  # one entry per size, not one replacing the other
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(f"""name = "s"
scoring_seeds = [0]
tuning_seeds = [100, 101]
tuned = "{path}"
[[experiments]]
model = "lorenz96"
obs = ["every:2"]
cycles = 12
methods = ["letkf"]
members = {{ letkf = 20 }}
variants = {{ letkf = [{{ members = 6 }}] }}
""")
    args = build_parser().parse_args(["compare", "--suite", str(suite_file)])

    def inflation_by_size():
        jobs = suites.build_jobs(args, suites.load_suite(str(suite_file)), get_registry())
        return {j["members"]: j["method_options"].get("inflation") for j in jobs}

    assert inflation_by_size() == {20: 1.02, 6: 1.2}
    path.write_text(tuned.dumps([entry(20, 1.02)]))
    assert inflation_by_size() == {20: 1.02, 6: None}  # the method's own default: nothing applied
    assert tuned.find(tuned.read(path), "lorenz96-every2", "letkf", 6)["members"] == 20  # the caller refuses it


def test_iteration_counts_are_cost_options_by_default(tmp_path):
    """The latent methods' optimiser iterations (iters) cost like reverse steps: within the
    tolerance, fewer win (the arctan and 1 % tables search LO-SDA's and latent 3D-Var's)."""
    from interfaces.suites import COST_OPTIONS
    from interfaces.tune import Search

    args = Namespace(method="losda", model="lorenz96", obs="every:2", obs_std=None, cycles=10, burn_in=2,
                     members=None, options=[], truth_options=[], model_error=None, runs=str(tmp_path),
                     extend_edges=0, tolerance=0.01, cost_options=",".join(COST_OPTIONS))
    search = Search(args, get_registry(), {"prox": ["0.5", "0.25"], "iters": ["5", "10", "20"]}, [100])
    assert search.cost_keys == ["iters"]
    search.scores = {("0.5", "20"): {"score": 0.200}, ("0.5", "10"): {"score": 0.2015},
                     ("0.25", "5"): {"score": 0.210}}
    assert search.pick(list(search.scores)) == ("0.5", "10")  # within 1 % of the lowest, half the iterations


def test_the_search_table_tells_an_untestable_window_from_a_trend():
    """LO-SDA's arctan search (2026-12-07): 13 of its 14 settings read '**no**' as if their
    windows trended, though no seed could be tested (100 cycles, lag-1 autocorrelation near
    0.95). A False flag without a time interval is untestable, one with an interval a trend."""
    from interfaces.tune import search_table

    row = {"options": {"prox": 0.1}, "score": 0.126, "score_ci95": 0.06, "error": None}
    entry = {"table": "t", "method": "losda", "seeds": [100, 101], "cycles": 200, "burn_in": 100,
             "chosen": {"prox": 0.1}, "score": 0.126,
             "search": [{**row, "stationary": False, "time_ci95": float("nan")},
                        {**row, "options": {"prox": 0.25}, "stationary": False, "time_ci95": 0.01},
                        {**row, "options": {"prox": 0.5}, "stationary": True, "time_ci95": 0.01}]}
    lines = search_table(entry).splitlines()
    rows = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| 0.")}
    assert "**no** (untestable)" in rows["0.1"] and "chosen" in rows["0.1"]
    assert "| **no** |" in rows["0.25"] and "untestable" not in rows["0.25"]
    assert "| yes |" in rows["0.5"]
    assert any(line.startswith("**no** (untestable): the scored window") for line in lines)
    entry["search"] = entry["search"][1:]
    assert "untestable" not in search_table(entry)
