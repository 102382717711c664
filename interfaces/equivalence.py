"""Code versions shown to compute the same numbers, so that a finished run counts as current.

A run file records the version of the code that made it (``cache.run_code_version``: the
source of the model, the method and the harness, with the project modules they import), and a
sweep runs again every file made by other code. That is the safe rule, but a change that adds an
option, off by default, changes the version of every method it touches while leaving their
numbers as they were: a campaign of CPU-days would then be run again to get the same numbers.
Operational NWP centres handle such changes by rerunning experiments under the new code and
accepting the change as bit-reproducing when every figure agrees to the last bit.

This module does the same, under one rule: a declaration "runs made by version OLD count as made
by version NEW" holds only with its evidence, written by ``benchmarks/verify_equivalence.py``
after it ran whole archived jobs again under NEW and found every per-cycle score of every one
bit-identical. Trained priors carry a code version of their own (the training code's); a
declaration for one holds when the prior was trained again under NEW with every weight
bit-identical. The record (``code_equivalence.toml`` beside this file) is data, not code: it is
not part of any code version. Declarations chain (OLD -> MID -> NEW).
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Any

from .errors import DataError

#: The committed record of declarations.
RECORD = Path(__file__).with_name("code_equivalence.toml")

#: What every declaration must hold: the versions, why the change is neutral, the commits it
#: spans and the jobs that were rerun bit-identically.
REQUIRED = ("old", "new", "why", "commits", "verified")


def declarations(path: Path | str | None = None) -> list[dict[str, Any]]:
    """The declarations of ``path`` (default ``RECORD``; [] when there is no record); a
    malformed one is an error that names it, never silently ignored."""
    return list(_read(str(Path(path or RECORD))))


@functools.lru_cache(maxsize=8)
def _read(path: str) -> tuple[dict[str, Any], ...]:
    p = Path(path)
    if not p.exists():
        return ()
    try:
        entries = tomllib.loads(p.read_text()).get("equivalent", [])
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"code equivalence record {p}: not valid TOML ({exc})") from exc
    for i, e in enumerate(entries):
        missing = [k for k in REQUIRED if not e.get(k)]
        if missing:
            raise DataError(f"code equivalence record {p}: declaration {i + 1} lacks {', '.join(missing)}")
        if e["old"] == e["new"]:
            raise DataError(f"code equivalence record {p}: declaration {i + 1} declares {e['old']} equivalent to itself")
        for job in e["verified"]:
            # A run is evidence through its per-cycle scores, a trained prior through its weights.
            if not job.get("file") or (job.get("cycles", 0) < 1 and job.get("tensors", 0) < 1):
                raise DataError(f"code equivalence record {p}: declaration {i + 1} has a verified job "
                                "without its file or cycles")
    return tuple(entries)


def counts_as(made_by: str, code: str, path: Path | str | None = None) -> bool:
    """Whether a file made by code version ``made_by`` counts as made by ``code``: the same
    version, or a chain of declarations leading from it to ``code``."""
    if made_by == code:
        return True
    successors: dict[str, set[str]] = {}
    for e in declarations(path):
        successors.setdefault(e["old"], set()).add(e["new"])
    seen, todo = {made_by}, [made_by]
    while todo:
        for nxt in successors.get(todo.pop(), ()):
            if nxt == code:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def clear_cache() -> None:
    """Forget the records read so far (after a declaration was written)."""
    _read.cache_clear()
