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

A RUN_FILE ending in .pt is a trained prior (a committed one in losda_plugin/pretrained/, or
one in the cache): it is trained again under the new code (and under the old, with
--old-commit) into scratch caches, from the command its provenance records (or its
configuration), and every weight, the latent variances and the training data's hash must be
bit-identical. A prior's code version is that of the training code: a change to the training
modules moves it, and without a declaration every committed and cached prior would be trained
again (the quick suite too).

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
import shlex
import signal
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


def train_args(path: Path, payload: dict) -> list[str]:
    """The `da-harness train` arguments that make the prior at ``path`` again: the command its
    committed provenance records, else one rebuilt from its configuration (its file name, the
    configuration's hash, is checked after training either way)."""
    from losda_plugin import config as prior_config
    from losda_plugin import pretrained
    from interfaces.registry import get_registry

    found = pretrained.committed(path.name)
    if found and found[1].get("command"):
        return [a for a in shlex.split(found[1]["command"])[1:] if a not in ("--json", "--no-progress")]
    cfg = payload["config"]
    args = ["train", "--method", "losda", "--model", cfg["model"], "--set", f"preset={cfg['preset']}"]
    defaults = get_registry().model(cfg["model"]).factory.defaults
    args += [x for k, v in cfg.get("model_options", {}).items() if k in defaults and v != defaults[k]
             for x in ("--set", f"model.{k}={v}")]
    for key in (*prior_config.NEUTRAL, "finetune", "finetune_cycles"):
        if cfg.get(key) and cfg[key] != prior_config.TRAIN_DEFAULTS.get(key):
            args += ["--set", f"{key}={cfg[key]}"]
    return args


