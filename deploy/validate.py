"""Validate deploy/*.yaml offline: KubeRay objects against the vendored CRD schemas (deploy/schemas/),
Kubernetes objects and every embedded pod template against Kubernetes' own OpenAPI schemas (shipped
offline by the `kubernetes-validate` package), and each `folioscan` command line against the CLI.

    python deploy/validate.py [FILE ...]        # exit 0 when every document is valid

Strict, as `kubectl apply` is by default (server-side field validation): a field the schema does
not know is an error, not silently pruned.
"""
from __future__ import annotations

import copy
import glob
import gzip
import json
import contextlib
import io
import os
import re
import shlex
import sys
from functools import lru_cache
from typing import Iterator

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
KUBERNETES_VERSIONS = ("1.29", "1.37")  # oldest and newest the manifests are meant for
# names KubeRay turns into RayCluster and pod names (ray-operator/controllers/ray/utils/constant.go)
MAX_NAME = {"RayJob": 47, "RayCronJob": 47}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CRDS = {("ray.io/v1", "RayJob"): "ray.io_rayjobs.v1.json.gz", ("ray.io/v1", "RayCronJob"): "ray.io_raycronjobs.v1.json.gz"}


def _strict(schema):
    """Unknown fields become errors, except where the schema keeps them on purpose."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@lru_cache(maxsize=None)
def crd_validator(api_version: str, kind: str):
    with gzip.open(os.path.join(HERE, "schemas", CRDS[(api_version, kind)])) as f:
        vendored = json.load(f)
    return jsonschema.Draft7Validator(_strict(vendored["openAPIV3Schema"]))


def _kubernetes(obj: dict) -> list[str]:
    import kubernetes_validate

    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"Kubernetes {version}: {'.'.join(map(str, e.path))}: {e.message}")
    return errors


def _pod_templates(spec: dict) -> Iterator[tuple[str, dict]]:
    cluster = spec.get("rayClusterSpec") or {}
    if "template" in cluster.get("headGroupSpec", {}):
        yield "headGroupSpec", cluster["headGroupSpec"]["template"]
    for group in cluster.get("workerGroupSpecs", []):
        yield f"workerGroupSpecs[{group.get('groupName')}]", group["template"]


def _ray_job_specs(obj: dict) -> Iterator[dict]:
    if obj["kind"] == "RayJob":
        yield obj["spec"]
    elif obj["kind"] == "RayCronJob":
        yield obj["spec"]["jobTemplate"]


def _entrypoint(spec: dict) -> list[str]:
    from folioscan.pipeline.cli import build_parser

    words = shlex.split(spec.get("entrypoint", ""))
    if not words or words[0] != "folioscan":
        return [f"entrypoint does not run folioscan: {spec.get('entrypoint')!r}"]
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            build_parser().parse_args(words[1:])
    except SystemExit:
        return [f"entrypoint is not a valid folioscan command line: {spec['entrypoint']!r}"]
    return []


def validate_object(obj: dict) -> list[str]:
    """Every problem found in one manifest document (empty when it is valid)."""
    if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
        return ["not a Kubernetes object (apiVersion and kind are required)"]
    key = (obj["apiVersion"], obj["kind"])
    name = (obj.get("metadata") or {}).get("name", "")
    naming = [] if DNS_LABEL.match(name) and len(name) <= MAX_NAME.get(obj["kind"], 63) else \
        [f"metadata.name {name!r}: not a DNS label of at most {MAX_NAME.get(obj['kind'], 63)} characters"]
    if key not in CRDS:
        return naming + _kubernetes(obj)
    errors = naming + [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                       for e in crd_validator(*key).iter_errors(obj)]
    # the CRD says only "object" for metadata: check it as Kubernetes checks any object's metadata
    errors += [f"metadata: {e}" for e in _kubernetes({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata", {})})]
    for spec in _ray_job_specs(obj):
        errors += _entrypoint(spec)
        for where, template in _pod_templates(spec):
            pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": copy.deepcopy(template)}
            errors += [f"{where}.template: {e}" for e in _kubernetes(pod)]
    return errors


def documents(path: str) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def manifests() -> list[str]:
    return sorted(glob.glob(os.path.join(HERE, "*.yaml")))


def main(paths: list[str]) -> int:
    bad = 0
    for path in paths or manifests():
        for i, obj in enumerate(documents(path)):
            errors = validate_object(obj)
            name = f"{os.path.relpath(path)}[{i}] {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            print(f"{'ok ' if not errors else 'BAD'} {name}")
            for e in errors:
                print(f"    {e}")
            bad += bool(errors)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(HERE))
    sys.exit(main(sys.argv[1:]))
