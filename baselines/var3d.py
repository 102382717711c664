"""3D-Var with a static B, in the control variable v of x = x_b + S v (B = S S^T).

Cost: J(v) = 1/2 |v|^2 + 1/2 |R^-1/2 (y - H(x_b + S v))|^2.
- linear H: J is quadratic; its minimiser solves (I + S^T H^T R^-1 H S) v = S^T H^T R^-1 d,
  d = y - H x_b, by conjugate gradients (matrix-free: only S, S^T, H and H^T are applied);
- nonlinear H: L-BFGS with autograd gradients.

Several members are analysed independently (same B and observations, batched), so a
deterministic method given an ensemble keeps one analysis per member.
"""

from __future__ import annotations

import sys

import torch

from interfaces.assimilator import Assimilator
from interfaces.device import device_of, to_cpu, to_device
from interfaces.errors import UsageError
from interfaces.options import check_range

from . import static_b


def adjoint(operator, y: torch.Tensor) -> torch.Tensor:
    """H^T y for a linear operator; y (batch, n_obs) -> (batch, n_state)."""
    if hasattr(operator, "adjoint"):
        return operator.adjoint(y)
    n_state = 1
    for s in operator.state_shape:
        n_state *= s
    x = torch.zeros(y.shape[0], n_state, dtype=y.dtype, device=y.device, requires_grad=True)
    (out,) = torch.autograd.grad(operator.apply(x), x, grad_outputs=y)
    return out


class Scaled:
    """B times a factor: S scaled by its square root."""

    def __init__(self, inner, root: float):
        self.inner, self.root, self.n_ctrl = inner, root, inner.n_ctrl

    def sqrt(self, v):
        return self.root * self.inner.sqrt(v)

    def sqrt_t(self, x):
        return self.root * self.inner.sqrt_t(x)


