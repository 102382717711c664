"""Typed key=value options (`--set key=value`) checked against a plugin's declared defaults."""

from __future__ import annotations

from typing import Any, Mapping

from .errors import UsageError


def coerce(value: str, default: Any, key: str, owner: str) -> Any:
    """Convert the string `value` to the type of `default`, or fail naming the option."""
    try:
        if isinstance(default, bool):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            out = float(value)
            return out
        if default is None or isinstance(default, str):
            return value
    except ValueError:
        pass
    else:
        return value
    raise UsageError(
        f"option '{key}' of {owner} expects {type(default).__name__}, got '{value}'"
    )


def parse_assignments(items) -> dict[str, str]:
    """Parse ['a=1', 'b=x'] into {'a': '1', 'b': 'x'}."""
    out: dict[str, str] = {}
    for item in items or ():
        if "=" not in item:
            raise UsageError(f"option '{item}' is not of the form key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise UsageError(f"option '{item}' has an empty key")
        out[key] = value.strip()
    return out


def resolve(defaults: Mapping[str, Any], given: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Merge `given` (strings or typed values) into `defaults`; unknown keys are an error."""
    merged = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            valid = ", ".join(sorted(defaults)) or "(none)"
            raise UsageError(f"unknown option '{key}' for {owner}; valid options: {valid}")
        merged[key] = coerce(value, defaults[key], key, owner) if isinstance(value, str) else value
    return merged


def split_options(given: Mapping[str, str], targets: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """Route each `--set` key to the one target (e.g. model, method) that declares it.

    A key may be prefixed with the target ('model.resolution'); a key declared by several
    targets without a prefix goes to all of them.
    """
    routed: dict[str, dict] = {name: {} for name in targets}
    for key, value in given.items():
        prefix, _, bare = key.partition(".")
        if bare and prefix in targets:
            routed[prefix][bare] = value
            continue
        owners = [name for name, defaults in targets.items() if key in defaults]
        if not owners:
            valid = sorted({f"{k}" for d in targets.values() for k in d})
            raise UsageError(
                f"unknown option '{key}' (for {' or '.join(targets)}); valid options: "
                + (", ".join(valid) or "(none)")
            )
        for owner in owners:
            routed[owner][key] = value
    return routed


def check_range(owner: str, options: Mapping[str, Any], key: str, low: float | None = None,
                high: float | None = None, *, low_open: bool = False, meaning: str = "") -> None:
    """Refuse ``options[key]`` outside [low, high] (``low_open``: (low, high]) or NaN, in one line
    naming the option, its valid range and the value given."""
    value = options[key]
    ok = value == value  # NaN fails every bound
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if ok:
        return
    if low is not None and high is not None:
        bounds = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
    elif low is not None:
        bounds = f"{'>' if low_open else '>='} {low:g}"
    else:
        bounds = f"<= {high:g}"
    raise UsageError(f"option '{key}' of {owner} must be {bounds}{meaning}, got {value}")
