"""Failure records: a job that failed for a reason its code and settings determine is not run again.

A sweep skips jobs whose run file is complete. A job that diverges (the model forecasts
non-finite values from a method's analysis) or whose method breaks its contract leaves no
complete file, so before these records every rerun of the sweep, and every read-back of a
tuning search, ran it again to the same failure: a 6-member LETKF search on the sphere re-ran
nine diverging settings (minutes of CPU) each time it was read back. Runs are reproducible
(same seed and code, same numbers), so such a failure is a result like any other: it is kept
in ``<run file stem>.failed.json`` beside the run file, stamped with the code version that
produced it, and read back as a failed record while that code is current. A failure the
machine may have caused (memory, disk, a killed worker) is never recorded: it is retried.
``--retry-failed`` (compare, tune) ignores the records and runs those jobs again.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .equivalence import counts_as

SUFFIX = ".failed.json"

# Causes that say "this machine, this time" rather than "these settings".
_TRANSIENT = (MemoryError, OSError, KeyboardInterrupt)
_TRANSIENT_WORDS = ("out of memory", "cuda error", "killed")


def record_path(run_file) -> Path:
    """Where the failure record of the run file ``run_file`` lives (beside it)."""
    path = Path(run_file)
    return path.with_name(path.stem + SUFFIX)


def reproducible(exc: BaseException) -> bool:
    """True for a failure the job's settings and code determine: a plugin's broken contract or a
    forecast blown up from an analysis (interfaces.errors.PluginError), unless its cause is the
    machine's (memory, files, a CUDA error)."""
    from .errors import PluginError

    if not isinstance(exc, PluginError):
        return False
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, _TRANSIENT):
        return False
    text = str(exc).lower()
    return not any(word in text for word in _TRANSIENT_WORDS)


def write(run_file, code: str, error: str, job: dict[str, Any]) -> Path:
    """Record that ``job`` (run file ``run_file``) failed with ``error`` under code ``code``."""
    from .cache import write_atomic

    path = record_path(run_file)
    text = json.dumps({"error": error, "code_version": code, "job": job,
                       "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}, default=str, indent=1)
    write_atomic(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    return path


def read(run_file, code: str | None) -> str | None:
    """The recorded error of the job of ``run_file`` if its record was made by code ``code``;
    None when there is no record, it is unreadable, or other code (or unknown code) made it."""
    record = read_record(record_path(run_file), code)
    return None if record is None else str(record["error"])


def read_record(path, code: str | None) -> dict[str, Any] | None:
    """The failure record in file ``path`` ({"error", "code_version", "job", "date"}) if code
    ``code`` made it (or code that interfaces/equivalence.py counts as it); None when it is
    missing, unreadable, or other (or unknown) code made it."""
    path = Path(path)
    if code is None or not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not data.get("error"):
        return None
    # Code shown to compute the same numbers (interfaces/equivalence.py) fails the same way.
    return data if counts_as(str(data.get("code_version", "")), code) else None


def clear(run_file) -> None:
    """Forget the failure record of ``run_file`` (the job has now completed, or is retried)."""
    record_path(run_file).unlink(missing_ok=True)
