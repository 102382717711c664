"""Which code made a result: the git commit of the checkout this package runs from.

Cached per process on first use, so a long sweep reports the code it loaded at its start even
if the checkout moves on while it runs."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The folders whose uncommitted edits would change numbers.
CODE_DIRS = ("interfaces", "baselines", "losda_plugin", "benchmarks/suites")


def git(*args: str) -> str:
    """Output of a git command in the package's checkout; '' when git or the checkout is absent."""
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.lru_cache(maxsize=1)
def code_commit() -> str:
    """Short commit hash, noting uncommitted changes to the code; 'unknown' outside a checkout."""
    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_DIRS)
    return commit + (" (with uncommitted changes to the code)" if dirty else "")
