"""Errors the CLI turns into one-line messages (no traceback unless --debug)."""


class HarnessError(Exception):
    """A problem the user can fix; its message is one line naming the culprit."""

    exit_code = 1


class UsageError(HarnessError):
    """Unknown or ill-formed name or option (exit code 2, like argparse)."""

    exit_code = 2


class DataError(HarnessError):
    """A file or array that is missing, corrupt or inconsistent."""

    exit_code = 1


class PluginError(HarnessError):
    """A plugin broke its contract (wrong shape, non-finite values, exception)."""

    exit_code = 1


def unknown_name(kind: str, name: str, valid) -> UsageError:
    """The standard 'unknown X; valid: ...' error."""
    names = ", ".join(sorted(valid)) or "(none registered)"
    return UsageError(f"unknown {kind} '{name}'; valid {kind}s: {names}")
