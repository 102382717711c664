"""Show that a code change leaves finished runs' numbers as they were, and record it
(interfaces/equivalence.py).

Each RUN_FILE (a finished run file or its slim copy, made by the old code) is run again whole
under the current code, from the settings it records, into a scratch folder. Every per-cycle
score it holds (every variable indexed by time alone, wall times and memory left out) must come
out bit-identical, and the settings the same. Only then is a declaration "OLD counts as NEW"
appended to the record, with the files, their methods and cycles as its evidence; on the first
difference the script names the file, variable and cycle, and writes nothing.

A rerun needs the method's trained state: when the change moved a prior's code version, the
rerun trains it again (bit-identical weights are part of what agreeing runs show). While a
campaign runs on the old code, give `--cache-dir` a folder of its own, so that the campaign's
cached priors are never replaced under it.

Only runs made on this machine are valid evidence against the archived file. Floating point is
not the same on every CPU: on 2026-12-06 a Lorenz-96 DPS run archived by an earlier machine
differed here by 1e-8 relative from cycle 1, though the retrained prior was bit-identical to the
committed one and latent 3D-Var's run agreed to the bit. For runs made elsewhere (or when in
doubt) give `--old-commit C`: the old code is checked out at C in a temporary git worktree and
runs each job here too, in a process of its own; C must be the code that made the file (its code
version must match the file's), and the comparison is then old code against new code on the same
machine. Whether the archived file agrees with the old code's rerun is reported, not required.

Pick cheap jobs of every method whose code version the change moved (one per method and model
family is the least), for example the latent methods' Lorenz-96 runs and one sphere run each:

    python benchmarks/verify_equivalence.py benchmarks/results/regimes/archive/compare/sw-dps-s2000-*.nc \\
        --why "train_backgrounds added to the latent methods, off by default" --old-commit c74a23b
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from interfaces import equivalence, sweep  # noqa: E402
from interfaces.errors import UsageError  # noqa: E402

#: Per-cycle variables that measure the machine, not the method.
UNCOMPARED = ("seconds", "memory")


def job_of(attrs: dict) -> dict:
    """The sweep job that made a run file, rebuilt from the settings it records."""
    settings = json.loads(attrs["settings"])
    fields = {k: v for k, v in settings.items() if k in sweep.JOB_FIELDS}
    fields["obs_std"] = fields.get("obs_std") or None
    fields["model_error"] = fields.get("model_error") or None
    if attrs.get("device", "cpu") != "cpu":
        fields["device"] = attrs["device"]
    return sweep.make_job(**fields)


def compared_variables(ds) -> list[str]:
    return [n for n, v in ds.data_vars.items() if v.dims == ("time",) and not any(u in n for u in UNCOMPARED)]


def difference(old_path: Path, new_path: Path) -> tuple[str | None, int]:
    """(None when every compared per-cycle score and the settings agree bit for bit, else where
    they first differ; how many per-cycle scores were compared)."""
    with xr.open_dataset(old_path, decode_times=False) as old, xr.open_dataset(new_path, decode_times=False) as new:
        names = compared_variables(old)
        if old.attrs["settings"] != new.attrs["settings"]:
            return "the settings differ", len(names)
        if not names:
            return "it holds no per-cycle scores to compare", 0
        for name in names:
            if name not in new:
                return f"{name} is missing from the new run", len(names)
            a, b = old[name].values, new[name].values
            if a.shape != b.shape:
                return f"{name} has {a.size} cycles against {b.size}", len(names)
            same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" else a == b
            if not same.all():
                k = int(np.argmin(same))
                return f"{name} at cycle {k}: {a[k]!r} against {b[k]!r}", len(names)
    return None, len(names)


#: Runs one job under the old code (its checkout first on sys.path), in a process of its own so
#: that no module of the new code is shared with it; prints the old code's version and record.
OLD_CODE_RUNNER = r"""
import json, sys
from pathlib import Path
root, fields, run_dir, cache_dir = Path(sys.argv[1]).resolve(), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
import interfaces
from interfaces import sweep
if root not in Path(interfaces.__file__).resolve().parents:
    sys.exit(f"the old code was imported from {interfaces.__file__}, not from {root}")
job = sweep.make_job(**fields)
record = sweep.run_job(job, run_dir, cache_dir=cache_dir or None)
print(json.dumps({"code_version": sweep.job_code_version(job), "status": record["status"],
                  "file": record.get("file"), "error": record.get("error")}))
