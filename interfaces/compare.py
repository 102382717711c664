"""The comparison engine: many runs (methods x seeds x settings), aggregated into one table."""

from __future__ import annotations

from .errors import UsageError


def add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare methods on the same truth and observations")
    p.add_argument("--model", default="lorenz96")
    p.add_argument("--methods", default="free,climatology")
    p.add_argument("--seeds", type=int, default=1)


def cmd_compare(args, registry) -> int:
    raise UsageError("compare is not implemented yet")