def conjugate_gradient(apply_A, b: torch.Tensor, tol: float, max_iter: int,
                       info: dict | None = None) -> tuple[torch.Tensor, int]:
    """Solve A x = b for a batch of right-hand sides (batch, n) with A symmetric positive
    definite; stops when every |r| <= tol |b|, or after ``max_iter`` iterations. Returns x and
    the iteration count; ``info``, if given, receives ``converged`` (every |r| <= tol |b|) and
    ``residual`` (the largest |r| / |b|), so that stopping at max_iter is never silent."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum(1)
    rs0 = rs.clone()
    target = tol**2 * rs
    it = 0
    while it < max_iter and bool((rs > target).any()):
        Ap = apply_A(p)
        # Members already converged have rs == 0 exactly only when b == 0; guard the ratio.
        alpha = rs / (p * Ap).sum(1).clamp_min(torch.finfo(b.dtype).tiny)
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * Ap
        rs_new = (r * r).sum(1)
        p = r + (rs_new / rs.clamp_min(torch.finfo(b.dtype).tiny))[:, None] * p
        rs = rs_new
        it += 1
    if info is not None:
        info["converged"] = bool((rs <= target).all())
        info["residual"] = float(torch.where(rs0 > 0, rs / rs0.clamp_min(torch.finfo(b.dtype).tiny), 0.0).max().sqrt())
    return x, it


#: The held-out run that estimates the balanced B starts from the climatological B times this
#: (errors of a tenth of the climatological std); only its first leg uses it.
BOOTSTRAP_SCALE = 0.01


class Var3D(Assimilator):
    name = "3dvar"
    description = "3D-Var with static B (climatology or NMC-style), CG for linear H, L-BFGS otherwise"
    defaults = {
        "b_source": "nmc",  # or "climatology", or "balanced" (sphere: multivariate, see balanced_b.py)
        "scale": 0.0,  # B = scale * (sample covariance); 0: the source's default below
        "nmc_lead": 2,  # cycles of the NMC-style forecast differences
        "nmc_perturbation": 0.1,  # their initial perturbation, in climatological std
        "nmc_samples": 500,  # forecast pairs (climatological states used)
        "adaptive": False,  # rescale B each cycle to fit the innovation statistics
        "adaptive_cycles": 50,  # memory of that running estimate, in cycles
        "tol": 1e-8,  # relative residual (CG) or relative gradient (L-BFGS)
        "max_iter": 200,
    }
    preferred_members = 1
    devices = None  # B, the operator and the minimisation live on Context.device
    #: Scales tuned on Lorenz-96 (all observed, R = I), used when ``scale`` is 0.
    default_scales = {"climatology": 0.02, "nmc": 2.0, "balanced": 1.0}
    #: Per model, the B source and its scale tuned there. On the sphere the multivariate
    #: balanced B halves the univariate NMC B's steady-state error (0.046 against 0.105 at 32x64,
    #: 5 %, seed 4444, cycles 100-200; benchmarks/results/balanced_b.md), so it is the default;
    #: the NMC B keeps its own tuned scale when asked for (its differences are far smaller than
    #: the sphere's background errors, hence 128).
    tuned_scales = {"sw": {"balanced": 0.5, "nmc": 128.0}}
    model_defaults = {"sw": {"b_source": "balanced", "scale": 0.5}}
    model_defaults_source = {
        "sw": "benchmarks/results/balanced_b.md: b_source and scale tuned with `da-harness tune` on held-out "
              "seeds 10-11, sw 32x64 random:0.05, 200 cycles, burn-in 100 (balanced 0.0488 at scale 0.5, "
              "plateau 0.25-0.5; NMC B at 128: benchmarks/results/tuning.md); also used at 64x128 and 1 %, "
              "not tuned there",
    }

    @classmethod
    def defaults_for(cls, model, given):
        out = super().defaults_for(model, given)
        source = str(given.get("b_source", out.get("b_source", "nmc")))
        scale = cls.tuned_scales.get(model, {}).get(source)
        if scale is None:
            out.pop("scale", None)  # no scale tuned for this source here: the source's own default
        else:
            out["scale"] = scale
        return out

    def __init__(self, **options):
        super().__init__(**options)
        if self.options["b_source"] not in self.default_scales:
            raise UsageError(f"unknown B source '{self.options['b_source']}'; valid sources: {', '.join(self.default_scales)}")
        owner = f"method '{self.name}'"
        check_range(owner, self.options, "scale", 0.0, meaning=" (0: the B source's default)")
        check_range(owner, self.options, "nmc_perturbation", 0.0, low_open=True)
        check_range(owner, self.options, "tol", 0.0, low_open=True)
        for key, low in (("nmc_lead", 1), ("nmc_samples", 2), ("adaptive_cycles", 1), ("max_iter", 1)):
            check_range(owner, self.options, key, low)
        self.covariance = None  # a BackgroundCovariance; tests may set the exact one
        self._diag: dict[str, float] = {}
        self._cg: dict = {}  # the last conjugate-gradient solve: converged, residual
        self._analyses = 0
        self._warned_cg = False
        # Running sums of the innovation excess and of tr(R^-1 H B H^T), and the cycle count.
        self._fit = {"excess": 0.0, "trace": 0.0, "cycles": 0}

    def prepare(self, context):
        super().prepare(context)
        o = self.options
        scale = o["scale"] if o["scale"] > 0 else self.default_scales.get(o["b_source"], 1.0)
        # Estimated on the CPU (it runs the model's forecasts), then kept on the run's device.
        if o["b_source"] == "balanced":
            covariance = self._balanced(context, scale)
        else:
            covariance = static_b.estimate(
                context.model, context.climatology, o["b_source"], scale,
                o["nmc_lead"], o["nmc_perturbation"], context.generator, o["nmc_samples"], progress=context.progress,
            )
        self.covariance = to_device(covariance, context.device)

    def _balanced(self, context, scale: float):
        """The multivariate balanced B (cached per model configuration and observation spec),
        estimated from held-out cycled runs that start from the univariate NMC B."""
        from interfaces.observations import build_operator

        from . import balanced_b

        o = self.options

        def bootstrap():
            return static_b.estimate(context.model, context.climatology, "climatology", BOOTSTRAP_SCALE)

        def analyse(S, xb, y, operator):
            inv_std = 1.0 / operator.std
            solve = self._solve_linear if operator.linear else self._solve_nonlinear
            v, _ = solve(S, xb.reshape(xb.shape[0], -1), y, inv_std, operator)
            return (xb.reshape(xb.shape[0], -1) + S.sqrt(v)).reshape(xb.shape)

        return balanced_b.estimate(context.model, context, analyse, bootstrap, scale, build_operator=build_operator)

    def assimilate(self, background, observations, operator):
        members = background.shape[0]
        if operator.n_obs == 0:
            self._diag = {"iterations": 0.0, "cost": 0.0, "b_factor": 1.0}
            return background.clone()
        device = device_of(self.context)
        xb = background.reshape(members, -1).to(device, torch.float64)
        operator = to_device(operator, device)
        y = observations.values.to(device, torch.float64)
        inv_std = 1.0 / observations.std.to(device, torch.float64)
        S = self.covariance
        factor = 1.0
        if self.options["adaptive"]:
            factor = self._adapt(S, xb, y, inv_std, operator)
            S = Scaled(S, factor**0.5)
        if operator.linear:
            v, iters = self._solve_linear(S, xb, y, inv_std, operator)
        else:
            v, iters = self._solve_nonlinear(S, xb, y, inv_std, operator)
        xa = xb + S.sqrt(v)
        misfit = (y - operator.apply(xa)) * inv_std
        cost = 0.5 * ((v * v).sum() + (misfit * misfit).sum()) / members
        self._diag = {"iterations": float(iters), "cost": float(cost), "b_factor": factor}
        self._analyses += 1
        if operator.linear:
            self._diag.update(cg_iterations=float(iters), cg_converged=float(self._cg["converged"]))
            self._warn_unconverged()
        return to_cpu(xa.reshape(background.shape), like=background)

    def _adapt(self, S, xb, y, inv_std, operator, probes: int = 32) -> float:
        """The factor s that makes E|R^-1/2 d|^2 = s tr(R^-1 H B H^T) + n_obs hold on average over
        recent cycles (innovation consistency, as in Desroziers et al. 2005). tr(R^-1 H B H^T)
        comes from random probes v ~ N(0, I): E|R^-1/2 H S v|^2, H linearised by a difference."""
        hx = operator.apply(xb)
        excess = (((y - hx) * inv_std) ** 2).mean(0).sum().item() - y.shape[0]
        # Drawn on the CPU generator, then moved: the same numbers on every device.
        v = torch.randn(probes, S.n_ctrl, generator=self.context.generator, dtype=torch.float64).to(xb.device)
        eps = 1e-3
        hs = (operator.apply(xb[:1] + eps * S.sqrt(v)) - hx[:1]) * (inv_std / eps)
        trace = (hs * hs).sum(1).mean().item()
        fit = self._fit
        fit["cycles"] += 1
        a = 1.0 / min(fit["cycles"], self.options["adaptive_cycles"])
        fit["excess"] += a * (excess - fit["excess"])
        fit["trace"] += a * (trace - fit["trace"])
        return max(fit["excess"] / max(fit["trace"], 1e-300), 1e-3)

    def state_dict(self):
        return {"fit": dict(self._fit)}

    def load_state_dict(self, state):
        self._fit = dict(state.get("fit", self._fit))

    def _solve_linear(self, S, xb, y, inv_std, operator):
        w = inv_std**2
        d = y - operator.apply(xb)

        def hessian(v):
            return v + S.sqrt_t(adjoint(operator, operator.apply(S.sqrt(v)) * w))

        rhs = S.sqrt_t(adjoint(operator, d * w))
        self._cg = {}
        return conjugate_gradient(hessian, rhs, self.options["tol"], self.options["max_iter"], self._cg)

    def _warn_unconverged(self) -> None:
        """One stderr line, the first time CG stops at max_iter (diag_cg_converged counts the rest)."""
        if self._cg["converged"] or self._warned_cg:
            return
        self._warned_cg = True
        o = self.options
        print(f"3dvar: warning: conjugate gradient stopped at max_iter={o['max_iter']} without converging at "
              f"analysis {self._analyses} (relative residual {self._cg['residual']:.1e} > tol {o['tol']:g}); "
              f"the analyses are approximate; raise --set max_iter (diag_cg_converged is the fraction of "
              f"cycles that converged)", file=sys.stderr)

    def _solve_nonlinear(self, S, xb, y, inv_std, operator):
        v = torch.zeros(xb.shape[0], S.n_ctrl, dtype=torch.float64, device=xb.device, requires_grad=True)

        def cost():
            misfit = (y - operator.apply(xb + S.sqrt(v))) * inv_std
            return 0.5 * ((v * v).sum() + (misfit * misfit).sum())

        # Absolute gradient tolerance relative to the gradient at v = 0.
        g0 = torch.autograd.grad(cost(), v)[0].abs().max().item()
        opt = torch.optim.LBFGS(
            [v], lr=1.0, max_iter=self.options["max_iter"], history_size=20,
            tolerance_grad=max(self.options["tol"] * g0, 1e-300), tolerance_change=1e-12,
            line_search_fn="strong_wolfe",
        )

        def closure():
            opt.zero_grad()
            J = cost()
            J.backward()
            return J

        opt.step(closure)
        iters = opt.state[opt._params[0]].get("n_iter", 0)
        return v.detach(), iters

    def diagnostics(self):
        return dict(self._diag)
