"""Committed priors (losda_plugin/pretrained.py): what they say they are, used instead of training
when made by this code (or code shown to train the same weights), ignored otherwise."""

import json

import pytest
import torch

from interfaces.equivalence import counts_as
from interfaces.registry import get_registry
from losda_plugin import pretrained
from losda_plugin.checkpoint import code_version_of_module
from losda_plugin.config import config_hash

COMMITTED = sorted(pretrained.FOLDER.glob("*.pt"))


def _code(cfg):
    return code_version_of_module(cfg, get_registry().model(cfg["model"]).factory.__module__)


def test_the_full_priors_of_both_testbeds_are_committed():
    names = {p.name.rsplit("-", 1)[0] for p in COMMITTED}
    assert {"lorenz96-full", "sw-full"} <= names


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_a_committed_prior_is_what_its_provenance_says_and_was_made_by_this_code(path):
    meta = json.loads(pretrained.provenance_path(path).read_text())
    payload = torch.load(path, map_location="cpu", weights_only=True)
    cfg = payload["config"]
    assert meta["sha256"] == pretrained.sha256(path) and meta["bytes"] == path.stat().st_size <= pretrained.MAX_BYTES
    assert meta["config_hash"] == config_hash(cfg) == path.stem.rsplit("-", 1)[1]
    assert meta["data_hash"] == payload["data_hash"] and meta["seed"] == payload["seed"]
    assert meta["command"].startswith(f"da-harness train --method losda --model {cfg['model']} --set preset={cfg['preset']}")
    # Stale after an edit to the training code: then runs retrain (correct, but slow), so the
    # committed file must be republished (`da-harness train ...`, then
    # `python -m losda_plugin.pretrained <the cache checkpoint>`), or the edit shown to train the
    # same weights (benchmarks/verify_equivalence.py with the .pt: interfaces/equivalence.py).
    assert payload["code_version"] == meta["code_version"]
    assert counts_as(meta["code_version"], _code(cfg)), "republish this prior, or verify the change equivalent"


def test_install_copies_a_current_prior_and_refuses_one_from_other_code(tmp_path):
    source = next(p for p in COMMITTED if p.name.startswith("lorenz96-full"))
    code = json.loads(pretrained.provenance_path(source).read_text())["code_version"]
    target = tmp_path / "cache" / "losda" / source.name
    assert pretrained.install(target, "0123456789abcdef").startswith(f"losda: the committed prior {source.name} is not used: trained by other code")
    assert not target.exists()
    note = pretrained.install(target, code)
    assert note.startswith(f"losda: using the committed prior {source.name}") and "no training needed" in note
    assert target.read_bytes() == source.read_bytes()
    assert pretrained.install(tmp_path / "other-name.pt", code) == ""


def test_a_damaged_committed_prior_is_not_used(tmp_path):
    source = next(p for p in COMMITTED if p.name.startswith("lorenz96-full"))
    folder = tmp_path / "pretrained"
    folder.mkdir()
    (folder / source.name).write_bytes(source.read_bytes()[:-10] + b"0123456789")
    meta = pretrained.provenance_path(source)
    (folder / meta.name).write_text(meta.read_text())
    code = json.loads(meta.read_text())["code_version"]
    note = pretrained.install(tmp_path / "cache" / source.name, code, folder=folder)
    assert "do not match the sha256" in note and not (tmp_path / "cache" / source.name).exists()


def test_a_run_from_an_empty_cache_uses_the_committed_prior_without_training(tmp_path, monkeypatch, capsys):
    from interfaces import api
    from losda_plugin.methods import LatentMethod

    def no_training(self, context):
        raise AssertionError("trained although a committed prior was available")

    monkeypatch.setattr(LatentMethod, "train", no_training)
    ds = api.run(model="lorenz96", method="losda", obs="every:2", cycles=6, seed=3, cache_dir=str(tmp_path))
    assert "using the committed prior lorenz96-full-" in capsys.readouterr().err
    free = api.run(model="lorenz96", method="free", obs="every:2", cycles=6, seed=3, cache_dir=str(tmp_path))
    assert float(ds.analysis_rmse[2:].mean()) < float(free.analysis_rmse[2:].mean())


def test_publish_refuses_a_checkpoint_from_other_code(tmp_path):
    from interfaces.errors import DataError

    source = next(p for p in COMMITTED if p.name.startswith("lorenz96-full"))
    payload = torch.load(source, map_location="cpu", weights_only=True)
    payload["code_version"] = "0123456789abcdef"
    stale = tmp_path / source.name
    torch.save(payload, stale)
    with pytest.raises(DataError, match="trained by other code"):
        pretrained.publish(stale, folder=tmp_path / "out")


def test_publish_refuses_a_checkpoint_whose_name_this_code_would_not_load(tmp_path):
    from interfaces.errors import DataError

    source = next(p for p in COMMITTED if p.name.startswith("lorenz96-full"))
    payload = torch.load(source, map_location="cpu", weights_only=True)
    payload["config_hash"] = "33a868650b62"  # as written before train_data had a neutral default
    payload["code_version"] = _code(payload["config"])  # trained by this code: only its name is wrong
    old = tmp_path / "lorenz96-full-33a868650b62.pt"
    torch.save(payload, old)
    with pytest.raises(DataError, match="records configuration hash 33a868650b62"):
        pretrained.publish(old, folder=tmp_path / "out")
