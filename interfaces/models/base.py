"""The Model contract: a dynamical system the harness cycles, batched over ensemble members.

A state is a tensor shaped ``state_shape``; an ensemble adds a leading member axis. Models with
several variables put them on the first state axis (channels), e.g. ``(3, 32, 64)`` for height
and winds on the sphere; single-variable models have no channel axis, e.g. ``(40,)``.
"""

from __future__ import annotations

import abc
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import torch


class Model(abc.ABC):
    """A forecast model with its grid, its geometry (for localisation) and its climatology."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Options accepted through ``--set key=value``, with their defaults (types follow them).
    defaults: ClassVar[dict[str, Any]] = {}

    #: Variable (channel) names, their units and CF standard names ("" where none exists).
    variables: tuple[str, ...] = ("x",)
    units: tuple[str, ...] = ("1",)
    standard_names: tuple[str, ...] = ("",)
    #: Shape of one state, without the member axis.
    state_shape: tuple[int, ...] = ()
    #: Model time advanced by one assimilation cycle, and its unit (CF style, e.g. "hours").
    cycle_length: float = 1.0
    time_units: str = "1"
    #: Names and units of the columns of ``point_coords`` (written with observation locations).
    location_names: tuple[str, ...] = ("index",)
    location_units: tuple[str, ...] = ("1",)
    #: Default observation-error std per variable.
    default_obs_std: tuple[float, ...] = (1.0,)

    def __init__(self, **options: Any):
        self.options = {**self.defaults, **options}
        #: Where a model may cache expensive data (climatologies); set by the harness.
        self.cache_dir = None
        #: Whether long steps (spin-up, climatology runs) show progress bars; set by the harness.
        self.progress = False

    def cache_root(self) -> Path:
        """``cache_dir``, else $DA_HARNESS_CACHE, else ~/.cache/da-harness. Cache entries must
        be written with interfaces.cache (lock, code version, atomic write)."""
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        env = os.environ.get("DA_HARNESS_CACHE")
        return Path(env) if env else Path.home() / ".cache" / "da-harness"

    # --- dynamics -------------------------------------------------------------------------
    @abc.abstractmethod
    def forecast(self, ensemble: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Advance every member by one assimilation cycle. ``generator`` drives model noise."""

    @abc.abstractmethod
    def initial_states(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` independent states on the attractor (after spin-up), shaped (n, *state_shape)."""

    def truth_run(self, cycles: int, generator: torch.Generator) -> torch.Tensor:
        """A truth trajectory of ``cycles + 1`` states (index 0 is the initial state)."""
        x = self.initial_states(1, generator)
        states = [x[0]]
        for _ in range(cycles):
            x = self.forecast(x, generator)
            states.append(x[0])
        return torch.stack(states)

    @abc.abstractmethod
    def climatology(self, n: int) -> torch.Tensor:
        """``n`` states from a long run after spin-up, independent of any experiment's seed."""

    # --- grid and geometry ----------------------------------------------------------------
    @property
    def has_channels(self) -> bool:
        return len(self.state_shape) > 1 or len(self.variables) > 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.state_shape[1:]) if self.has_channels else tuple(self.state_shape)

    @property
    def n_points(self) -> int:
        return math.prod(self.spatial_shape)

    @property
    def state_size(self) -> int:
        return math.prod(self.state_shape)

    def flat_index(self, channel: torch.Tensor | int, point: torch.Tensor | int):
        """Index into the flattened state of (variable number, flattened grid point)."""
        return channel * self.n_points + point

    @abc.abstractmethod
    def point_coords(self) -> torch.Tensor:
        """Coordinates of the flattened grid points, shaped (n_points, d), used for distances."""

    @abc.abstractmethod
    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Pairwise distances between coordinate sets a (n, d) and b (m, d), shaped (n, m)."""

    def area_weights(self) -> torch.Tensor:
        """Weights of the spatial grid points, shaped ``spatial_shape`` with mean 1."""
        return torch.ones(self.spatial_shape, dtype=torch.float64)

    def contains(self, coords: torch.Tensor) -> torch.Tensor:
        """Which coordinates (m, d) lie inside the model's domain (for QC of off-grid data)."""
        return torch.ones(coords.shape[0], dtype=torch.bool)

    def grid_coords(self) -> dict[str, tuple[str, Any, dict]]:
        """netCDF coordinates of the spatial axes: {name: (dim, values, attrs)} in axis order."""
        dims = {}
        for axis, size in enumerate(self.spatial_shape):
            name = "site" if len(self.spatial_shape) == 1 else f"axis{axis}"
            dims[name] = (name, list(range(size)), {"long_name": "grid index"})
        return dims

    def static_covariance(self, anomalies: torch.Tensor, scale: float = 1.0):
        """A model-specific static B (an interfaces.covariance.BackgroundCovariance) built from
        anomalies (n, *state_shape), or None to let the method build a dense one."""
        return None

    @classmethod
    def default_burn_in(cls, cycles: int) -> int:
        """Cycles left out of the scores when the user gives no ``--burn-in``: a tenth, for
        models whose filters settle within a few cycles of a climatological start."""
        return cycles // 10

    def default_length_scale(self) -> float:
        """A sensible localisation length L, in the units of ``distance``. Convention (as in
        DAPPER): L is the Gaussian-like length; the Gaspari-Cohn half-width is
        c = sqrt(10/3) L, so weights vanish beyond 2c (about 3.65 L)."""
        return 1.0

    def summary(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.name}({opts})"


class RingModel(Model):
    """A one-variable model on a periodic ring of grid points: index coordinates and distance."""

    def point_coords(self) -> torch.Tensor:
        return torch.arange(self.state_shape[0], dtype=torch.float64).unsqueeze(1)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Index distance on the ring."""
        n = self.state_shape[0]
        d = (a[:, :1] - b[:, :1].T).abs()
        return torch.minimum(d, n - d)
