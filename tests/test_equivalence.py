"""Code versions shown to compute the same numbers (interfaces/equivalence.py): a declaration
holds only with evidence written by benchmarks/verify_equivalence.py, which reruns archived jobs
whole and requires every per-cycle score bit-identical."""

import pytest
import xarray as xr

from interfaces import equivalence, failures, sweep
from interfaces.errors import DataError, UsageError
from interfaces.registry import get_registry

from conftest import ROOT, load_benchmark

EVIDENCE = 'verified = [{ file = "f.nc", method = "m", model = "x", cycles = 5, variables = 3, seconds = 1.0 }]'


def record(tmp_path, *pairs, extra=EVIDENCE):
    path = tmp_path / "equivalence.toml"
    path.write_text("".join(f'[[equivalent]]\nold = "{a}"\nnew = "{b}"\nwhy = "w"\ncommits = "c"\n{extra}\n\n'
                            for a, b in pairs))
    equivalence.clear_cache()
    return path


def test_declarations_chain_one_way(tmp_path):
    path = record(tmp_path, ("a", "b"), ("b", "c"))
    assert equivalence.counts_as("a", "a", path)
    assert equivalence.counts_as("a", "b", path) and equivalence.counts_as("a", "c", path)
    assert not equivalence.counts_as("c", "a", path)  # newer runs never stand for older code
    assert not equivalence.counts_as("a", "z", path)
    assert not equivalence.counts_as("a", "b", tmp_path / "absent.toml")


@pytest.mark.parametrize("extra, complaint", [("", "lacks verified"),
                                               ('verified = [{ method = "m" }]', "has a verified job without its file or cycles")])
def test_a_declaration_without_its_evidence_is_an_error_that_names_it(tmp_path, extra, complaint):
    path = record(tmp_path, ("a", "b"), extra=extra)
    with pytest.raises(DataError, match=f"declaration 1 {complaint}"):
        equivalence.counts_as("a", "b", path)


@pytest.fixture(scope="module")
def verifier():
    return load_benchmark("verify_equivalence")


@pytest.fixture
def old_run(tmp_path):
    """A finished Lorenz-96 run whose file says an older code version made it."""
    job = sweep.make_job(model="lorenz96", method="3dvar", obs="every:2", cycles=15, burn_in=5, seed=3,
                         method_options={"scale": 1.0, "b_source": "climatology"})
    (rec,) = sweep.run_jobs([job], tmp_path / "runs", mode="serial", registry=get_registry(),
                            cache_dir=str(tmp_path / "cache"))
    with xr.open_dataset(rec["file"]) as ds:
        ds = ds.load()
    ds.attrs["code_version"] = "0123456789abcdef"
    path = tmp_path / "old.nc"
    ds.to_netcdf(path)
    return {"job": job, "path": path, "code": sweep.job_code_version(job), "ds": ds}


