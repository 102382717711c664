"""Failure records: a job that failed for a reason its settings and code determine (a divergence,
a broken contract) is read back as failed, not run again; a machine's failure (memory) is retried;
a record made by other code, or --retry-failed, runs the job again; the plan, the interim tables
and the archive know about them."""

import json
from argparse import Namespace

import pytest

from interfaces import archive, compare, failures, sweep
from interfaces.assimilator import Assimilator
from interfaces.errors import PluginError
from interfaces.hookspecs import hookimpl
from interfaces.registry import build_registry


class Flaky(Assimilator):
    """Fails at its third analysis when ``fail`` is set: with a RuntimeError (the settings'
    fault) or a MemoryError (the machine's). Counts its analyses over all instances."""

    name = "flaky"
    description = "fails at its third analysis (tests of failure records)"
    defaults = {"fail": "none"}
    analyses = 0

    def prepare(self, context):
        self.calls = 0

    def assimilate(self, background, observations, operator):
        Flaky.analyses += 1
        self.calls += 1
        if self.calls == 3 and self.options["fail"] == "diverge":
            raise RuntimeError("deliberate divergence")
        if self.calls == 3 and self.options["fail"] == "memory":
            raise MemoryError("deliberate shortage")
        return background.clone()


class FlakyPlugin:
    @hookimpl
    def da_harness_register(self, registry):
        registry.add_assimilator(Flaky)


@pytest.fixture()
def registry():
    return build_registry(extra_plugins=[("flaky-plugin", FlakyPlugin())])


def job(fail="diverge", seed=0):
    return sweep.make_job(model="lorenz96", method="flaky", obs="every:2", cycles=8, burn_in=2, seed=seed,
                          method_options={"fail": fail})


def run(jobs, out, registry, **kw):
    return sweep.run_jobs(jobs, out, mode="serial", registry=registry, **kw)


def test_a_divergence_is_recorded_and_read_back_without_running_again(tmp_path, registry):
    (first,) = run([job()], tmp_path, registry)
    assert first["status"] == "failed" and "deliberate divergence" in first["error"] and not first.get("recorded")
    record = failures.record_path(first["file"])
    assert record.exists() and not sweep.run_path(tmp_path, job()).exists()
    saved = json.loads(record.read_text())
    assert saved["code_version"] == sweep.job_code_version(job(), registry) and saved["job"] == job()

    Flaky.analyses = 0
    (again,) = run([job()], tmp_path, registry)
    assert Flaky.analyses == 0  # read back, not run
    assert again["status"] == "failed" and again["recorded"] is True and again["error"] == first["error"]
    assert "as recorded by an earlier run" in sweep._describe(again, 1, 1)
    assert sweep.pending([job()], tmp_path, registry) == []
    assert sweep.finished_record(job(), tmp_path, registry)["status"] == "failed"


def test_retry_failed_runs_the_job_again(tmp_path, registry):
    run([job()], tmp_path, registry)
    Flaky.analyses = 0
    (again,) = run([job()], tmp_path, registry, retry_failed=True)
    assert Flaky.analyses == 3 and again["status"] == "failed" and not again.get("recorded")
    assert sweep.pending([job()], tmp_path, registry, retry_failed=True) == [job()]


def test_a_record_made_by_other_code_is_ignored_and_a_success_clears_it(tmp_path, registry):
    ok = job(fail="none")
    path = sweep.run_path(tmp_path, ok)
    failures.write(path, "0123456789abcdef", "PluginError: made by other code", ok)
    assert failures.read(path, sweep.job_code_version(ok, registry)) is None
    (result,) = run([ok], tmp_path, registry)
    assert result["status"] == "complete" and not failures.record_path(path).exists()


