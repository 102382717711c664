"""Cache entries shipped with the code, so that a first run on a fresh machine need not rebuild them.

Some cached products are small but slow to make: the sphere's balanced 3D-Var B for the 32x64
grid and 5 % random observations is 3 KB and took 187 s to estimate (a held-out cycled run of
2 x 80 cycles) in the README's first command from an empty cache, a third of its time. Such
entries are committed in ``benchmarks/cache/`` with their provenance, and copied into the cache
directory where it lacks them, before a command's work. Nothing is trusted blindly: each cache's
own reader checks the code that made an entry and rebuilds a stale one, saying why, as it does
for an entry it built itself; an entry the cache already holds is never replaced.
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: Where the shipped entries live (beside the suites, in the repository).
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "cache"
#: The kinds of entry shipped: their file names end so (PROVENANCE.md is not one).
SUFFIXES = (".pt",)


def seed(cache_dir, shipped_dir: Path = SHIPPED_DIR) -> list[Path]:
    """Copy each shipped entry that ``cache_dir`` lacks into it (through a temporary name, so a
    concurrent reader never sees half a file). Returns what was copied."""
    from .cache import write_atomic

    copied = []
    if not shipped_dir.is_dir():
        return copied
    cache_dir = Path(cache_dir)
    for src in sorted(p for p in shipped_dir.iterdir() if p.suffix in SUFFIXES):
        dst = cache_dir / src.name
        if dst.exists():
            continue
        write_atomic(dst, lambda tmp: shutil.copyfile(src, tmp))
        copied.append(dst)
    return copied
