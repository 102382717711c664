"""Sweeps: many experiments, one run file each, run serially or on Dask distributed.

A job is a plain dict of Experiment settings. Its run file is named by the hash of those
settings, so a rerun finds finished jobs (run-file status 'complete') and skips them, and a
partial file is resumed. A job that fails returns a record saying why; nothing else is lost.
A failure its settings and code determine (a divergence) is recorded beside the run file and read
back like a finished run, until the code changes or the caller asks to retry (interfaces/failures.py).

A run file records the version of the code that determines its numbers (the model's and the
method's modules and the harness, with what they import; interfaces/cache.py). A file made by
other code is rerun from scratch, finished or not: an edit to a report or a plot reuses every
run, an edit to the dynamics or a method reruns exactly the jobs it touches. Files written
before versions were recorded are read, and the table header counts them as of unknown code.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable

from . import failures
from .allocator import keep_freed_memory
from .equivalence import counts_as

#: The Experiment fields a job may set (everything that defines its numbers).
# ``device`` is set only off the CPU, so a CPU job's hash (and run file) is what it always was,
# and a CUDA run is never read back as the CPU one (their float rounding differs).
JOB_FIELDS = ("model", "method", "obs", "obs_std", "cycles", "burn_in", "members", "seed",
              "model_options", "method_options", "qc_background", "truth_options", "model_error", "forecast_bias",
              "device")


def make_job(**fields: Any) -> dict[str, Any]:
    unknown = set(fields) - set(JOB_FIELDS)
    if unknown:
        raise ValueError(f"unknown job fields: {', '.join(sorted(unknown))}")
    job = {"model_options": {}, "method_options": {}, **fields}
    return {k: job[k] for k in JOB_FIELDS if k in job}


def job_hash(job: dict[str, Any]) -> str:
    text = json.dumps(job, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_path(run_dir, job: dict[str, Any]) -> Path:
    return Path(run_dir) / f"{job['model']}-{job['method']}-s{job['seed']}-{job_hash(job)}.nc"


def job_code_version(job: dict[str, Any], registry=None) -> str | None:
    """The code version a run file of ``job`` must carry to be reused; None when it cannot be
    known beforehand (an unknown name fails in the job itself; a factory that is not a class)."""
    from .cache import run_code_version
    from .registry import get_registry

    registry = registry or get_registry()
    try:
        model = registry.model(job["model"]).factory
        method = registry.assimilator(job["method"]).factory
    except Exception:  # noqa: BLE001 - reported by the job when it runs
        return None
    if not (isinstance(model, type) and isinstance(method, type)):
        return None
    return run_code_version(model, method)


def read_run(path: Path, what: Callable[[Any], Any]) -> Any:
    """``what(dataset)`` from one opening of a run file; None when the file is missing or cannot
    be read (an unreadable file is simply redone)."""
    if not Path(path).exists():
        return None
    import xarray as xr

    try:
        with xr.open_dataset(path, engine="netcdf4", decode_times=False) as ds:
            return what(ds)
    except Exception:  # noqa: BLE001 - an unreadable file is simply redone
        return None


def read_attrs(path: Path) -> dict[str, Any] | None:
    """A run file's attributes; None when it is missing or cannot be read."""
    return read_run(path, lambda ds: dict(ds.attrs))


def attrs_state(attrs: dict[str, Any], code: str | None = None) -> tuple[str, dict | None, str]:
    """What a run file's attributes say of it, as ``file_state`` reports it (never 'missing' or
    'corrupt': those are about the file, not its attributes)."""
    made_by = str(attrs.get("code_version", ""))
    if code is not None and made_by and not counts_as(made_by, code):
        return "stale", None, made_by
    if attrs.get("status") == "complete" and "summary" in attrs:
        return "complete", json.loads(attrs["summary"]), made_by
    return "partial", None, made_by


def file_state(path: Path, code: str | None = None) -> tuple[str, dict | None, str]:
    """(status, summary or None, the file's code version or ''): status 'complete', 'partial',
    'missing', 'corrupt', or 'stale' when the file records a code version other than ``code``."""
    if not Path(path).exists():
        return "missing", None, ""
    attrs = read_attrs(path)
    if attrs is None:
        return "corrupt", None, ""
    return attrs_state(attrs, code)


