"""Observation operators, the Observations container (values, error std, QC flags) and the
``--obs`` specification language.

Spec grammar: ``[arctan+]KIND[:ARG][@VAR,VAR...]``, e.g. ``all``, ``every:4``, ``random:0.25``,
``arctan+every:2``, ``random:0.05@h`` (only height), ``stations:500`` (models may add kinds).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from .errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from .models.base import Model

# QC flag values (CF flag_values / flag_meanings are written with them).
QC_USED = 0
QC_MISSING = 1  # NaN or infinite value
QC_OUTSIDE = 2  # location outside the model domain
QC_BACKGROUND = 3  # failed the background check
QC_MEANINGS = "used missing_or_not_finite outside_domain failed_background_check"


@dataclass
class Observations:
    """One cycle's observations: values, per-value error std and QC flags, all (n_obs,)."""

    values: torch.Tensor
    std: torch.Tensor
    qc: torch.Tensor

    @classmethod
    def from_values(cls, values, std, qc=None) -> "Observations":
        """Build the container, flagging non-finite values as missing."""
        values = torch.as_tensor(values, dtype=torch.float64)
        std = torch.as_tensor(std, dtype=torch.float64).expand_as(values).clone()
        flags = torch.zeros(values.shape, dtype=torch.int8) if qc is None else torch.as_tensor(qc, dtype=torch.int8).clone()
        flags[(flags == QC_USED) & ~torch.isfinite(values)] = QC_MISSING
        return cls(values, std, flags)

    @property
    def used(self) -> torch.Tensor:
        """Boolean mask of the values a method may use."""
        return self.qc == QC_USED

    def select(self, mask: torch.Tensor) -> "Observations":
        return Observations(self.values[mask], self.std[mask], self.qc[mask])

    def __len__(self) -> int:
        return int(self.values.shape[0])


class ObservationOperator(abc.ABC):
    """A batched, differentiable map (members, *state_shape) -> (members, n_obs).

    Carries the observation-error std (diagonal R), each observation's location in the model's
    coordinates (for localisation) and observed variable, and its matrix when linear.
    """

    linear: bool = False

    def __init__(self, state_shape: Sequence[int], std, locations, channels, spec: str = ""):
        self.state_shape = tuple(state_shape)
        self.std = torch.as_tensor(std, dtype=torch.float64)
        self.locations = torch.as_tensor(locations, dtype=torch.float64)
        self.channels = torch.as_tensor(channels, dtype=torch.long)
        self.spec = spec

    @property
    def n_obs(self) -> int:
        return int(self.std.shape[0])

    def __call__(self, ensemble: torch.Tensor) -> torch.Tensor:
        members = ensemble.shape[0]
        return self.apply(ensemble.reshape(members, -1))

    @abc.abstractmethod
    def apply(self, flat: torch.Tensor) -> torch.Tensor:
        """Map flattened states (members, n_state) to (members, n_obs)."""

    @abc.abstractmethod
    def subset(self, mask: torch.Tensor) -> "ObservationOperator":
        """The operator restricted to the observations where ``mask`` is true."""

    def matrix(self) -> torch.Tensor:
        """The (n_obs, n_state) matrix of a linear operator."""
        raise NotImplementedError(f"operator '{self.spec}' is nonlinear and has no matrix")

    def jacobian(self, state: torch.Tensor) -> torch.Tensor:
        """The (n_obs, n_state) Jacobian at one state (any operator, through autograd)."""
        flat = state.reshape(1, -1).to(torch.float64)
        return torch.autograd.functional.jacobian(lambda f: self.apply(f)[0], flat)[:, 0, :]

    def file_fields(self) -> dict[str, tuple[torch.Tensor, dict]]:
        """Per-observation constants of the operator that the run file records: {name: (values
        (n_obs,), attrs)}; none for a plain selection or interpolation."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.spec}', n_obs={self.n_obs})"


class SparseLinearOperator(ObservationOperator):
    """y_i = sum_k w[i, k] * x[idx[i, k]]: point selection (k = 1) or interpolation (k > 1)."""

    linear = True

    def __init__(self, state_shape, index, weight, std, locations, channels, spec=""):
        super().__init__(state_shape, std, locations, channels, spec)
        index = torch.as_tensor(index, dtype=torch.long)
        self.index = index.unsqueeze(1) if index.dim() == 1 else index
        self.weight = torch.as_tensor(weight, dtype=torch.float64).reshape(self.index.shape)

    def apply(self, flat):
        gathered = flat[:, self.index]  # (members, n_obs, k)
        return (gathered * self.weight.to(flat.dtype)).sum(-1)

    def subset(self, mask):
        return SparseLinearOperator(
            self.state_shape, self.index[mask], self.weight[mask], self.std[mask],
            self.locations[mask], self.channels[mask], self.spec,
        )

    def matrix(self):
        out = torch.zeros(self.n_obs, math.prod(self.state_shape), dtype=torch.float64)
        rows = torch.arange(self.n_obs).unsqueeze(1).expand_as(self.index)
        out.index_put_((rows, self.index), self.weight, accumulate=True)
        return out

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """H^T y for y shaped (members, n_obs), returned as (members, n_state)."""
        n_state = math.prod(self.state_shape)
        out = torch.zeros(y.shape[0], n_state, dtype=y.dtype, device=y.device)
        contrib = y.unsqueeze(-1) * self.weight.to(y.dtype)
        out.index_add_(1, self.index.reshape(-1), contrib.reshape(y.shape[0], -1))
        return out


class ArctanOperator(ObservationOperator):
    """Nonlinear: y = arctan((H x - mean) / scale), the standardised anomaly of what ``inner``
    observes, with ``mean`` and ``scale`` the forecast model's climatological mean and std of
    each observed value (at its site, so h in metres on the sphere and x on Lorenz-96 alike).

    Standardising keeps the operator informative on any model: arctan of raw values would
    saturate (h ~ 10^4 m). Half the climatological values lie within |z| < 0.67, where the slope
    1 / (1 + z^2) is above 0.69; the tails (|z| > 2, slope < 0.2) are where it is nonlinear.
    """

    linear = False

    def __init__(self, inner: ObservationOperator, mean, scale, std, spec=""):
        super().__init__(inner.state_shape, std, inner.locations, inner.channels, spec)
        self.inner = inner
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.scale = torch.as_tensor(scale, dtype=torch.float64)

    def apply(self, flat):
        inner = self.inner.apply(flat)
        return torch.atan((inner - self.mean.to(inner.dtype)) / self.scale.to(inner.dtype))

    def subset(self, mask):
        return ArctanOperator(self.inner.subset(mask), self.mean[mask], self.scale[mask], self.std[mask], self.spec)

    def file_fields(self):
        units = "the observed variable's units"
        return {"obs_arctan_mean": (self.mean, {"long_name": f"arctan observations: climatological mean subtracted, in {units}"}),
                "obs_arctan_scale": (self.scale, {"long_name": f"arctan observations: climatological std dividing the anomaly, in {units}"})}


# ----------------------------------------------------------------------------------------------
# The spec language
# ----------------------------------------------------------------------------------------------

#: A point-selection kind: (arg, model, generator) -> flattened grid-point indices or an operator
#: factory. Built-in kinds are below; plugins add more (e.g. ``stations``) through the registry.
ObservationKind = Callable[[str, "Model", torch.Generator], "PointSet"]


@dataclass
class PointSet:
    """Where a network observes: per site, grid-point indices and interpolation weights (k each)
    and the site's coordinates. Every selected variable is observed at every site."""

    index: torch.Tensor  # (n_sites, k) flattened grid-point indices
    weight: torch.Tensor  # (n_sites, k)
    coords: torch.Tensor  # (n_sites, d)


