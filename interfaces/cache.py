"""Caches that cannot go stale or collide: code versions, locks, atomic writes, one-line notes.

A cached result (a climatology, a trained prior, a finished run file) is only valid for the code
that produced it. ``code_version`` hashes the source files of the modules that compute it (and,
optionally, the project modules they import), not the whole package: an edit to the plotting
code must not throw away an hour of sweeps, an edit to the dynamics must. Libraries whose
numbers enter the result (torch, torch-harmonics) can be folded in by name.

Concurrent processes share the cache directory: ``build_once`` takes a file lock beside the
entry, re-checks it (another process may have built it while this one waited), builds, and
writes through a temporary file renamed into place, so a reader never sees half a file and two
processes never build the same entry twice.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")

#: Packages of this project whose imports ``code_version`` may follow.
PROJECT_PACKAGES = ("interfaces", "baselines", "losda_plugin")


def note(line: str) -> None:
    """One line on stderr, flushed (so it appears before a long silent step)."""
    print(line, file=sys.stderr, flush=True)


# --- code versions ------------------------------------------------------------------------
def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names of the modules ``path`` (module ``name``) imports, anywhere in the file
    (imports inside functions count: they run too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(p for p in (*parts, base) if p)
            found.add(base)
            # "from . import sphere" imports a module, not an attribute.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def source_files(modules: Iterable[str], follow: Iterable[str] = ()) -> dict[str, Path]:
    """The source file of each module and, transitively, of every module they import whose
    name starts with one of the ``follow`` package names. {module name: file}."""
    follow = tuple(follow)
    todo, files = list(modules), {}
    while todo:
        name = todo.pop()
        if name in files:
            continue
        path = _module_file(name)
        if path is None:
            continue
        files[name] = path
        if follow:
            todo.extend(m for m in _imports(name, path)
                        if m not in files and any(m == p or m.startswith(p + ".") for p in follow))
    return files


@functools.lru_cache(maxsize=64)
def _version(modules: tuple[str, ...], follow: tuple[str, ...], libraries: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for name, path in sorted(source_files(modules, follow).items()):
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    for lib in libraries:
        try:
            h.update(f"{lib}=={importlib.metadata.version(lib)}\0".encode())
        except importlib.metadata.PackageNotFoundError:
            h.update(f"{lib} absent\0".encode())
    return h.hexdigest()[:16]


def code_version(modules: Iterable[str], follow: Iterable[str] = (), libraries: Iterable[str] = ()) -> str:
    """A hash of the source of ``modules`` (and of what they import under ``follow``) and of the
    installed versions of ``libraries``. Computed once per process: a long sweep stamps its
    results with the code it loaded at the start, even if the checkout moves on meanwhile."""
    return _version(tuple(sorted(modules)), tuple(sorted(follow)), tuple(sorted(libraries)))


def _defining_module(obj) -> str:
    return obj.__module__ if isinstance(obj, type) else type(obj).__module__


def run_code_version(model, method) -> str:
    """The version of everything that determines a run's numbers: the model's and the method's
    modules and the harness, each with the project modules it imports (a third-party plugin's
    own package is followed too). Reports, plots and the CLI are left out. ``model`` and
    ``method`` may be instances or their classes."""
    modules = {_defining_module(model), _defining_module(method), "interfaces.harness"}
    follow = set(PROJECT_PACKAGES) | {m.partition(".")[0] for m in modules}
    return code_version(modules, follow)


# --- locking and atomic writes ----------------------------------------------------------
@contextmanager
def locked(path: Path, what: str) -> Iterator[None]:
    """Hold the lock of cache entry ``path`` (a ``.lock`` file beside it); say so on stderr
    when another process holds it, so a wait is never silent."""
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.with_name(path.name + ".lock")))
    try:
        lock.acquire(timeout=1)
    except Timeout:
        note(f"da-harness: waiting for another process that is building {what} ({path})")
        t0 = time.perf_counter()
        lock.acquire()
        note(f"da-harness: {what} was built by another process ({time.perf_counter() - t0:.0f} s wait)")
    try:
        yield
    finally:
        lock.release()


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_once(path: Path, read: Callable[[Path], tuple[T | None, str]], build: Callable[[], T],
               write: Callable[[T, Path], None], what: str) -> T:
    """The cached value at ``path``, built and written when absent or invalid.

    ``read(path)`` returns (value, "") for a valid entry, else (None, why): "missing", "made by
    other code (...)", "corrupt (...)", and so on. Building happens under the entry's lock,
    after a second read, so concurrent callers build it once and all get the same data."""
    value, why = read(path)
    if value is not None:
        return value
    with locked(path, what):
        value, why = read(path)
        if value is not None:
            return value
        if why != "missing":
            note(f"da-harness: rebuilding {what}: the cached {path} is {why}")
        note(f"da-harness: caching {what} in {path}")
        t0 = time.perf_counter()
        value = build()
        write_atomic(path, lambda tmp: write(value, tmp))
        note(f"da-harness: cached {what} ({time.perf_counter() - t0:.0f} s)")
        return value


# --- progress -------------------------------------------------------------------------------
def progress_bar(total: int, desc: str, enabled: bool, unit: str = "step"):
    """A tqdm bar on stderr for a step longer than a few seconds; silent when ``enabled`` is
    False (the harness's ``progress`` flag, ``--no-progress``) or stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                disable=True if not enabled else None)