def _skipped(job: dict, path: Path, summary: dict, made_by: str) -> dict[str, Any]:
    record = {"job": job, "file": str(path), "hash": job_hash(job), "status": "skipped", "summary": summary}
    if not made_by:
        record["code"] = "unrecorded"  # written before run files recorded their code version
    return record


def _recorded_failure(job: dict, path: Path, error: str) -> dict[str, Any]:
    return {"job": job, "file": str(path), "hash": job_hash(job), "status": "failed", "error": error,
            "recorded": True, "seconds": 0.0}


def finished_record(job: dict[str, Any], run_dir, registry=None, retry_failed: bool = False) -> dict[str, Any] | None:
    """The record of ``job`` read from its run file when that is complete and made by the
    current code (status 'skipped', as a rerun reports it), or from its failure record (status
    'failed', ``recorded`` True) unless ``retry_failed``; None when the job still has to run."""
    path = run_path(run_dir, job)
    return _read_back(job, path, job_code_version(job, registry), retry_failed)[0]


def _read_back(job: dict, path: Path, code: str | None, retry_failed: bool) -> tuple[dict | None, str, str]:
    """(record, run-file status, its code version): the record of a job that need not run (its
    run file complete, or its failure recorded under ``code`` and not retried), else None."""
    status, summary, made_by = file_state(path, code)
    if status == "complete":
        return _skipped(job, path, summary, made_by), status, made_by
    error = None if retry_failed else failures.read(path, code)
    return (_recorded_failure(job, path, error) if error else None), status, made_by


def scored_series(path, burn_in: int, variable: str = "analysis_rmse"):
    """The per-cycle ``variable`` of a run file over the scored cycles (cycle >= burn_in), as a
    numpy array; None when the file or variable is missing (the record keeps its summary)."""
    import xarray as xr

    try:
        with xr.open_dataset(path, engine="netcdf4", decode_times=False) as ds:
            if variable not in ds:
                return None
            values = ds[variable].values
            cycles = ds["cycle"].values if "cycle" in ds else range(len(values))
    except (OSError, ValueError):
        return None
    return values[[c >= (burn_in or 0) for c in cycles]]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def run_job(job: dict[str, Any], run_dir: str, cache_dir: str | None = None, threads: int = 1,
            registry=None, retry_failed: bool = False) -> dict[str, Any]:
    """Run one job (or find it finished, or failed as recorded). Never raises: failures come
    back as a record, and one its settings determine is recorded (interfaces/failures.py)."""
    path = run_path(run_dir, job)
    # Two sweeps on one folder (two compares, a compare beside a tune) must never write one run
    # file together: the second waits for the first (saying so), then reads its result back.
    with run_lock(path):
        return _run_job(job, path, cache_dir, threads, registry, retry_failed)


def _lock_entry(path: Path) -> Path:
    """Where a run file's lock lives: a '.locks' folder beside it, so that listings of run
    files never see it."""
    path = Path(path)
    return path.parent / ".locks" / path.name


def run_lock(path: Path):
    """The lock of one run file, held while a job is read back or run."""
    from .cache import locked

    return locked(_lock_entry(path), f"run {Path(path).name}")


