"""The committed tables can be read back on a fresh clone: every job of every final table in a
results folder that keeps an archive has its slim copy there, finished by the current code (or
by code declared equivalent), so that `compare` on a fresh machine reads the table instead of
running it again. On 2026-12-06 three runs finished by a bare `compare` (which does not archive)
were committed in a table but not in its archive; a fresh clone would have spent 1.7 CPU-hours
on them."""

import json
from pathlib import Path

import pytest

from interfaces import suites, sweep
from interfaces.cli import build_parser
from interfaces.registry import get_registry

ROOT = Path(__file__).resolve().parent.parent

#: (suite, results folder, model family) of the folders whose runs are committed as slim copies.
#: The full suite's sphere table (full-protocol/sw) predates the archive: its run files were not
#: kept (its PROVENANCE.md says so), so it is not listed.
ARCHIVED = [("regimes", "benchmarks/results/regimes", "sw"),
            ("full", "benchmarks/results/full-protocol/lorenz96", "lorenz96")]


def table_jobs(suite_name: str, family: str, names: list[str]) -> list[dict]:
    """The jobs `compare --suite S --model F --tables 'N$,...'` would run, from the CLI's own parser."""
    args = build_parser().parse_args(["compare", "--suite", suite_name, "--model", family,
                                      "--tables", ",".join(f"{n}$" for n in names)])
    return suites.build_jobs(args, suites.load_suite(suite_name), get_registry())


@pytest.mark.parametrize("suite_name, folder, family", ARCHIVED)
def test_every_job_of_a_committed_table_is_in_its_archive(suite_name, folder, family):
    summary = ROOT / folder / "summary.json"
    if not summary.exists():
        pytest.skip(f"no final tables in {folder} yet")
    names = [t["name"] for t in json.loads(summary.read_text())["tables"]]
    jobs = table_jobs(suite_name, family, names)
    assert jobs, f"the suite {suite_name} has none of the tables {names}"
    archive_dir = ROOT / folder / "archive" / "compare"
    registry = get_registry()
    missing = [sweep.run_path(archive_dir, j).name for j in jobs
               if sweep.finished_record(j, archive_dir, registry) is None]
    assert not missing, (f"{len(missing)} of {len(jobs)} jobs of {folder}'s committed tables would run again on a "
                         f"fresh clone (missing or stale in archive/compare), e.g. {missing[:3]}: sync them with "
                         "interfaces.archive.sync(<run folder>, <archive>) and commit")
