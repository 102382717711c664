"""Cache entries shipped with the code (interfaces/shipped.py): copied where the cache lacks
them, never over an entry it holds; the shipped balanced B is the entry the sphere's 5 % runs
look up and was made by the current code (else this test says to regenerate it)."""

import torch

from interfaces import shipped


def test_seed_copies_what_the_cache_lacks_and_leaves_the_rest(tmp_path):
    source, cache = tmp_path / "shipped", tmp_path / "cache"
    source.mkdir()
    (source / "a.pt").write_bytes(b"shipped a")
    (source / "b.pt").write_bytes(b"shipped b")
    (source / "PROVENANCE.md").write_text("not an entry")
    cache.mkdir()
    (cache / "b.pt").write_bytes(b"the cache's own b")
    copied = shipped.seed(cache, source)
    assert [p.name for p in copied] == ["a.pt"]
    assert (cache / "a.pt").read_bytes() == b"shipped a" and (cache / "b.pt").read_bytes() == b"the cache's own b"
    assert not (cache / "PROVENANCE.md").exists() and not list(cache.glob(".*tmp"))
    assert shipped.seed(cache, source) == []
    assert shipped.seed(tmp_path / "new", tmp_path / "absent") == []


def test_the_shipped_balanced_b_is_the_entry_a_5_percent_sphere_run_reads_and_is_current():
    from baselines import balanced_b
    from interfaces.observations import build_operator
    from interfaces.registry import get_registry

    model = get_registry().model("sw").factory(resolution="32x64")
    op = balanced_b.held_out_network(model, build_operator("random:0.05", model, torch.Generator().manual_seed(0)),
                                     build_operator)
    path = balanced_b.cache_path(shipped.SHIPPED_DIR, model, op.spec, op.std, {"cycles": 80, "burn_in": 30})
    assert path.exists(), f"no shipped entry named {path.name}: regenerate benchmarks/cache (see its PROVENANCE.md)"
    stats, why = balanced_b._read(path, balanced_b.producing_code(model))
    assert stats is not None, f"the shipped balanced B is stale ({why}): regenerate it (benchmarks/cache/PROVENANCE.md)"
    assert stats["samples"] == 50 and torch.isfinite(stats["amplitude"]).all()


def test_a_command_that_reads_the_cache_gets_the_shipped_entries(tmp_path, cli):
    cache = tmp_path / "cache"
    code, _, _ = cli("run", "--model", "lorenz96", "--method", "free", "--cycles", "3", "--cache-dir", str(cache))
    assert code == 0
    names = {p.name for p in shipped.SHIPPED_DIR.glob("*.pt")}
    assert names and names <= {p.name for p in cache.iterdir()}