def is_running(path: Path) -> bool:
    """Whether a process holds the run lock of ``path`` now (a sweep is running that job). Tested
    by taking the lock without waiting and giving it back at once; a run file that was never
    locked (no lock file) is not running."""
    from filelock import FileLock, Timeout

    entry = _lock_entry(path)
    held = entry.with_name(entry.name + ".lock")  # where cache.locked keeps an entry's lock
    if not held.exists():
        return False
    lock = FileLock(str(held))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def _run_job(job, path: Path, cache_dir, threads, registry, retry_failed) -> dict[str, Any]:
    import torch

    from .harness import Experiment, run_experiment

    record = {"job": job, "file": str(path), "hash": job_hash(job)}
    code = job_code_version(job, registry)
    known, status, made_by = _read_back(job, path, code, retry_failed)
    if known is not None:
        return known
    if status == "stale":
        record["rerun"] = f"its run file was made by other code ({made_by})"
    if status in ("corrupt", "stale"):
        path.unlink(missing_ok=True)
    # Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_ set, which freezes glibc's mmap
    # threshold at 128 KiB: every tensor above it is then mapped and zero-filled afresh. Measured
    # on EnSF at 32x64 (a (20, 6144) float64 tensor per operation, ~4000 operations a cycle):
    # 7.6 s per cycle in that environment against 1.4 s without. Same numbers, less time.
    keep_freed_memory()
    # One thread per job: the workers share the cores, and results do not depend on the
    # thread count, so serial and parallel sweeps give identical numbers.
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        exp = Experiment(**job, out=str(path), resume=status == "partial", cache_dir=cache_dir)
        result = run_experiment(exp, registry)
        failures.clear(path)
        return {**record, "status": "complete", "summary": result.summary, "seconds": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - one job's failure must not end the sweep
        if code is not None and failures.reproducible(exc):
            failures.write(path, code, _one_line(exc), job)
        return {**record, "status": "failed", "error": _one_line(exc), "traceback": traceback.format_exc(),
                "seconds": time.perf_counter() - t0}
    finally:
        torch.set_num_threads(old_threads)


def _needs_training(registry, method: str) -> bool:
    from .assimilator import Assimilator

    factory = registry.assimilator(method).factory
    return isinstance(factory, type) and factory.train is not Assimilator.train


def warm_up(jobs: list[dict], registry, cache_dir: str | None, log: Callable[[str], None],
            threads: int = 1) -> dict[tuple, float]:
    """Before the fan-out, in this process: fill each model's caches (climatology, spun-up
    states) and train each method that needs training, so that parallel workers only read the
    shared cache directory. Returns the seconds spent per (model options, method options) group.

    One torch thread by default: on a shared machine OpenMP threads spin at their barriers
    (one 32-member sw cycle at 32x64 took 78 s on 2 threads, 1.4 s on 1, on this loaded machine)."""
    import torch

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _warm_up(jobs, registry, cache_dir, log)
    finally:
        torch.set_num_threads(old_threads)


def _warm_up(jobs, registry, cache_dir, log) -> dict[tuple, float]:
    from .harness import Experiment, setup

    seconds: dict[tuple, float] = {}
    seen_models: set[str] = set()
    tried: set[tuple] = set()
    for job in sorted(jobs, key=lambda j: j["seed"]):
        exp = Experiment(**{**job, "cycles": 2, "burn_in": 0}, cache_dir=cache_dir)
        model_key = json.dumps([job["model"], job["model_options"]], sort_keys=True)
        key = train_key(job)
        train = key not in tried and _needs_training(registry, job["method"])
        tried.add(key)
        if model_key in seen_models and not train:
            continue
        t0 = time.perf_counter()
        try:
            s = setup(exp, registry)  # builds the climatology and spun-up states into the cache
            if model_key not in seen_models:
                seen_models.add(model_key)
                log(f"compare: {job['model']} caches ready ({time.perf_counter() - t0:.0f} s)")
            if train:
                t0 = time.perf_counter()
                s.method.prepare(s.context)  # trains and caches when no checkpoint exists, else loads
                waited = time.perf_counter() - t0
                # The recorded training time, also when the checkpoint came from the cache.
                recorded = s.method.train_seconds
                seconds[key] = waited if recorded is None else float(recorded)
                log(f"compare: {job['method']} on {job['model']} prepared in {waited:.0f} s; "
                    f"its training took {seconds[key]:.0f} s")
        except Exception as exc:  # noqa: BLE001 - the job will fail on its own and be reported
            log(f"compare: warm-up of {job['method']} on {job['model']} failed: {_one_line(exc)}")
    return seconds


def train_key(job: dict) -> tuple:
    return (job["model"], json.dumps(job["model_options"], sort_keys=True), job["method"],
            json.dumps(job["method_options"], sort_keys=True), job["obs"], str(job.get("obs_std")))


def pending(jobs: list[dict], run_dir, registry=None, retry_failed: bool = False) -> list[dict]:
    """The jobs still to run: run file not complete, or made by other code, and no failure
    recorded under the current code (unless ``retry_failed``)."""
    return [j for j in jobs if finished_record(j, run_dir, registry, retry_failed) is None]


def run_jobs(jobs: Iterable[dict], run_dir, *, mode: str = "dask", workers: int = 2,
             scheduler: str | None = None, cache_dir: str | None = None, registry=None,
             log: Callable[[str], None] = lambda s: None, retry_failed: bool = False,
             progress: bool = True, priority: Callable[[dict], Any] | None = None) -> list[dict]:
    """Run every job; mode 'serial' (this process) or 'dask' (``scheduler`` address, or a new
    LocalCluster of ``workers`` single-threaded processes). Records come back in job order.
    ``retry_failed`` runs again the jobs whose failure is recorded (interfaces/failures.py).
    ``log`` gets a line per finished job, or (``progress`` false) per failed job only.
    ``priority`` (job -> sort key) orders the jobs still to run (lowest first; ties keep the
    given order): compare starts cheap rows and part-way runs first, so that a sweep cut short
    leaves whole rows. The records still come back in job order."""
    say = _job_logger(log, progress)
    jobs = list(jobs)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(jobs)), key=lambda i: (priority(jobs[i]), i)) if priority else list(range(len(jobs)))
    if mode == "serial":
        records: list[dict | None] = [None] * len(jobs)
        for n, i in enumerate(order):
            records[i] = run_job(jobs[i], str(run_dir), cache_dir, registry=registry, retry_failed=retry_failed)
            say(records[i], n + 1, len(jobs))
        return records  # type: ignore[return-value]
    if mode != "dask":
        raise ValueError(f"mode must be 'serial' or 'dask', got {mode!r}")
    # Finished jobs (and recorded failures) are read here; only the rest need a cluster (none
    # at all on a full rerun).
    out: list[dict | None] = [None] * len(jobs)
    todo = []
    for i in order:
        out[i] = finished_record(jobs[i], run_dir, registry, retry_failed)
        if out[i] is None:
            todo.append(i)
    if todo:
        done = _run_dask([jobs[i] for i in todo], str(run_dir), workers, scheduler, cache_dir, say,
                         retry_failed)
        for i, record in zip(todo, done):
            out[i] = record
    return out  # type: ignore[return-value]


