"""Find discoverer classes through the ``mlsvc_discover.discoverers`` entry-point group."""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points

from mlsvc_discover._errors import ConfigError
from mlsvc_discover.discoverers.base import Discoverer, DiscovererConfig

GROUP = "mlsvc_discover.discoverers"

__all__ = ["GROUP", "available", "build", "discoverer_class"]


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available() -> list[str]:
    """Names of every registered discoverer type."""
    return sorted(_entry_points())


def discoverer_class(kind: str, *, key: str = "type") -> type[Discoverer[DiscovererConfig]]:
    """The class registered as ``kind``; a ConfigError naming the choices when there is none.

    Loading is lazy so that a config using only MLflow never imports botocore.
    """
    ep = _entry_points().get(kind)
    if ep is None:
        choices = ", ".join(available()) or "none installed"
        raise ConfigError(f"unknown discoverer type {kind!r}; choose one of: {choices}", key=key)
    cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, Discoverer)):
        raise ConfigError(f"entry point {ep.value!r} for {kind!r} is not a Discoverer subclass", key=key)
    return cls


def build(config: DiscovererConfig) -> Discoverer[DiscovererConfig]:
    """Instantiate the discoverer for one validated config."""
    return discoverer_class(config.type)(config)
