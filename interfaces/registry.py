"""The plugin manager: loads every plugin from the entry-point group, isolates failures, and
looks methods, models and observation kinds up by name."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable

import pluggy

from . import hookspecs
from .errors import PluginError, UsageError, unknown_name


@dataclass
class Entry:
    """A registered name. ``target`` is the factory itself or a lazy 'module:attribute' string,
    imported on first use so that listing names never pays for heavy imports."""

    name: str
    target: Any
    description: str
    plugin: str

    @property
    def factory(self) -> Any:
        if isinstance(self.target, str):
            module_name, _, attr = self.target.partition(":")
            try:
                obj = importlib.import_module(module_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the harness down
                raise PluginError(f"plugin '{self.plugin}' could not load '{self.name}' from {self.target}: {_one_line(exc)}") from exc
            self.target = obj
        return self.target


@dataclass
class Registry:
    """What the plugins registered, and which plugins were skipped and why."""

    assimilators: dict[str, Entry] = field(default_factory=dict)
    models: dict[str, Entry] = field(default_factory=dict)
    observation_kinds: dict[str, Entry] = field(default_factory=dict)
    #: (plugin name, one-line reason) for every plugin or registration that was skipped.
    problems: list[tuple[str, str]] = field(default_factory=list)

    def _table(self, kind: str) -> dict[str, Entry]:
        return {"method": self.assimilators, "model": self.models, "observation kind": self.observation_kinds}[kind]

    def lookup(self, kind: str, name: str) -> Entry:
        table = self._table(kind)
        if name not in table:
            raise unknown_name(kind, name, table)
        return table[name]

    def assimilator(self, name: str) -> Entry:
        return self.lookup("method", name)

    def model(self, name: str) -> Entry:
        return self.lookup("model", name)

    def kinds(self) -> dict[str, tuple[Callable, str]]:
        """Observation kinds for build_operator; lazy builders are imported only when called."""
        return {n: (lambda arg, model, gen, e=e: e.factory(arg, model, gen), e.description)
                for n, e in self.observation_kinds.items()}


class PluginRegistrar:
    """The object a plugin's hook receives: it stamps the plugin's name on what it adds."""

    def __init__(self, registry: Registry, plugin: str):
        self._registry = registry
        self.plugin = plugin
        self.added: list[tuple[dict, str]] = []

    def _add(self, kind: str, name: str, factory: Any, description: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{kind} registered without a name")
        table = self._registry._table(kind)
        if name in table:
            other = table[name].plugin
            self._registry.problems.append(
                (self.plugin, f"{kind} '{name}' rejected: already registered by plugin '{other}'")
            )
            return
        table[name] = Entry(name, factory, description, self.plugin)
        self.added.append((table, name))

    def add_assimilator(self, factory: Any, name: str | None = None, description: str | None = None) -> None:
        """Register an Assimilator subclass (or a factory with ``name``/``description``)."""
        from .assimilator import Assimilator

        if isinstance(factory, str) and (":" not in factory or not name):
            raise ValueError(f"lazy factory '{factory}' needs the form 'module:attribute' and a name")
        if isinstance(factory, type) and not issubclass(factory, Assimilator):
            raise TypeError(f"{factory.__name__} is not a subclass of interfaces.assimilator.Assimilator")
        self._add("method", name or getattr(factory, "name", ""), factory,
                  description or getattr(factory, "description", "") or "")

    def add_model(self, factory: Any, name: str | None = None, description: str | None = None) -> None:
        """Register a Model subclass, or a lazy 'module:Class' string with ``name``."""
        self._add("model", name or getattr(factory, "name", ""), factory,
                  description or getattr(factory, "description", "") or "")

    def add_observation_kind(self, name: str, builder: Callable, description: str = "") -> None:
        """``builder(arg, model, generator) -> interfaces.observations.PointSet`` (or 'module:func')."""
        self._add("observation kind", name, builder, description)

    def rollback(self) -> None:
        for table, name in self.added:
            table.pop(name, None)
        self.added.clear()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    seen, out = set(), []
    for ep in metadata.entry_points(group=group):
        if (ep.name, ep.value) not in seen:
            seen.add((ep.name, ep.value))
            out.append(ep)
    return out


def build_registry(extra_plugins: Iterable[tuple[str, Any]] = (), group: str = hookspecs.ENTRY_POINT_GROUP) -> Registry:
    """Load every plugin of the entry-point group (plus ``extra_plugins``: (name, module)).

    A plugin that fails to import or whose hook raises is recorded in ``problems`` and skipped;
    whatever it had registered before failing is removed.
    """
    registry = Registry()
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    candidates: list[tuple[str, Any]] = []
    for ep in _entry_points(group):
        try:
            candidates.append((ep.name, ep.load()))
        except BaseException as exc:  # noqa: BLE001 - any failure of third-party code is isolated
            if isinstance(exc, KeyboardInterrupt):
                raise
            registry.problems.append((ep.name, f"failed to import: {_one_line(exc)}"))
    candidates.extend(extra_plugins)

    for name, plugin in candidates:
        try:
            manager.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001
            registry.problems.append((name, f"failed to register: {_one_line(exc)}"))
            continue
        for impl in manager.hook.da_harness_register.get_hookimpls():
            if impl.plugin_name != name:
                continue
            registrar = PluginRegistrar(registry, name)
            try:
                impl.function(registry=registrar)
            except Exception as exc:  # noqa: BLE001
                registrar.rollback()
                registry.problems.append((name, f"failed in da_harness_register: {_one_line(exc)}"))
    return registry


_DEFAULT: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, built on first use."""
    global _DEFAULT
    if _DEFAULT is None or reload:
        _DEFAULT = build_registry()
    return _DEFAULT