def _run_dask(jobs, run_dir, workers, scheduler, cache_dir, say, retry_failed=False) -> list[dict]:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        # No dashboard; the scheduler's HTTP server (health checks) still starts, by default on
        # port 8787, and warns "Port 8787 is already in use" whenever another sweep runs on the
        # machine: a free port (":0") instead, chosen silently.
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"},
                               silence_logs=40)
        client = Client(cluster)
    try:
        futures = {client.submit(run_job, job, run_dir, cache_dir, retry_failed=retry_failed, pure=False, key=f"job-{job_hash(job)}-{i}"): i
                   for i, job in enumerate(jobs)}
        out: list[dict | None] = [None] * len(jobs)
        done = 0
        for future in as_completed(futures):
            i = futures[future]
            try:
                out[i] = future.result()
            except Exception as exc:  # noqa: BLE001 - e.g. a worker killed for memory
                out[i] = {"job": jobs[i], "file": str(run_path(run_dir, jobs[i])), "hash": job_hash(jobs[i]),
                          "status": "failed", "error": _one_line(exc)}
            done += 1
            say(out[i], done, len(jobs))
        return out  # type: ignore[return-value]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _job_logger(log: Callable[[str], None], progress: bool) -> Callable[[dict, int, int], None]:
    """What to say about a finished job: every job, or (``progress`` false) failures only."""
    def say(record: dict, done: int, total: int) -> None:
        if progress or record["status"] == "failed":
            log(_describe(record, done, total))
    return say


def _describe(record: dict, done: int, total: int) -> str:
    job = record["job"]
    what = f"{job['method']} on {job['model']} ({job['obs']}, seed {job['seed']})"
    if record["status"] == "failed":
        known = " (as recorded by an earlier run; --retry-failed runs it again)" if record.get("recorded") else ""
        return f"compare: [{done}/{total}] FAILED {what}{known}: {record['error']}"
    if record.get("rerun"):
        what += f", rerun: {record['rerun']}"
    rmse = record["summary"].get("analysis_rmse", float("nan"))
    return f"compare: [{done}/{total}] {record['status']} {what}: analysis RMSE {rmse:.4g}"