"""


class OldCode:
    """The code of commit ``commit`` checked out in a temporary worktree of this repository,
    removed again on exit; ``run`` runs a job under it on this machine."""

    def __init__(self, commit: str, cache_dir: str | None):
        self.commit, self.cache_dir = commit, cache_dir

    def __enter__(self) -> "OldCode":
        git = ["git", "-C", str(ROOT)]
        found = subprocess.run([*git, "rev-parse", "--verify", "--quiet", f"{self.commit}^{{commit}}"],
                               capture_output=True, text=True)
        if found.returncode != 0:
            raise UsageError(f"verify_equivalence: --old-commit {self.commit} is not a commit of {ROOT}")
        self.sha = found.stdout.strip()
        self._scratch = tempfile.TemporaryDirectory(prefix="verify-equivalence-old-")
        self.root = Path(self._scratch.name) / "code"
        subprocess.run([*git, "worktree", "add", "--quiet", "--detach", str(self.root), self.sha], check=True,
                       capture_output=True)
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(self.root)], capture_output=True)
        self._scratch.cleanup()

    def run(self, fields: dict, run_dir: Path) -> dict:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.root), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, "-c", OLD_CODE_RUNNER, str(self.root), json.dumps(fields),
                               str(run_dir), self.cache_dir or ""], capture_output=True, text=True, env=env,
                              cwd=self.root)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise UsageError(f"verify_equivalence: the old code ({self.commit}) could not run the job: {tail}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def job_fields(attrs: dict) -> dict:
    """A job's fields as plain JSON, for the old code's ``make_job``."""
    return json.loads(json.dumps(job_of(attrs), default=str))


def declaration(old: str, new: str, why: str, commits: str, verified: list[dict]) -> str:
    def q(text: str) -> str:
        return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["", "[[equivalent]]", f"old = {q(old)}", f"new = {q(new)}", f"why = {q(why)}",
             f"commits = {q(commits)}", f"date = {q(datetime.now(timezone.utc).isoformat(timespec='seconds'))}",
             "verified = ["]
    lines += [f"  {{ file = {q(v['file'])}, method = {q(v['method'])}, model = {q(v['model'])}, "
              f"cycles = {v['cycles']}, variables = {v['variables']}, seconds = {v['seconds']}, "
              f"against = {q(v['against'])} }}," for v in verified]
    return "\n".join(lines + ["]", ""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_files", nargs="+", type=Path)
    p.add_argument("--why", required=True, help="why the change cannot alter these runs (it is recorded)")
    p.add_argument("--commits", help="the commits the change spans, e.g. ed22b17..HEAD (default with "
                                     "--old-commit: that commit..HEAD)")
    p.add_argument("--old-commit", help="run each job under the code of this commit too, here, and compare old "
                                        "with new (for runs made on another machine)")
    p.add_argument("--record", type=Path, default=equivalence.RECORD, help="the record to append to")
    p.add_argument("--cache-dir", default=None, help="cache for the new code's reruns (default the usual one)")
    p.add_argument("--old-cache-dir", default=None, help="cache for the old code's reruns (default the usual "
                                                         "one: the old code's own priors are found there)")
    args = p.parse_args(argv)
    if not args.commits and not args.old_commit:
        p.error("give --commits (or --old-commit, which implies it)")
    commits = args.commits or f"{args.old_commit}..HEAD"

    pairs: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="verify-equivalence-") as scratch, \
            (OldCode(args.old_commit, args.old_cache_dir) if args.old_commit else _no_old_code()) as old_code:
        for path in args.run_files:
            with xr.open_dataset(path, decode_times=False) as ds:
                attrs = dict(ds.attrs)
            if attrs.get("status") != "complete":
                raise UsageError(f"verify_equivalence: {path} is not a finished run file (status {attrs.get('status')})")
            job = job_of(attrs)
            old, new = str(attrs.get("code_version", "")), sweep.job_code_version(job)
            if not old or new is None:
                raise UsageError(f"verify_equivalence: {path} has no code version to compare")
            if equivalence.counts_as(old, new, args.record):
                print(f"{path.name}: made by {old}, which already counts as the current {new}; nothing to verify")
                continue
            t0 = time.perf_counter()
            reference, against = path, "the archived file"
            print(f"{path.name}: {job['method']} on {job['model']}, {job['cycles']} cycles, made by {old}", flush=True)
            if old_code is not None:
                print(f"  running it under the code of {args.old_commit} ...", flush=True)
                old_dir = Path(scratch) / "old"
                ran = old_code.run(job_fields(attrs), old_dir)
                if ran["code_version"] != old:
                    raise UsageError(f"verify_equivalence: {path.name} was made by code version {old}, but "
                                     f"{args.old_commit} computes {ran['code_version']} for it: not the code that made it")
                if ran["status"] != "complete":
                    print(f"  FAILED: the old code's rerun did not finish ({ran.get('error')}); nothing recorded")
                    return 1
                reference, against = Path(ran["file"]), f"the code of {old_code.sha[:12]}, run here"
                archived, _ = difference(path, reference)
                print("  the archived file agrees with it to the bit" if archived is None else
                      f"  the archived file differs from it ({archived}): made on another machine?")
            print(f"  running it again under the current code ({new}) ...", flush=True)
            record = sweep.run_job(job, str(Path(scratch) / "new"), cache_dir=args.cache_dir)
            if record["status"] != "complete":
                print(f"  FAILED: the rerun did not finish ({record.get('error')}); nothing recorded")
                return 1
            why_not, count = difference(reference, Path(record["file"]))
            if why_not:
                print(f"  DIFFERENT from {against}: {why_not}; nothing recorded")
                return 1
            seconds = round(time.perf_counter() - t0, 1)
            print(f"  bit-identical to {against}: {count} per-cycle scores over {job['cycles']} cycles ({seconds} s)")
            pairs.setdefault((old, new), []).append({"file": path.name, "method": job["method"], "model": job["model"],
                                                     "cycles": int(job["cycles"]), "variables": count,
                                                     "seconds": seconds, "against": against})
    if not pairs:
        return 0
    args.record.parent.mkdir(parents=True, exist_ok=True)
    with open(args.record, "a", encoding="utf-8") as f:
        if f.tell() == 0:
            f.write("# Code versions shown to compute the same numbers (interfaces/equivalence.py);\n"
                    "# written by benchmarks/verify_equivalence.py, never by hand.\n")
        for (old, new), verified in pairs.items():
            f.write(declaration(old, new, args.why, commits, verified))
    equivalence.clear_cache()
    equivalence.declarations(args.record)  # what was written reads back as a valid record
    for old, new in pairs:
        print(f"recorded in {args.record}: runs made by {old} count as made by {new}")
    return 0


@contextlib.contextmanager
def _no_old_code():
    yield None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(2)