def test_a_failure_of_the_machine_is_not_recorded(tmp_path, registry):
    (first,) = run([job(fail="memory")], tmp_path, registry)
    assert first["status"] == "failed" and "deliberate shortage" in first["error"]
    assert not failures.record_path(first["file"]).exists()
    Flaky.analyses = 0
    run([job(fail="memory")], tmp_path, registry)
    assert Flaky.analyses == 3  # retried


@pytest.mark.parametrize("exc, expected", [
    (PluginError("model 'sw' forecast non-finite values at cycle 9"), True),
    (RuntimeError("not a harness error"), False),
    (PluginError("method 'x' failed at cycle 3: OutOfMemoryError: CUDA out of memory"), False),
])
def test_which_failures_are_the_settings_fault(exc, expected):
    assert failures.reproducible(exc) is expected


def test_a_wrapped_os_error_is_the_machines_fault():
    try:
        try:
            raise OSError("disk full")
        except OSError as cause:
            raise PluginError("method 'x' failed at cycle 3: OSError: disk full") from cause
    except PluginError as exc:
        assert failures.reproducible(exc) is False


def test_compare_reads_a_recorded_failure_back_and_says_so(tmp_path, registry):
    jobs = [job(fail="none"), job()]
    compare.compare(jobs, tmp_path, registry, serial=True, plots=False, log=lambda s: None)
    Flaky.analyses = 0
    result = compare.compare(jobs, tmp_path, registry, serial=True, plots=False, log=lambda s: None)
    assert Flaky.analyses == 0
    assert [r["status"] for r in result["records"]] == ["skipped", "failed"]
    assert "## Failed jobs" in result["markdown"] and "1 failure(s) recorded by an earlier run" in result["markdown"]
    assert "ran 0 jobs" in result["markdown"]
    interim = compare.report_finished(jobs, tmp_path, registry, plots=False)
    assert "deliberate divergence" in interim["markdown"] and "1 recorded failure(s)" in interim["markdown"]


def test_the_plan_counts_a_recorded_failure_as_finished(tmp_path, registry):
    from interfaces.plan import format_plan, plan_rows

    run([job(seed=0), job(fail="none", seed=1)], tmp_path, registry)
    records = [{"job": job(seed=0), "row": "flaky"}, {"job": job(fail="none", seed=1), "row": "flaky"},
               {"job": job(seed=2), "row": "flaky"}]
    (row,) = plan_rows(records, tmp_path, registry)
    assert row["failed"] == [0] and row["to_run"] == [2]
    assert "2/3" in format_plan([row], tmp_path) and "1 failed (seed 0), as recorded" in format_plan([row], tmp_path)


def test_the_archive_keeps_failure_records(tmp_path, registry):
    runs, kept, fresh = tmp_path / "runs", tmp_path / "archive", tmp_path / "fresh"
    run([job()], runs, registry)
    written = archive.sync(runs, kept)
    assert [p.name for p in written] == [failures.record_path(sweep.run_path(runs, job())).name]
    assert archive.sync(runs, kept) == []  # already there
    archive.restore(kept, fresh)
    Flaky.analyses = 0
    (again,) = run([job()], fresh, registry)
    assert Flaky.analyses == 0 and again["recorded"] is True


def test_a_tuning_search_reads_a_diverged_setting_back(tmp_path, registry):
    from interfaces.tune import Search

    args = Namespace(method="flaky", model="lorenz96", obs="every:2", obs_std=None, cycles=8, burn_in=2,
                     members=None, options=[], truth_options=[], model_error=None, runs=str(tmp_path),
                     extend_edges=0, serial=True, cache_dir=None, scheduler=None, workers=1, no_progress=True)
    grid = {"fail": ["none", "diverge"]}
    Search(args, registry, grid, [100]).evaluate([("none",), ("diverge",)], None)
    Flaky.analyses = 0
    search = Search(args, registry, grid, [100])
    search.evaluate([("none",), ("diverge",)], None)
    assert Flaky.analyses == 0
    assert search.scores[("diverge",)]["error"].startswith("PluginError") and search.scores[("none",)]["error"] is None
