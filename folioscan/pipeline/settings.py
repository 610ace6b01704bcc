"""Where a job's settings come from, lowest precedence first:

1. the defaults of `JobConfig` (`config.py`);
2. a config file (`--config job.json|.yaml|.yml|.toml`), any field at any depth;
3. the environment: `FOLIOSCAN_<FIELD>` for every top-level scalar field of `JobConfig`
   (e.g. `FOLIOSCAN_SHARD_DOCS=8`, `FOLIOSCAN_EXECUTOR=local`, `FOLIOSCAN_RAY_ADDRESS=auto`),
   and `FOLIOSCAN_ENGINE` for the engine kind;
4. the flags actually given on the command line (a flag left out never overrides anything);
   `--then ENGINE` and `--then-<engine flag>` (`--then-model DIR`) set `route.then` as `--engine`
   and its flags set `engine`.

Unknown fields at any depth are errors that list the valid names.
"""
from __future__ import annotations

import json
import typing
from typing import Any, Mapping

from pydantic import BaseModel, ValidationError

ENV_PREFIX = "FOLIOSCAN_"
NESTED = ("engine", "prep", "retry", "route")  # blocks set as a whole by file, per field by flags
NOT_FROM_ENV = ("source", "output", *NESTED)


class ConfigError(ValueError):
    """A configuration that cannot run; the message says what to change."""


def read_config_file(path: str) -> dict:
    with open(path, "rb") as f:
        raw = f.read()
    lower = path.lower()
    try:
        if lower.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(raw.decode()) or {}
        elif lower.endswith(".toml"):
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib

            data = tomllib.loads(raw.decode())
        else:
            data = json.loads(raw.decode())
    except Exception as e:  # each parser has its own error type; all mean the same here
        raise ConfigError(f"{path}: cannot parse: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings, not {type(data).__name__}")
    return data


def env_settings(environ: Mapping[str, str], model: type[BaseModel]) -> dict:
    out: dict[str, Any] = {}
    for name in model.model_fields:
        if name not in NOT_FROM_ENV and (value := environ.get(ENV_PREFIX + name.upper())) is not None:
            out[name] = value
    if kind := environ.get(ENV_PREFIX + "ENGINE"):
        out["engine"] = {"kind": kind}
    return out


def merge(base: dict, override: dict) -> dict:
    """`override` wins field by field; nested blocks merge, except an engine of another kind replaces the block."""
    out = dict(base)
    for key, value in override.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if key in ("engine", "then") and value.get("kind", old.get("kind")) != old.get("kind", "tesseract"):
                out[key] = dict(value)
            else:
                out[key] = merge(old, value)
        else:
            out[key] = value
    return out


def build_config(model: type[BaseModel], file_settings: dict, environ: Mapping[str, str], flags: dict):
    settings = merge(merge(file_settings, env_settings(environ, model)), flags)
    if isinstance(settings.get("engine"), dict) and "kind" not in settings["engine"]:
        settings["engine"] = {"kind": model.model_fields["engine"].default_factory().kind, **settings["engine"]}
    then = (settings.get("route") or {}).get("then")
    if isinstance(then, dict) and "kind" not in then:
        raise ConfigError(f"route.then: {', '.join(sorted(then))} given without the second engine: --then ENGINE (route.then.kind)")
    try:
        return model(**settings)
    except ValidationError as e:
        raise ConfigError(explain(e, model)) from None


def explain(error: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for err in error.errors():
        loc = [str(p) for p in err["loc"]]
        where = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            valid = ", ".join(sorted(owner.model_fields)) if owner else "?"
            lines.append(f"{where}: unknown setting; valid ones here: {valid}")
        else:
            lines.append(f"{where}: {err['msg']}" + (f" (got {err['input']!r})" if not isinstance(err["input"], dict) else ""))
    return "; ".join(lines)


def _model_at(model, loc: list[str]):
    """The pydantic model a location inside `model` points into (a tagged union is followed by its tag)."""
    current = [model]
    for part in loc:
        if len(current) > 1:
            current = [m for m in current if part in _kinds(m)]
        elif part in current[0].model_fields:
            current = _models_in(current[0].model_fields[part].annotation)
        else:
            return None
        if not current:
            return None
    return current[0] if len(current) == 1 else None


def _models_in(annotation) -> list:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _kinds(m) -> tuple:
    field = m.model_fields.get("kind")
    return typing.get_args(field.annotation) if field else ()
