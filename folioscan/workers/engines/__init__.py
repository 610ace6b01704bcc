"""Engine registry: options model with a `kind` field, engines built lazily by name.

Nothing is imported eagerly here, so an engine's own modules load without the registry's
pydantic (bench/vlm_throughput.py runs in a virtualenv without it)."""

__all__ = ["EngineOptions", "build_engine", "engine_names"]


def __getattr__(name):
    if name in __all__:
        from folioscan.workers.engines import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
