"""A reusable contract test for assimilators, for third parties to run in their own CI::

    from interfaces.testing import check_assimilator
    from my_package import MyMethod

    def test_my_method_honours_the_contract():
        check_assimilator(MyMethod)                      # Lorenz-96, a few seconds
        check_assimilator(MyMethod, obs="arctan+every:2", members=10, options={"gain": 0.3})

It checks, on a few analyses of one model: the analysis is a torch.Tensor shaped like the
background, float64 for a float64 background and finite; the inputs are left untouched; QC-flagged
observations are unused (the analysis does not change when their values do, and equals the
analysis from an observation set built directly from the used values); the same Context seed gives
the same analysis; a state_dict, pickled as the harness does, resumes to the same next analysis.
It returns a report dict, or raises AssertionError naming the method and the failed check.

A method that cannot handle a setup (say, a nonlinear observation operator) refuses it in
``prepare`` by raising a one-line ``interfaces.errors.UsageError`` naming what it needs; the
harness prints that line and exits with code 2. ``check_assimilator`` reports such a refusal as
an AssertionError that starts "refused:", since nothing could be checked; when the refusal is
intended, pass ``refuses="words of the message"`` and the check instead asserts that prepare
refuses with a one-line UsageError containing them (and fails if the method accepts the setup).
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .assimilator import Assimilator, Context
from .errors import UsageError
from .observations import QC_BACKGROUND, Observations, build_operator


class _Refusal(AssertionError):
    """prepare raised a UsageError: the method declined the setup."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class _Checker:
    def __init__(self, factory, model, obs, members, options, seed, cache_dir, registry):
        from .harness import build_model, default_cache
        from .registry import get_registry

        self.factory, self.options, self.seed = factory, dict(options or {}), seed
        registry = registry or get_registry()
        cache = Path(cache_dir) if cache_dir else default_cache()
        self.model = build_model(registry, model, {}, cache) if isinstance(model, str) else model
        self.name = getattr(factory, "name", "") or getattr(factory, "__name__", repr(factory))
        self.members = members or getattr(factory, "preferred_members", None) or 10
        self.climatology = self.model.climatology(500).to(torch.float64)
        gen = torch.Generator().manual_seed(seed)
        self.operator = build_operator(obs, self.model, gen, None, registry.kinds(), self.climatology)
        self.cache = cache
        # Two cycles' worth of backgrounds and observations of a truth drawn from climatology.
        pick = torch.randperm(self.climatology.shape[0], generator=gen)
        truth = self.climatology[pick[:2]]
        spread = self.climatology.std(0)
        self.backgrounds = [t + spread * 0.5 * torch.randn((self.members, *t.shape), generator=gen, dtype=torch.float64)
                            for t in truth]
        clean = self.operator(truth)
        self.values = clean + self.operator.std * torch.randn(clean.shape, generator=gen, dtype=torch.float64)

    def fail(self, check: str, detail: str) -> AssertionError:
        return AssertionError(f"check_assimilator: method '{self.name}' failed '{check}': {detail}")

    def context(self) -> Context:
        return Context(model=self.model, operator=self.operator, climatology=self.climatology,
                       members=self.members, settings={"members": self.members},
                       cache_dir=self.cache, generator=torch.Generator().manual_seed(self.seed),
                       method_seed=self.seed)

    def method(self) -> Assimilator:
        """A fresh, prepared instance; its Context is kept in ``self.ctx``."""
        try:
            method = self.factory(**self.options)
        except Exception as exc:  # noqa: BLE001 - report any failure as a contract failure
            raise self.fail("construct", f"{type(exc).__name__}: {exc}") from exc
        self.ctx = self.context()
        try:
            method.prepare(self.ctx)
        except UsageError as exc:
            raise _Refusal(f"check_assimilator: method '{self.name}' refused: {exc} (model '{self.model.name}', "
                           f"obs '{self.operator.spec}'); pass refuses='<words of the message>' if this setup "
                           "is meant to be refused", str(exc)) from exc
        except Exception as exc:  # noqa: BLE001
            raise self.fail("prepare", f"{type(exc).__name__}: {exc}") from exc
        return method

    def analyse(self, method, background, obs, operator, check="assimilate") -> torch.Tensor:
        b0 = background.clone()
        values0 = obs.values.clone()
        try:
            out = method.assimilate(background, obs, operator)
        except Exception as exc:  # noqa: BLE001
            raise self.fail(check, f"raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(out, torch.Tensor):
            raise self.fail("shape", f"returned {type(out).__name__}, not a torch.Tensor")
        if out.shape != background.shape:
            raise self.fail("shape", f"returned shape {tuple(out.shape)}, expected {tuple(background.shape)}")
        if out.dtype != background.dtype:
            raise self.fail("dtype", f"returned {out.dtype} for a {background.dtype} background")
        if not torch.isfinite(out).all():
            raise self.fail("finite", f"returned {int((~torch.isfinite(out)).sum())} non-finite values")
        if not torch.equal(background, b0) or not torch.equal(obs.values, values0):
            raise self.fail("inputs untouched", "assimilate modified its background or observations in place")
        return out.detach()

    def cycle(self, method, k: int, obs: Observations, check: str = "assimilate"):
        """What the harness hands a method: only the used values, and the operator cut to them."""
        used = obs.used
        return self.analyse(method, self.backgrounds[k].clone(), obs.select(used), self.operator.subset(used), check)

    def flagged(self, garbage: float) -> Observations:
        values = self.values[0].clone()
        n = values.shape[0]
        qc = torch.zeros(n, dtype=torch.int8)
        qc[1::3] = QC_BACKGROUND  # finite values that failed a check
        values[1::3] = garbage
        values[2::5] = float("nan")  # missing values
        return Observations.from_values(values, self.operator.std, qc)


def check_assimilator(
    factory: Callable[..., Assimilator],
    model: Any = "lorenz96",
    *,
    obs: str = "every:2",
    members: int | None = None,
    options: dict[str, Any] | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
    registry=None,
    refuses: str | None = None,
) -> dict[str, Any]:
    """Run the contract checks on ``factory`` (an Assimilator subclass, or any callable taking
    ``**options`` and returning one) on ``model`` (a registered name or a Model instance).

    ``members`` defaults to the method's ``preferred_members``, else 10; ``obs`` is an ``--obs``
    spec. Returns {"method", "model", "members", "n_obs", "checks", "seconds"}.

    ``refuses``: the setup is meant to be refused. ``prepare`` must raise a one-line UsageError
    containing this text; the report then holds "refused" (the message) and checks ["refusal"].
    Without it, a refusal raises an AssertionError starting "check_assimilator: method 'x' refused:".
    """
    t0 = time.perf_counter()
    c = _Checker(factory, model, obs, members, options, seed, cache_dir, registry)
    std = c.operator.std
    checks = []

    # A refusal in prepare: expected (checked, reported) or not (an AssertionError saying so).
    try:
        a = c.method()
    except _Refusal as refusal:
        if refuses is None:
            raise
        if len(refusal.reason.strip().splitlines()) != 1:
            raise c.fail("refusal", f"the UsageError from prepare must be one line, got {refusal.reason!r}") from refusal
        if refuses not in refusal.reason:
            raise c.fail("refusal", f"refused with '{refusal.reason}', which does not contain '{refuses}'") from refusal
        return {"method": c.name, "model": c.model.name, "members": c.members, "n_obs": c.operator.n_obs,
                "checks": ["refusal"], "refused": refusal.reason, "seconds": time.perf_counter() - t0}
    if refuses is not None:
        raise c.fail("refusal", f"expected prepare to refuse this setup ('{refuses}') but it accepted it "
                     f"(model '{c.model.name}', obs '{c.operator.spec}')")

    # Shapes, dtype, finiteness and untouched inputs, on the full observation set.
    first = c.cycle(a, 0, Observations.from_values(c.values[0], std))
    checks += ["shape", "dtype", "finite", "inputs untouched"]
    diag = a.diagnostics()
    if not isinstance(diag, dict) or not all(isinstance(v, (int, float)) for v in diag.values()):
        raise c.fail("diagnostics", f"diagnostics() must return a dict of numbers, got {diag!r}")
    checks.append("diagnostics")

    # Determinism: a fresh instance with the same Context seed gives the same analysis.
    again = c.cycle(c.method(), 0, Observations.from_values(c.values[0], std))
    if not torch.equal(first, again):
        raise c.fail("determinism", f"two runs with the same seed differ by {float((first - again).abs().max()):.3g}")
    checks.append("determinism")

    # QC: flagged values are never used, whatever they hold.
    qc_check = "QC-flagged observations unused"
    x1 = c.cycle(c.method(), 0, c.flagged(1e6), qc_check)
    x2 = c.cycle(c.method(), 0, c.flagged(-3.0), qc_check)
    if not torch.equal(x1, x2):
        raise c.fail(qc_check, f"changing flagged values changed the analysis by {float((x1 - x2).abs().max()):.3g}")
    # ... and the filtered set equals one built directly from the used values alone.
    obs = c.flagged(0.0)
    used = obs.used
    op_used = _rebuild(c.operator, used)
    fresh = Observations.from_values(c.values[0][used].clone(), std[used].clone())
    x3 = c.analyse(c.method(), c.backgrounds[0].clone(), fresh, op_used, qc_check)
    if not torch.allclose(x1, x3, rtol=1e-9, atol=1e-9):
        raise c.fail(qc_check, f"the harness-filtered set and the same values built directly give analyses "
                     f"differing by {float((x1 - x3).abs().max()):.3g}")
    checks.append(qc_check)

    # state_dict round trip: resume after one analysis, as the harness does after a kill.
    a = c.method()
    c.cycle(a, 0, Observations.from_values(c.values[0], std))
    try:
        state = pickle.loads(pickle.dumps(a.state_dict()))
    except Exception as exc:  # noqa: BLE001
        raise c.fail("state_dict", f"state_dict() is not picklable: {type(exc).__name__}: {exc}") from exc
    rng = c.ctx.generator.get_state()
    expected = c.cycle(a, 1, Observations.from_values(c.values[1], std))
    b = c.method()
    c.ctx.generator.set_state(rng)  # after prepare, as the harness does on --resume
    try:
        b.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001
        raise c.fail("state_dict", f"load_state_dict raised {type(exc).__name__}: {exc}") from exc
    resumed = c.cycle(b, 1, Observations.from_values(c.values[1], std))
    if not torch.equal(expected, resumed):
        raise c.fail("state_dict", f"a restored method's next analysis differs by {float((expected - resumed).abs().max()):.3g}")
    checks.append("state_dict")

    return {"method": c.name, "model": c.model.name, "members": c.members, "n_obs": c.operator.n_obs,
            "checks": checks, "seconds": time.perf_counter() - t0}


def _rebuild(op, used: torch.Tensor):
    """The operator for the used rows only, built afresh rather than through ``subset``."""
    from .observations import ArctanOperator, SparseLinearOperator

    if type(op) is SparseLinearOperator:
        return SparseLinearOperator(op.state_shape, op.index[used].clone(), op.weight[used].clone(), op.std[used].clone(),
                                    op.locations[used].clone(), op.channels[used].clone(), op.spec)
    if type(op) is ArctanOperator:
        return ArctanOperator(_rebuild(op.inner, used), op.mean[used].clone(), op.scale[used].clone(), op.std[used].clone(), op.spec)
    return op.subset(used)  # an operator kind this module does not know