def train_under(root: Path, args: list[str], cache_dir: Path) -> Path:
    """Train a prior with the code at ``root`` (in a process of its own) into ``cache_dir``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "interfaces.cli", *args, "--cache-dir", str(cache_dir), "--json",
                           "--no-progress"], capture_output=True, text=True, env=env, cwd=root)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise UsageError(f"verify_equivalence: training under {root} failed: {tail}")
    return Path(json.loads(proc.stdout.strip().splitlines()[-1])["checkpoint"])


def weights_difference(a: dict, b: dict) -> tuple[str | None, int]:
    """(None when two checkpoints' weights, latent variances and data hash are bit-identical,
    else the first difference; how many tensors were compared)."""
    import torch

    if a["config_hash"] != b["config_hash"]:
        return f"the configurations differ ({a['config_hash']} against {b['config_hash']})", 0
    if a["data_hash"] != b["data_hash"]:
        return f"the training data differ (hash {a['data_hash']} against {b['data_hash']})", 0
    tensors = [("b_var", a["b_var"], b["b_var"])]
    for net in ("vae", "denoiser"):
        if set(a[net]) != set(b[net]):
            return f"the {net} has other parameters", 0
        tensors += [(f"{net}.{k}", a[net][k], b[net][k]) for k in sorted(a[net])]
    for name, x, y in tensors:
        if x.shape != y.shape or not torch.equal(x, y):
            return f"{name} differs", len(tensors)
    return None, len(tensors)


def verify_prior(path: Path, old_code: "OldCode | None", scratch: Path, args) -> tuple[str, str, dict] | None:
    """Train the prior at ``path`` again (old and new code); (old version, new version, evidence)
    when bit-identical, None when it already counts as current; raises on a difference."""
    import torch

    from losda_plugin import checkpoint

    payload = torch.load(path, map_location="cpu", weights_only=True)
    old = str(payload.get("code_version") or "")
    from interfaces.registry import get_registry

    model_module = get_registry().model(payload["config"]["model"]).factory.__module__
    new = checkpoint.code_version_of_module(payload["config"], model_module)
    if not old:
        raise UsageError(f"verify_equivalence: {path} records no code version")
    if equivalence.counts_as(old, new, args.record) and not args.again:
        print(f"{path.name}: trained by {old}, which already counts as the current {new}; nothing to verify")
        return None
    command = train_args(path, payload)
    t0 = time.perf_counter()
    print(f"{path.name}: a prior trained by {old}; `da-harness {shlex.join(command)}`", flush=True)
    reference, against = payload, "the file"
    if old_code is not None:
        print(f"  training it under the code of {args.old_commit} ...", flush=True)
        again = torch.load(train_under(old_code.root, command, scratch / "old-prior"), map_location="cpu",
                           weights_only=True)
        if again.get("code_version") != old:
            raise UsageError(f"verify_equivalence: {path.name} was trained by code version {old}, but "
                             f"{args.old_commit} trains it as {again.get('code_version')}: not the code that made it")
        same, _ = weights_difference(payload, again)
        print("  the file agrees with it to the bit" if same is None else
              f"  the file differs from it ({same}): trained on another machine?")
        reference, against = again, f"the code of {old_code.sha[:12]}, run here"
    print(f"  training it again under the current code ({new}) ...", flush=True)
    made = train_under(ROOT, command, scratch / "new-prior")
    if made.name != path.name:
        raise UsageError(f"verify_equivalence: the command made {made.name}, not {path.name}: its configuration "
                         "was not rebuilt; nothing recorded")
    fresh = torch.load(made, map_location="cpu", weights_only=True)
    why_not, count = weights_difference(reference, fresh)
    if why_not:
        print(f"  DIFFERENT from {against}: {why_not}; nothing recorded")
        raise SystemExit(1)
    seconds = round(time.perf_counter() - t0, 1)
    print(f"  bit-identical to {against}: {count} tensors ({seconds} s)")
    return old, new, {"file": path.name, "method": "prior", "model": payload["config"]["model"], "cycles": 0,
                      "tensors": count, "variables": 0, "seconds": seconds, "against": against}


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
              f"cycles = {v['cycles']}, variables = {v['variables']}, "
              + (f"tensors = {v['tensors']}, " if v.get("tensors") else "")
              + f"seconds = {v['seconds']}, against = {q(v['against'])} }}," for v in verified]
    return "\n".join(lines + ["]", ""])


def verify_run(path: Path, old_code: "OldCode | None", scratch: Path, args) -> tuple[str, str, dict] | None:
    """Run the finished job of ``path`` again (old and new code); (old version, new version,
    evidence) when bit-identical, None when it already counts as current; 1 on a difference."""
    with xr.open_dataset(path, decode_times=False) as ds:
        attrs = dict(ds.attrs)
    if attrs.get("status") != "complete":
        raise UsageError(f"verify_equivalence: {path} is not a finished run file (status {attrs.get('status')})")
    job = job_of(attrs)
    old, new = str(attrs.get("code_version", "")), sweep.job_code_version(job)
    if not old or new is None:
        raise UsageError(f"verify_equivalence: {path} has no code version to compare")
    if equivalence.counts_as(old, new, args.record) and not args.again:
        print(f"{path.name}: made by {old}, which already counts as the current {new}; nothing to verify")
        return None
    t0 = time.perf_counter()
    reference, against = path, "the archived file"
    print(f"{path.name}: {job['method']} on {job['model']}, {job['cycles']} cycles, made by {old}", flush=True)
    if old_code is not None:
        print(f"  running it under the code of {args.old_commit} ...", flush=True)
        ran = old_code.run(job_fields(attrs), scratch / "old")
        if ran["code_version"] != old:
            raise UsageError(f"verify_equivalence: {path.name} was made by code version {old}, but "
                             f"{args.old_commit} computes {ran['code_version']} for it: not the code that made it")
        if ran["status"] != "complete":
            print(f"  FAILED: the old code's rerun did not finish ({ran.get('error')}); nothing recorded")
            raise SystemExit(1)
        reference, against = Path(ran["file"]), f"the code of {old_code.sha[:12]}, run here"
        archived, _ = difference(path, reference)
        print("  the archived file agrees with it to the bit" if archived is None else
              f"  the archived file differs from it ({archived}): made on another machine?")
    print(f"  running it again under the current code ({new}) ...", flush=True)
    record = sweep.run_job(job, str(scratch / "new"), cache_dir=args.cache_dir)
    if record["status"] != "complete":
        print(f"  FAILED: the rerun did not finish ({record.get('error')}); nothing recorded")
        raise SystemExit(1)
    why_not, count = difference(reference, Path(record["file"]))
    if why_not:
        print(f"  DIFFERENT from {against}: {why_not}; nothing recorded")
        raise SystemExit(1)
    seconds = round(time.perf_counter() - t0, 1)
    print(f"  bit-identical to {against}: {count} per-cycle scores over {job['cycles']} cycles ({seconds} s)")
    return old, new, {"file": path.name, "method": job["method"], "model": job["model"], "cycles": int(job["cycles"]),
                      "variables": count, "seconds": seconds, "against": against}


def record_declaration(path: Path, old: str, new: str, why: str, commits: str, verified: list[dict]) -> None:
    """Append one declaration (each as soon as its evidence is in: a long verification cut
    short keeps what it showed) and check that the record still reads back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        if f.tell() == 0:
            f.write("# Code versions shown to compute the same numbers (interfaces/equivalence.py);\n"
                    "# written by benchmarks/verify_equivalence.py, never by hand.\n")
        f.write(declaration(old, new, why, commits, verified))
    equivalence.clear_cache()
    equivalence.declarations(path)
    print(f"recorded in {path}: what version {old} made counts as made by {new}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_files", nargs="+", type=Path, help="finished run files (.nc) and trained priors (.pt)")
    p.add_argument("--why", required=True, help="why the change cannot alter these runs (it is recorded)")
    p.add_argument("--commits", help="the commits the change spans, e.g. ed22b17..HEAD (default with "
                                     "--old-commit: that commit..HEAD)")
    p.add_argument("--old-commit", help="run each job under the code of this commit too, here, and compare old "
                                        "with new (for runs made on another machine)")
    p.add_argument("--record", type=Path, default=equivalence.RECORD, help="the record to append to")
    p.add_argument("--again", action="store_true",
                   help="verify files whose version already counts as current too, adding their evidence (e.g. "
                        "LO-SDA's sampler beside latent 3D-Var, which share one code version)")
    p.add_argument("--cache-dir", default=None, help="cache for the new code's reruns (default the usual one)")
    p.add_argument("--old-cache-dir", default=None, help="cache for the old code's reruns (default the usual "
                                                         "one: the old code's own priors are found there)")
    args = p.parse_args(argv)
    if not args.commits and not args.old_commit:
        p.error("give --commits (or --old-commit, which implies it)")
    commits = args.commits or f"{args.old_commit}..{_head()}"
    # A verification stopped with SIGTERM still removes its worktree and scratch folders.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="verify-equivalence-") as scratch, \
            (OldCode(args.old_commit, args.old_cache_dir) if args.old_commit else _no_old_code()) as old_code:
        for path in args.run_files:
            verify = verify_prior if path.suffix == ".pt" else verify_run
            try:
                shown = verify(path, old_code, Path(scratch), args)
            except SystemExit as exc:
                return int(exc.code or 1)
            if shown is not None:
                record_declaration(args.record, shown[0], shown[1], args.why, commits, [shown[2]])
    return 0


def _head() -> str:
    """HEAD as a short hash (a record outlives the word HEAD), marked when the tree has changes."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    return (head or "HEAD") + (" (with uncommitted changes)" if dirty else "")


@contextlib.contextmanager
def _no_old_code():
    yield None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(2)
