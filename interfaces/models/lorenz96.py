"""Lorenz-96: 40 variables, F = 8, RK4 with dt = 0.05, one step per cycle (Sakov & Oke 2008)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from .base import RingModel


def tendency(x: torch.Tensor, forcing: float) -> torch.Tensor:
    """dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F, along the last axis."""
    return (torch.roll(x, -1, -1) - torch.roll(x, 2, -1)) * torch.roll(x, 1, -1) - x + forcing


def rk4_step(x: torch.Tensor, dt: float, forcing: float) -> torch.Tensor:
    k1 = tendency(x, forcing)
    k2 = tendency(x + 0.5 * dt * k1, forcing)
    k3 = tendency(x + 0.5 * dt * k2, forcing)
    k4 = tendency(x + dt * k3, forcing)
    return x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def _rk4_numpy(x: np.ndarray, dt: float, forcing: float) -> np.ndarray:
    """The same RK4 step in NumPy: on 40-variable states torch's per-operation overhead is the
    whole cost, and NumPy's is a few times smaller (results are bitwise identical)."""

    def f(y):
        padded = np.concatenate([y[..., -2:], y, y[..., :1]], axis=-1)
        return (padded[..., 3:] - padded[..., :-3]) * padded[..., 1:-2] - y + forcing

    k1 = f(x)
    k2 = f(x + 0.5 * dt * k1)
    k3 = f(x + 0.5 * dt * k2)
    k4 = f(x + dt * k3)
    return x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


@functools.lru_cache(maxsize=8)
def _climatology(size: int, forcing: float, dt: float, steps: int, n: int) -> torch.Tensor:
    # A fixed seed: the climatology is part of the testbed, independent of experiment seeds.
    gen = torch.Generator().manual_seed(20250)
    batch = 50
    x = forcing + torch.randn(batch, size, generator=gen, dtype=torch.float64)
    for _ in range(2000):  # spin-up: 100 time units
        x = rk4_step(x, dt, forcing)
    samples = []
    per_batch = -(-n // batch)
    for _ in range(per_batch):
        for _ in range(steps):
            x = rk4_step(x, dt, forcing)
        samples.append(x.clone())
    return torch.cat(samples)[:n]


class Lorenz96(RingModel):
    name = "lorenz96"
    description = "Lorenz-96, 40 variables, F=8, RK4 dt=0.05, one step per cycle"
    defaults = {"size": 40, "forcing": 8.0, "dt": 0.05, "steps_per_cycle": 1}
    variables = ("x",)
    units = ("1",)
    standard_names = ("",)
    time_units = "1"
    default_obs_std = (1.0,)

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        if o["size"] < 4:
            raise ValueError("lorenz96 needs size >= 4")
        self.state_shape = (int(o["size"]),)
        self.cycle_length = float(o["dt"]) * int(o["steps_per_cycle"])

    def forecast(self, ensemble, generator=None):
        dt, forcing = self.options["dt"], self.options["forcing"]
        steps = int(self.options["steps_per_cycle"])
        if ensemble.requires_grad or ensemble.dtype != torch.float64 or ensemble.device.type != "cpu":
            x = ensemble
            for _ in range(steps):
                x = rk4_step(x, dt, forcing)
            return x
        x = ensemble.numpy()
        for _ in range(steps):
            x = _rk4_numpy(x, dt, forcing)
        return torch.from_numpy(x)

    def initial_states(self, n, generator):
        o = self.options
        x = o["forcing"] + torch.randn(n, self.state_shape[0], generator=generator, dtype=torch.float64)
        for _ in range(1000):
            x = rk4_step(x, o["dt"], o["forcing"])
        return x

    def climatology(self, n):
        o = self.options
        # Samples 10 steps (0.5 time units) apart along each trajectory.
        return _climatology(self.state_shape[0], float(o["forcing"]), float(o["dt"]), 10, int(n)).clone()

    def default_length_scale(self):
        return 4.0
