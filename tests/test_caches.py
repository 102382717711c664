"""Caches that cannot go stale or collide (issue 12): code versions, locking, rebuild notes."""

import multiprocessing
import time
from pathlib import Path

import torch

from interfaces import cache
from interfaces.models.sw import ShallowWater

SMALL = dict(spinup_days=0.5, init_days=0.25, clim_members=2, clim_spacing=1)


# --- code versions --------------------------------------------------------------------------
def _package(tmp_path, monkeypatch, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    cache._version.cache_clear()


def test_code_version_follows_imports_and_ignores_other_modules(tmp_path, monkeypatch):
    _package(tmp_path, monkeypatch, {
        "toypkg/__init__.py": "",
        "toypkg/producer.py": "from . import helper\nfrom .helper import f\n",
        "toypkg/helper.py": "def f():\n    return 1\n",
        "toypkg/plots.py": "X = 1\n",
    })
    files = cache.source_files(["toypkg.producer"], follow=("toypkg",))
    assert set(files) == {"toypkg", "toypkg.producer", "toypkg.helper"}
    before = cache.code_version(["toypkg.producer"], follow=("toypkg",))
    (tmp_path / "toypkg/plots.py").write_text("X = 2\n")  # not imported by the producer
    cache._version.cache_clear()
    assert cache.code_version(["toypkg.producer"], follow=("toypkg",)) == before
    (tmp_path / "toypkg/helper.py").write_text("def f():\n    return 2\n")  # imported: new version
    cache._version.cache_clear()
    assert cache.code_version(["toypkg.producer"], follow=("toypkg",)) != before
    # Without ``follow`` only the named module counts.
    assert set(cache.source_files(["toypkg.producer"])) == {"toypkg.producer"}


def test_run_code_version_covers_model_method_and_harness_not_reports():
    from baselines.var3d import Var3D
    from interfaces.models.lorenz96 import Lorenz96

    files = cache.source_files({"interfaces.models.lorenz96", "baselines.var3d", "interfaces.harness"},
                               cache.PROJECT_PACKAGES)
    assert {"baselines.static_b", "interfaces.observations", "interfaces.metrics", "interfaces.io"} <= set(files)
    assert not {"interfaces.report", "interfaces.plots", "interfaces.cli", "interfaces.compare"} & set(files)
    assert cache.run_code_version(Lorenz96(), Var3D()) == cache.run_code_version(Lorenz96(), Var3D())


# --- build once, under a lock ---------------------------------------------------------------
def _build_entry(path: str, log: str, barrier) -> None:
    """A child process: wait for its sibling, then get the cached entry, building it if needed."""
    def build():
        with open(log, "a") as fh:
            fh.write("built\n")
        time.sleep(1.5)  # long enough for the sibling to arrive while this one builds
        return torch.arange(1000, dtype=torch.float64) * 0.5

    def read(p: Path):
        if not p.exists():
            return None, "missing"
        return torch.load(p), ""

    barrier.wait()
    value = cache.build_once(Path(path), read, build, lambda v, tmp: torch.save(v, tmp), "a test entry")
    torch.save(value, f"{path}.{multiprocessing.current_process().name}.seen")


def test_two_processes_build_the_same_entry_once_and_read_identical_data(tmp_path):
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each, as two CLI runs
    barrier = ctx.Barrier(2)
    path, log = tmp_path / "entry.pt", tmp_path / "builds.log"
    procs = [ctx.Process(target=_build_entry, args=(str(path), str(log), barrier), name=f"p{i}") for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)  # generous: two fresh interpreters import torch, slow on a loaded machine
        assert p.exitcode == 0
    assert log.read_text().count("built") == 1
    seen = [torch.load(f"{path}.p{i}.seen") for i in range(2)]
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[0], torch.load(path))
    assert not list(tmp_path.glob(".entry.pt.*.tmp"))  # the temporary file was renamed away