def report_problems(registry: Registry, stream=None) -> None:
    """One warning line per skipped plugin or rejected registration."""
    stream = stream or sys.stderr
    for plugin, reason in registry.problems:
        print(f"da-harness: warning: plugin '{plugin}' skipped: {reason}", file=stream)


def model_defaults(registry: Registry, name: str, model: str | None, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options method ``name`` takes by default on ``model`` beyond its class ``defaults``
    (its ``model_defaults`` entry, as narrowed by ``defaults_for`` for the ``given`` options).
    A table naming an undeclared option, a value of another type than the declared default's,
    or a value without a source is the plugin's error."""
    entry = registry.assimilator(name)
    factory = entry.factory
    if model is None or not hasattr(factory, "defaults_for"):
        return {}  # plain factories declare no per-model table
    values = factory.defaults_for(model, dict(given or {}))
    declared = getattr(factory, "defaults", {})
    culprit = f"method '{name}' (plugin '{entry.plugin}')"
    for key, value in values.items():
        if key not in declared:
            raise PluginError(f"{culprit} has a default for unknown option '{key}' on model '{model}'; "
                              f"valid options: {', '.join(sorted(declared)) or '(none)'}")
        default = declared[key]
        if default is None:
            continue
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            values[key] = value = float(value)  # 3 and 3.0 must name the same job
        if type(value) is not type(default):
            raise PluginError(f"{culprit} has a {type(value).__name__} default for option '{key}' on model "
                              f"'{model}', but the option is {type(default).__name__}")
    if values and not getattr(factory, "model_defaults_source", {}).get(model):
        raise PluginError(f"{culprit} has defaults for model '{model}' without a model_defaults_source entry")
    return values


def model_default_table(registry: Registry, name: str) -> dict[str, Any]:
    """For listings: {model: {"options": {...}, "source": "..."}} for every model on which method
    ``name`` has its own defaults, or {"error": "..."} when its table breaks the contract."""
    try:
        factory = registry.assimilator(name).factory
        return {model: {"options": model_defaults(registry, name, model),
                        "source": getattr(factory, "model_defaults_source", {}).get(model, "")}
                for model in sorted(getattr(factory, "model_defaults", None) or {})}
    except PluginError as exc:
        return {"error": str(exc)}


def effective_options(registry: Registry, name: str, model: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` over the method's defaults for ``model`` (class defaults < model defaults <
    given options), as the method will receive them. Only keys the method's table holds are
    added, so a job's options stay short and its hash changes when that table does."""
    return {**model_defaults(registry, name, model, options), **options}


def instantiate_method(registry: Registry, name: str, options: dict[str, Any], model: str | None = None):
    """Build method ``name`` with ``options`` over its defaults for ``model`` (None: the class
    defaults only)."""
    entry = registry.assimilator(name)
    try:
        return entry.factory(**effective_options(registry, name, model, options))
    except UsageError:
        raise
    except TypeError as exc:
        raise UsageError(f"method '{name}' (plugin '{entry.plugin}') rejected its options: {exc}") from exc
