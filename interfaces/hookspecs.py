"""The one plugin hook. Every plugin, built-in or third-party, implements it.

A plugin is a module (or object) listed in the ``da_harness.plugins`` entry-point group::

    from interfaces.hookspecs import hookimpl

    @hookimpl
    def da_harness_register(registry):
        registry.add_assimilator(MyMethod)   # a subclass of interfaces.assimilator.Assimilator
"""

import pluggy

PROJECT = "da_harness"
ENTRY_POINT_GROUP = "da_harness.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def da_harness_register(registry):
    """Add named assimilators (and, optionally, models and observation kinds) to ``registry``.

    Called once at start-up. ``registry`` offers ``add_assimilator``, ``add_model`` and
    ``add_observation_kind``; see interfaces/registry.py.
    """
