"""Engine registry: options model with a `kind` field, engines built lazily by name."""
from folioscan.workers.engines.registry import EngineOptions, build_engine, engine_names

__all__ = ["EngineOptions", "build_engine", "engine_names"]