def grid_points(model: "Model", points: torch.Tensor) -> PointSet:
    points = torch.as_tensor(points, dtype=torch.long)
    return PointSet(points.unsqueeze(1), torch.ones(len(points), 1, dtype=torch.float64), model.point_coords()[points])


def _all(arg, model, generator):
    if arg:
        raise UsageError(f"observation kind 'all' takes no argument, got '{arg}'")
    return grid_points(model, torch.arange(model.n_points))


def positive_int(kind: str, arg: str, what: str) -> int:
    """The integer argument of ``kind:arg``, or a one-line error naming the spec."""
    try:
        value = int(arg)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"observation spec '{kind}:{arg}' needs a positive integer {what}")
    return value


def _every(arg, model, generator):
    return grid_points(model, torch.arange(0, model.n_points, positive_int("every", arg, "step")))


def _random(arg, model, generator):
    try:
        frac = float(arg)
    except ValueError:
        raise UsageError(f"observation spec 'random:{arg}' needs a fraction in (0, 1]") from None
    if not 0.0 < frac <= 1.0:
        raise UsageError(f"observation spec 'random:{arg}' needs a fraction in (0, 1]")
    n = max(1, round(frac * model.n_points))
    points = torch.randperm(model.n_points, generator=generator)[:n].sort().values
    return grid_points(model, points)


def _indices(arg, model, generator):
    try:
        points = torch.tensor([int(p) for p in arg.split(",") if p.strip()])
    except ValueError:
        raise UsageError(f"observation spec 'indices:{arg}' needs comma-separated integers") from None
    if len(points) == 0 or points.min() < 0 or points.max() >= model.n_points:
        raise UsageError(
            f"observation spec 'indices:{arg}' needs grid-point indices in [0, {model.n_points - 1}]"
        )
    return grid_points(model, points)


BUILTIN_KINDS: dict[str, tuple[ObservationKind, str]] = {
    "all": (_all, "every grid point (the default)"),
    "every": (_every, "every K-th grid point: every:K"),
    "random": (_random, "a random fraction F of grid points, fixed for the run: random:F"),
    "indices": (_indices, "chosen grid points: indices:I,J,..."),
}