def test_build_once_says_why_it_rebuilds(tmp_path, capsys):
    path = tmp_path / "x.pt"
    path.write_bytes(b"garbage")

    def read(p):
        try:
            return torch.load(p), ""
        except Exception:  # noqa: BLE001
            return None, "corrupt (unreadable)"

    value = cache.build_once(path, read, lambda: torch.ones(3), lambda v, tmp: torch.save(v, tmp), "ones")
    err = capsys.readouterr().err
    assert torch.equal(value, torch.ones(3)) and torch.equal(torch.load(path), value)
    assert f"rebuilding ones: the cached {path} is corrupt (unreadable)" in err
    assert f"caching ones in {path}" in err


# --- the sphere's climatology ---------------------------------------------------------------
def test_sw_climatology_made_by_other_code_is_rebuilt_and_said_so(tmp_path, monkeypatch, capsys):
    m = ShallowWater(**SMALL)
    m.cache_dir = tmp_path
    clim = m.climatology(4)
    path = m.cache_path("clim")
    err = capsys.readouterr().err
    assert f"caching the sw 32x64 clim states in {path}" in err
    m.climatology(4)
    assert capsys.readouterr().err == ""  # read back silently
    # An edit of sw.py or sphere.py changes the code version the file is checked against.
    monkeypatch.setattr(ShallowWater, "cache_version", staticmethod(lambda: "edited-code"))
    again = m.climatology(4)
    err = capsys.readouterr().err
    assert "is made by other code" in err and "interfaces.models.sw" in err
    assert torch.equal(again, clim)  # same code underneath, so the same numbers
    import xarray as xr

    with xr.open_dataset(path) as ds:
        assert ds.attrs["code_version"] == "edited-code"


def test_sw_cache_version_hashes_the_dynamics_source():
    from interfaces.models import sw

    files = cache.source_files(sw.CACHE_SOURCES)
    assert {Path(f).name for f in files.values()} == {"sw.py", "sphere.py"}
    assert len(ShallowWater.cache_version()) == 16


def test_sw_spin_up_shows_progress_only_when_asked(tmp_path, monkeypatch):
    shown = []
    original = cache.progress_bar

    def spy(total, desc, enabled, unit="step"):
        shown.append((desc, enabled))
        return original(total, desc, enabled, unit)

    monkeypatch.setattr(cache, "progress_bar", spy)
    m = ShallowWater(**SMALL)
    m.cache_dir = tmp_path
    m.progress = True
    m.climatology(2)
    assert any(d.startswith("sw: spin-up") and on for d, on in shown)
    assert any(d.startswith("sw: climatology run") and on for d, on in shown)
    shown.clear()
    m.progress = False
    m.initial_states(1, torch.Generator().manual_seed(0))
    assert shown and all(not on for _, on in shown)


# --- compare's run files --------------------------------------------------------------------
def _set_attr(path, name, value=None):
    import netCDF4

    with netCDF4.Dataset(path, "a") as nc:
        if value is None:
            nc.delncattr(name)
        else:
            nc.setncattr(name, value)


def test_sweep_reruns_a_run_file_made_by_other_code_and_flags_unversioned_ones(tmp_path):
    from interfaces import report, sweep

    job = sweep.make_job(model="lorenz96", method="3dvar", obs="every:2", cycles=12, burn_in=3, seed=0)
    runs = tmp_path / "runs"
    first = sweep.run_jobs([job], runs, mode="serial")[0]
    path = Path(first["file"])
    import xarray as xr

    with xr.open_dataset(path) as ds:
        assert ds.attrs["code_version"] == sweep.job_code_version(job)
    assert sweep.run_jobs([job], runs, mode="serial")[0]["status"] == "skipped"
    # Made by other code (an edit of the model, the method or the harness): rerun, and said so.
    _set_attr(path, "code_version", "0123456789abcdef")
    assert sweep.pending([job], runs) == [job]
    again = sweep.run_jobs([job], runs, mode="serial")[0]
    assert again["status"] == "complete" and "made by other code (0123456789abcdef)" in again["rerun"]
    assert again["summary"]["analysis_rmse"] == first["summary"]["analysis_rmse"]
    with xr.open_dataset(path) as ds:
        assert ds.attrs["code_version"] == sweep.job_code_version(job)
    # Written before versions were recorded: read (not hours of reruns), flagged in the header.
    _set_attr(path, "code_version")
    old = sweep.run_jobs([job], runs, mode="dask", scheduler="tcp://127.0.0.1:9")[0]  # no cluster needed
    assert old["status"] == "skipped" and old["code"] == "unrecorded"
    note = report._reuse_note({"jobs_run": 0, "jobs_read": 1, "jobs_read_unversioned": 1})
    assert "1 of them predate code versions" in note