def test_a_verified_rerun_records_the_equivalence_and_the_sweep_then_keeps_the_run(verifier, old_run, tmp_path,
                                                                                    monkeypatch):
    out = tmp_path / "record.toml"
    assert sweep.attrs_state(dict(old_run["ds"].attrs), old_run["code"])[0] == "stale"
    code = verifier.main([str(old_run["path"]), "--why", "a neutral option", "--commits", "a..b",
                          "--record", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    (entry,) = equivalence.declarations(out)
    assert (entry["old"], entry["new"], entry["why"]) == ("0123456789abcdef", old_run["code"], "a neutral option")
    assert entry["verified"][0]["file"] == "old.nc" and entry["verified"][0]["cycles"] == 15
    assert entry["verified"][0]["variables"] >= 3
    # The sweep, plan and tune read run files through attrs_state, failures through read_record.
    monkeypatch.setattr(equivalence, "RECORD", out)
    equivalence.clear_cache()
    assert sweep.attrs_state(dict(old_run["ds"].attrs), old_run["code"])[0] == "complete"
    failed = tmp_path / "runs" / "x.nc"
    failures.write(failed, "0123456789abcdef", "PluginError: diverged", old_run["job"])
    assert failures.read(failed, old_run["code"]) == "PluginError: diverged"
    # Verified again: nothing to do, nothing appended.
    before = out.read_text()
    assert verifier.main([str(old_run["path"]), "--why", "w", "--commits", "c", "--record", str(out),
                          "--cache-dir", str(tmp_path / "cache")]) == 0
    assert out.read_text() == before
    # --again adds the evidence of a file whose version already counts (a second method of it).
    assert verifier.main([str(old_run["path"]), "--why", "w", "--commits", "c", "--record", str(out),
                          "--cache-dir", str(tmp_path / "cache"), "--again"]) == 0
    assert len(equivalence.declarations(out)) == 2


def test_a_rerun_that_differs_in_one_cycle_records_nothing(verifier, old_run, tmp_path, capsys):
    ds = old_run["ds"].copy(deep=True)
    ds["analysis_rmse"].values[7] += 1e-12
    tampered = tmp_path / "tampered.nc"
    ds.to_netcdf(tampered)
    out = tmp_path / "record.toml"
    assert verifier.main([str(tampered), "--why", "w", "--commits", "c", "--record", str(out),
                          "--cache-dir", str(tmp_path / "cache")]) == 1
    assert "DIFFERENT from the archived file: analysis_rmse at cycle 7" in capsys.readouterr().out
    assert not out.exists()


def _worktrees() -> set[str]:
    import subprocess

    listed = subprocess.run(["git", "-C", str(ROOT), "worktree", "list", "--porcelain"], capture_output=True, text=True)
    return {line for line in listed.stdout.splitlines() if line.startswith("worktree ")}


def _git_checkout():
    return (ROOT / ".git").exists()


@pytest.mark.skipif(not _git_checkout(), reason="--old-commit needs a git checkout of the project")
def test_old_commit_must_be_the_code_that_made_the_file(verifier, old_run, tmp_path):
    # old_run claims a version no commit computes: HEAD's code is not what made it.
    with pytest.raises(UsageError, match="was made by code version 0123456789abcdef, but HEAD computes"):
        verifier.main([str(old_run["path"]), "--why", "w", "--old-commit", "HEAD", "--record",
                       str(tmp_path / "r.toml"), "--cache-dir", str(tmp_path / "cache")])
    with pytest.raises(UsageError, match="--old-commit no-such-commit is not a commit"):
        verifier.main([str(old_run["path"]), "--why", "w", "--old-commit", "no-such-commit", "--record",
                       str(tmp_path / "r.toml")])
    assert not (tmp_path / "r.toml").exists()


@pytest.mark.skipif(not _git_checkout(), reason="--old-commit needs a git checkout of the project")
def test_old_commit_compares_the_old_code_run_here_with_the_new(verifier, old_run, tmp_path, monkeypatch, capsys):
    """The file is made by the working tree's code; HEAD plays the old code and a stand-in version
    the new one. The old code runs in its own process from a worktree, and the record says so."""
    made = tmp_path / "made.nc"
    ds = old_run["ds"].copy()
    ds.attrs["code_version"] = old_run["code"]
    ds.to_netcdf(made)
    monkeypatch.setattr(verifier.sweep, "job_code_version", lambda job, registry=None: "feedfacefeedface")
    out = tmp_path / "record.toml"
    before = _worktrees()
    try:
        code = verifier.main([str(made), "--why", "w", "--old-commit", "HEAD", "--record", str(out),
                              "--cache-dir", str(tmp_path / "cache"), "--old-cache-dir", str(tmp_path / "old-cache")])
    except UsageError as exc:
        if "not the code that made it" in str(exc):
            pytest.skip("the working tree's run code differs from HEAD's (uncommitted changes)")
        raise
    assert code == 0
    text = capsys.readouterr().out
    assert "the archived file agrees with it to the bit" in text
    (entry,) = equivalence.declarations(out)
    assert (entry["old"], entry["new"]) == (old_run["code"], "feedfacefeedface")
    assert entry["commits"].startswith("HEAD..") and entry["commits"] != "HEAD..HEAD"
    assert entry["verified"][0]["against"].startswith("the code of ") and "run here" in entry["verified"][0]["against"]
    assert _worktrees() == before  # its temporary worktree is gone again


def test_a_prior_trained_again_bit_identically_is_declared_and_counts_as_current(verifier, tmp_path, monkeypatch):
    """A prior's code version is the training code's: the record lets a prior trained by an
    older version stand (cache and committed priors alike) once retraining gave the same bits."""
    import torch

    from losda_plugin import checkpoint, pretrained

    made = verifier.train_under(ROOT, ["train", "--method", "losda", "--model", "lorenz96", "--set", "preset=quick"],
                                tmp_path / "made")
    payload = torch.load(made, map_location="cpu", weights_only=True)
    current = payload["code_version"]
    payload["code_version"] = "0123456789abcdef"  # as if an older training code had made it
    old = tmp_path / made.name
    torch.save(payload, old)
    out = tmp_path / "record.toml"
    assert checkpoint.stale_reason(old, current).startswith("made by other code")
    assert verifier.main([str(old), "--why", "w", "--commits", "a..b", "--record", str(out)]) == 0
    (entry,) = equivalence.declarations(out)
    assert (entry["old"], entry["new"]) == ("0123456789abcdef", current)
    assert entry["verified"][0]["method"] == "prior" and entry["verified"][0]["tensors"] > 10
    monkeypatch.setattr(equivalence, "RECORD", out)
    equivalence.clear_cache()
    assert checkpoint.stale_reason(old, current) == ""
    meta = {"code_version": "0123456789abcdef", "sha256": pretrained.sha256(old)}
    assert pretrained.usable_reason(old, meta, current) == ""
    assert "trained by other code" in pretrained.usable_reason(old, {**meta, "code_version": "feed"}, current)


def test_weights_that_differ_in_one_value_are_named(verifier):
    import torch

    a = {"config_hash": "c", "data_hash": "d", "b_var": torch.ones(3), "vae": {"w": torch.zeros(2, 2)},
         "denoiser": {"v": torch.arange(4.0)}}
    b = {**a, "denoiser": {"v": torch.arange(4.0) + torch.tensor([0, 0, 1e-6, 0])}}
    assert verifier.weights_difference(a, a) == (None, 3)
    assert verifier.weights_difference(a, b)[0] == "denoiser.v differs"
    assert "training data differ" in verifier.weights_difference(a, {**a, "data_hash": "e"})[0]