TRANSFORMS = {"arctan": "arctan of the standardised anomaly (nonlinear)"}
#: Default error std of arctan observations (radians), on every model. At a typical value, one
#: climatological std from the mean (|z| = 1), arctan's slope is 1/2, so 0.05 rad is the error of
#: a direct observation with std 0.10 climatological std: the 10 % rule of the models' linear
#: defaults (sw's default_obs_std). In observation space it is 7.5 % of the climatological std of
#: arctan(z) itself (0.67 for z ~ N(0, 1); measured over the 2000-state climatologies: sw 32x64
#: random:0.05 0.668, Lorenz-96 0.685). Lorenz-96 keeps the value its arctan results used.
ARCTAN_STD = 0.05


def parse_std(text: str | None, model: "Model") -> torch.Tensor:
    """``--obs-std``: one positive number for every variable, or ``var=value,...``."""
    stds = torch.tensor(model.default_obs_std, dtype=torch.float64).clone()
    if text is None or str(text).strip() == "":
        return stds
    text = str(text)
    try:
        if "=" not in text:
            stds[:] = float(text)
        else:
            for part in text.split(","):
                var, _, val = part.partition("=")
                var = var.strip()
                if var not in model.variables:
                    raise UsageError(
                        f"--obs-std names unknown variable '{var}'; valid variables: {', '.join(model.variables)}"
                    )
                stds[model.variables.index(var)] = float(val)
    except ValueError:
        raise UsageError(f"--obs-std '{text}' is not a number or var=number list") from None
    if not torch.all(torch.isfinite(stds) & (stds > 0)):
        raise UsageError(f"--obs-std '{text}' must be finite and positive")
    if not usable_std(stds):
        raise UsageError(f"--obs-std '{text}' is out of range: its square (the error variance) or its inverse "
                         f"overflows float64; give a std between 1e-150 and 1e150")
    return stds


def usable_std(std: torch.Tensor) -> bool:
    """Whether R = std**2 and R^-1 are finite and non-zero in float64 (O-B normalised by the std
    and every analysis use them); 1e300 passes a plain positivity check and breaks them."""
    var = torch.as_tensor(std, dtype=torch.float64) ** 2
    return bool(torch.all(torch.isfinite(var) & torch.isfinite(1.0 / var) & (var > 0)))


def build_operator(
    spec: str,
    model: "Model",
    generator: torch.Generator,
    std: str | float | None = None,
    kinds: dict[str, tuple[ObservationKind, str]] | None = None,
    climatology: torch.Tensor | None = None,
) -> ObservationOperator:
    """Turn an ``--obs`` spec into an operator for ``model``."""
    kinds = {**BUILTIN_KINDS, **(kinds or {})}
    spec = (spec or "all").strip()
    *transforms, selection = [p.strip() for p in spec.split("+")]
    for t in transforms:
        if t not in TRANSFORMS:
            raise UsageError(f"unknown observation transform '{t}' in '{spec}'; valid transforms: {', '.join(TRANSFORMS)}")
    selection, _, var_text = selection.partition("@")
    kind, _, arg = selection.partition(":")
    kind = kind.strip()
    if kind not in kinds:
        raise UsageError(f"unknown observation kind '{kind}' in '{spec}'; valid kinds: {', '.join(sorted(kinds))}")
    if var_text:
        names = [v.strip() for v in var_text.split(",")]
        bad = [v for v in names if v not in model.variables]
        if bad or not names:
            raise UsageError(f"observation spec '{spec}' names unknown variable '{bad[0] if bad else ''}'; valid variables: {', '.join(model.variables)}")
        channels = [model.variables.index(v) for v in names]
    else:
        channels = list(range(len(model.variables)))

    sites = kinds[kind][0](arg.strip(), model, generator)
    n_sites = sites.index.shape[0]
    if n_sites == 0:
        raise UsageError(f"observation spec '{spec}' selects no observation")
    chan = torch.tensor(channels).repeat_interleave(n_sites)  # variable-major order
    index = torch.cat([model.flat_index(c, sites.index) for c in channels])
    weight = sites.weight.repeat(len(channels), 1)
    coords = sites.coords.repeat(len(channels), 1)

    explicit_std = std is not None and str(std).strip() != ""
    if transforms and not explicit_std:
        obs_std = torch.full((len(chan),), ARCTAN_STD, dtype=torch.float64)
    else:
        obs_std = parse_std(None if std is None else str(std), model)[chan]
    op: ObservationOperator = SparseLinearOperator(model.state_shape, index, weight, obs_std, coords, chan, spec)
    for t in reversed(transforms):
        if climatology is None:
            climatology = model.climatology(500)
        clim = climatology.reshape(climatology.shape[0], -1).to(torch.float64)
        inner_clim = op.apply(clim)
        op = ArctanOperator(op, inner_clim.mean(0), inner_clim.std(0).clamp_min(1e-12), obs_std, spec)
    return op