# --- trained priors -------------------------------------------------------------------------
def test_a_prior_trained_by_other_code_is_retrained_and_said_so(tmp_path, capsys):
    from interfaces.assimilator import Context
    from interfaces.models.lorenz96 import Lorenz96
    from interfaces.observations import build_operator
    from losda_plugin import checkpoint
    from losda_plugin.methods import LOSDA

    tiny = {"preset": "quick", "vae_widths": "8", "latent_channels": 1, "vae_steps": 5, "denoiser_width": 8,
            "denoiser_blocks": 1, "denoiser_steps": 5, "pairs": 50}
    model = Lorenz96()
    op = build_operator("every:2", model, torch.Generator().manual_seed(0))
    ctx = Context(model=model, operator=op, climatology=model.climatology(100), members=1,
                  settings={"seed": 0}, cache_dir=tmp_path, generator=torch.Generator().manual_seed(0))
    LOSDA(**tiny).prepare(ctx)
    err = capsys.readouterr().err
    cfg, _ = LOSDA(**tiny).config(ctx)
    path = checkpoint.checkpoint_path(tmp_path, cfg)
    assert "no trained prior at" in err and f"wrote {path}" in err
    code = checkpoint.code_version(cfg, model)
    assert checkpoint.stale_reason(path, code) == ""
    LOSDA(**tiny).prepare(ctx)
    assert "training" not in capsys.readouterr().err  # loaded, not retrained
    # A checkpoint from other training code (or one that predates code versions) is retrained.
    payload = torch.load(path, weights_only=True)
    payload["code_version"] = "fedcba9876543210"
    torch.save(payload, path)
    assert checkpoint.stale_reason(path, code).startswith("made by other code (version fedcba9876543210")
    LOSDA(**tiny).prepare(ctx)
    err = capsys.readouterr().err
    assert f"the trained prior {path} is made by other code" in err and "training one now" in err
    assert torch.load(path, weights_only=True)["code_version"] == code
    # The version covers the training modules and the model's, not the guidance or the reports.
    files = cache.source_files(["losda_plugin.training", "interfaces.models.lorenz96"], ("losda_plugin", "interfaces.models"))
    assert {"losda_plugin.vae", "losda_plugin.denoiser", "interfaces.models.lorenz96"} <= set(files)
    assert not {"losda_plugin.guidance.losda", "interfaces.report"} & set(files)


def test_sweep_jobs_keep_freed_memory_whatever_the_worker_environment(tmp_path, monkeypatch):
    """Dask's nannies set MALLOC_TRIM_THRESHOLD_, which pins glibc's mmap threshold low; every
    job resets the allocator first (benchmarks/results/dask_allocator.md: EnSF 3.6x CPU)."""
    from interfaces import sweep

    calls = []
    monkeypatch.setattr(sweep, "keep_freed_memory", lambda: calls.append(1) or True)
    job = sweep.make_job(model="lorenz96", method="free", obs="every:2", cycles=3, burn_in=1, seed=0)
    record = sweep.run_job(job, str(tmp_path / "runs"))
    assert record["status"] == "complete" and calls == [1]
