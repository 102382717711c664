"""The Assimilator contract, the Context handed to it, and what the harness expects back."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from .options import resolve

if TYPE_CHECKING:  # pragma: no cover
    from .models.base import Model
    from .observations import ObservationOperator, Observations


@dataclass
class Context:
    """Everything a method may use in ``prepare``; fixed for the whole experiment."""

    model: "Model"
    #: The experiment's observation network, before QC (same locations every cycle).
    operator: "ObservationOperator"
    #: States from a long model run, independent of the experiment's truth.
    climatology: torch.Tensor
    members: int
    #: Experiment settings (cycles, burn_in, obs spec, options, members, train_steps...),
    #: read-only by convention. Never the experiment's seed nor its truth or observations
    #: files: nothing here reproduces the truth or the observation noise.
    settings: dict[str, Any] = field(default_factory=dict)
    cache_dir: Path = Path(".cache")
    #: The method's own random stream; every random draw of a method must come from it.
    generator: torch.Generator = field(default_factory=torch.Generator)
    device: torch.device = torch.device("cpu")
    progress: bool = False
    #: An integer seed for the method's own use (e.g. a library that wants an int), drawn from
    #: a stream of its own: it differs between experiment seeds but does not reveal them.
    method_seed: int = 0


class Assimilator(abc.ABC):
    """One DA method. Subclasses set ``name``, ``description`` and ``defaults``.

    ``assimilate`` receives only observations that passed quality control, with the operator
    restricted to them, and returns the analysis ensemble with the background's shape and dtype.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Options (``--set key=value``) with defaults; a value's type is its default's type.
    defaults: ClassVar[dict[str, Any]] = {}
    #: Ensemble size used when the user gives no ``--members`` (None: the harness default).
    preferred_members: ClassVar[int | None] = None
    #: Device types (``--device``) the method computes on; None: any, because it places its
    #: work on ``Context.device`` (see interfaces/device.py). ``prepare`` refuses the others.
    devices: ClassVar[tuple[str, ...] | None] = ("cpu",)
    #: Defaults measured on one testbed, used over ``defaults`` when the method runs on that
    #: model (``{"sw": {"zeta": 3.0}}``). Precedence: ``defaults`` < these < a suite's options <
    #: ``--set``. Record only measured values, each model's with its source below.
    model_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Where each model's values in ``model_defaults`` were measured (file, seeds, setup).
    model_defaults_source: ClassVar[dict[str, str]] = {}

    @classmethod
    def defaults_for(cls, model: str, given: dict[str, Any]) -> dict[str, Any]:
        """The ``model_defaults`` that apply on ``model`` when the caller gave ``given`` (the
        options set explicitly). A method whose tuned value holds only with another option's
        default (3D-Var's B scale, tuned for one B source) overrides this to drop it."""
        return dict(cls.model_defaults.get(model, {}))

    def __init__(self, **options: Any):
        self.options = resolve(self.defaults, options, f"method '{self.name}'")
        self.context: Context | None = None
        #: Seconds that training this method's learned state took, as recorded when it was
        #: trained (so a method that loads a cached checkpoint still reports the real cost);
        #: None for methods with nothing to train. Set by ``prepare``.
        self.train_seconds: float | None = None

    def prepare(self, context: Context) -> None:
        """Once per experiment: estimate B, train or load a model, and so on."""
        if self.devices is not None and context.device.type not in self.devices:
            from .errors import UsageError

            raise UsageError(f"method '{self.name}' cannot run on --device {context.device}; "
                             f"it runs on: {', '.join(self.devices)}")
        self.context = context

    @abc.abstractmethod
    def assimilate(
        self,
        background: torch.Tensor,
        observations: "Observations",
        operator: "ObservationOperator",
    ) -> torch.Tensor:
        """Return the analysis ensemble, shaped like ``background`` (members, *state_shape)."""

    def train(self, context: Context) -> dict[str, Any]:
        """Train (or retrain) what ``prepare`` would otherwise load from the cache, and return a
        summary (losses, seconds, checkpoint path). ``da-harness train`` calls this; methods with
        nothing to train keep this default."""
        from .errors import UsageError

        raise UsageError(f"method '{self.name}' has nothing to train")

    def diagnostics(self) -> dict[str, float]:
        """Scalars about the last analysis (iterations, final cost...), recorded per cycle."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State that changes between cycles (for resumable runs); picklable."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
