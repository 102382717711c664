"""Global ensemble Kalman filters: the square-root ETKF and the perturbed-observation EnKF.

Both work in ensemble space (N x N matrices), so the cost is O(N^2 n_obs) whatever the state
size, and a nonlinear H enters only through the ensemble of H(x). Prior multiplicative
inflation and relaxation to prior spread (RTPS) counter the spread lost to sampling error.
"""

from __future__ import annotations

import contextlib
import math

import torch

from interfaces.assimilator import Assimilator
from interfaces.device import device_of, to_cpu, to_device
from interfaces.ensemble import rtps
from interfaces.errors import UsageError
from interfaces.options import check_range


#: Below this many ensemble values (members x state size) an analysis runs on one thread.
SMALL = 1 << 20


@contextlib.contextmanager
def threads_for(size: int):
    """One thread for small problems: threaded BLAS/LAPACK on tiny matrices is far slower than
    one thread whenever cores are shared (measured on a busy 2-core machine: eigh of 40 x 40
    80 ms against 0.1 ms; an N = 40 Lorenz-96 EnKF cycle 24 ms against 0.6 ms)."""
    threads = torch.get_num_threads()
    if size > SMALL or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def ensemble_space(background: torch.Tensor, operator, inflation: float):
    """Common first steps: the flattened mean, the (inflated) anomalies, the prior spread of
    each value before inflation (unnormalised, for RTPS), and H of the inflated ensemble with its
    mean."""
    N = background.shape[0]
    X = background.reshape(N, -1)
    mean = X.mean(0)
    anom = X - mean
    prior_spread = anom.pow(2).sum(0).sqrt()
    if inflation != 1.0:
        anom = anom * inflation
        X = mean + anom
    HX = operator.apply(X)
    hmean = HX.mean(0)
    return mean, anom, prior_spread, HX, hmean


class EnsembleFilter(Assimilator):
    """What every ensemble filter shares: at least two members, nothing to do without
    observations, small analyses on one thread, and the analysis on the Context's device."""

    devices = None

    def assimilate(self, background, observations, operator):
        if background.shape[0] < 2:
            raise UsageError(f"{self.name} needs at least 2 members")
        if operator.n_obs == 0:
            return background.clone()
        device = device_of(self.context)
        with threads_for(background.numel()):
            analysis = self._analysis(background.to(device), to_device(observations, device), to_device(operator, device))
        return to_cpu(analysis, like=background)

    def _analysis(self, background, observations, operator):
        raise NotImplementedError


class EnKF(EnsembleFilter):
    name = "enkf"
    description = "global EnKF: square-root ETKF (default) or perturbed-observation (variant=stochastic)"
    defaults = {
        "variant": "etkf",  # or "stochastic"
        # -1 (not given): the variant's default below; a value given is checked in __init__.
        "inflation": -1.0,  # multiplicative, on the prior anomalies
        "rtps": -1.0,  # relaxation to prior spread, 0 (off) to 1
        "center_perturbations": True,  # stochastic: zero-mean observation perturbations
    }
    preferred_members = 40
    #: (inflation, RTPS) tuned on Lorenz-96 (N = 40; all, every:2, random:0.5 and arctan
    #: observed, 3 seeds, from a climatological start). The perturbed-observation filter needs
    #: RTPS to survive the spin-up with sparse or nonlinear observations; the square-root filter
    #: is best with inflation alone.
    variant_defaults = {"etkf": (1.03, 0.0), "stochastic": (1.02, 0.5)}

    def __init__(self, **options):
        super().__init__(**options)
        if self.options["variant"] not in ("etkf", "stochastic"):
            raise UsageError(f"unknown enkf variant '{self.options['variant']}'; valid variants: etkf, stochastic")
        owner = f"method '{self.name}'"
        # Only values the user gave are checked: -1 is the "variant's default" marker.
        if "inflation" in options:
            check_range(owner, self.options, "inflation", 0.0, low_open=True, meaning=" (multiplicative)")
        if "rtps" in options:
            check_range(owner, self.options, "rtps", 0.0, 1.0, meaning=" (0: off, 1: full relaxation)")
        inflation, relax = self.variant_defaults[self.options["variant"]]
        if self.options["inflation"] < 0:
            self.options["inflation"] = inflation
        if self.options["rtps"] < 0:
            self.options["rtps"] = relax


    def _analysis(self, background, observations, operator):
        N = background.shape[0]
        o = self.options
        mean, anom, prior_spread, HX, hmean = ensemble_space(background, operator, o["inflation"])
        inv_std = 1.0 / observations.std.to(HX.dtype)
        scale = 1.0 / math.sqrt(N - 1)
        Ys = (HX - hmean) * (inv_std * scale)  # (N, p)
        evals, V = torch.linalg.eigh(Ys @ Ys.T)
        evals = evals.clamp_min(0.0)
        if o["variant"] == "etkf":
            dn = (observations.values - hmean) * inv_std
            w = V @ ((V.T @ (Ys @ dn)) / (1.0 + evals))
            # Symmetric square root: keeps the anomalies centred and closest to the prior's.
            T = (V * (1.0 + evals).rsqrt()) @ V.T
            post_anom = T @ anom
            new_mean = mean + scale * (w @ anom)
        else:
            # Drawn on the CPU generator, then moved: the same numbers on every device.
            eps = torch.randn(HX.shape, generator=self.context.generator, dtype=HX.dtype).to(HX.device)
            if o["center_perturbations"]:
                eps = eps - eps.mean(0)
            D = (observations.values + eps * observations.std - HX) * inv_std  # (N, p)
            # Each member's increment: X' (I + Ys Ys^T)^-1 Ys D_i, in ensemble coordinates.
            W = scale * (((D @ Ys.T) @ V) / (1.0 + evals)) @ V.T
            Xa = mean + anom + W @ anom
            new_mean = Xa.mean(0)
            post_anom = Xa - new_mean
        if o["rtps"] > 0.0:
            post_anom = rtps(post_anom, prior_spread, o["rtps"])
        return (new_mean + post_anom).reshape(background.shape)
