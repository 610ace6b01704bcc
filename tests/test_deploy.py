"""deploy/: every manifest validated offline against the vendored KubeRay CRD schemas and Kubernetes'
own OpenAPI schemas (strict: unknown fields are errors), and the entrypoints against folioscan's CLI."""
import copy
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("deploy_validate", os.path.join(ROOT, "deploy", "validate.py"))
validate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(validate)

MANIFESTS = validate.manifests()


def test_the_manifests_are_all_there():
    names = {os.path.basename(p) for p in MANIFESTS}
    assert {"rayjob.yaml", "raycronjob.yaml", "cronjob.yaml", "rayjob-partitioned.yaml"} <= names
    kinds = sorted(d["kind"] for p in MANIFESTS for d in validate.documents(p))
    assert kinds == ["CronJob", "RayCronJob", "RayJob", "RayJob", "RayJob", "RayJob", "Role", "RoleBinding", "ServiceAccount"]


@pytest.mark.parametrize("path", MANIFESTS, ids=os.path.basename)
def test_every_manifest_is_valid(path):
    for obj in validate.documents(path):
        assert validate.validate_object(obj) == [], f"{path}: {obj['kind']}"


def test_the_scheduled_run_is_the_one_off_run():
    """raycronjob.yaml repeats rayjob.yaml's spec (YAML has no include): they must not drift apart."""
    [job] = validate.documents(os.path.join(ROOT, "deploy", "rayjob.yaml"))
    [cron] = validate.documents(os.path.join(ROOT, "deploy", "raycronjob.yaml"))
    assert cron["spec"]["jobTemplate"] == job["spec"]
    groups = {g["groupName"]: g for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu-ocr", "gpu-vlm"}
    gpu = groups["gpu-vlm"]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == gpu["requests"]["nvidia.com/gpu"] == "1"
    cronjob = next(d for d in validate.documents(os.path.join(ROOT, "deploy", "cronjob.yaml")) if d["kind"] == "CronJob")
    script = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert f"rayjob {job['metadata']['name']}" in script and cronjob["spec"]["concurrencyPolicy"] == "Forbid"


@pytest.mark.parametrize("breakage, expected", [
    (lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(replica=3), "'replica' was unexpected"),
    (lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]
     ["requests"].update(memory="12 GB"), "does not match"),
    (lambda j: j["spec"].update(backoffLimit="2"), "is not of type 'integer'"),
    (lambda j: j["spec"].update(entrypoint="folioscan run a b --shards 3"), "not a valid folioscan command line"),
    (lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0].update(imagePullPolicy=3),
     "Kubernetes 1.29"),
    (lambda j: j["metadata"].update(name="folioscan_ingest"), "not a DNS label"),
])
def test_a_broken_manifest_is_caught(breakage, expected):
    [job] = validate.documents(os.path.join(ROOT, "deploy", "rayjob.yaml"))
    broken = copy.deepcopy(job)
    breakage(broken)
    errors = validate.validate_object(broken)
    assert any(expected in e for e in errors), errors


def test_a_broken_kubernetes_object_is_caught():
    cronjob = next(d for d in validate.documents(os.path.join(ROOT, "deploy", "cronjob.yaml")) if d["kind"] == "CronJob")
    broken = copy.deepcopy(cronjob)
    broken["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartpolicy"] = "Never"
    errors = validate.validate_object(broken)
    assert len(errors) == len(validate.KUBERNETES_VERSIONS) and all("'restartpolicy' was unexpected" in e for e in errors)


def test_the_drivers_grace_period_fits_inside_the_pods_and_ray_job_stops():
    """A SIGTERM gives the books in flight --grace-s to be committed: the head pod's
    terminationGracePeriodSeconds and Ray's job-stop wait (SIGKILL after RAY_JOB_STOP_WAIT_TIME_S,
    3 s by default) must both leave it that long."""
    import shlex

    from folioscan.pipeline.cli import build_parser, config_from_args

    [job] = validate.documents(os.path.join(ROOT, "deploy", "rayjob.yaml"))
    args = build_parser().parse_args(shlex.split(job["spec"]["entrypoint"])[1:])
    grace = config_from_args(args, environ={}).grace_s
    cluster = job["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in head["containers"][0].get("env", [])}
    assert grace < head.get("terminationGracePeriodSeconds", 30) and grace < int(env.get("RAY_JOB_STOP_WAIT_TIME_S", 3))
    for group in cluster["workerGroupSpecs"]:  # the OCR actors live as long as the driver may wait on them
        assert grace < group["template"]["spec"].get("terminationGracePeriodSeconds", 30)


def test_the_partitioned_drivers_are_the_one_off_run_split_in_shares():
    """rayjob-partitioned.yaml: N drivers on one cluster, the one-off run's command line plus
    `--partition K/N --steal`, K = 0..N-1 once each, all of the same N."""
    import shlex

    from folioscan.pipeline.cli import build_parser, config_from_args
    from folioscan.pipeline.partition import parse_partition

    [job] = validate.documents(os.path.join(ROOT, "deploy", "rayjob.yaml"))
    drivers = validate.documents(os.path.join(ROOT, "deploy", "rayjob-partitioned.yaml"))
    base = shlex.split(job["spec"]["entrypoint"])
    shares = []
    for d in drivers:
        words = shlex.split(d["spec"]["entrypoint"])
        assert words[:len(base)] == base and words[len(base)] == "--partition" and words[len(base) + 2:] == ["--steal"]
        cfg = config_from_args(build_parser().parse_args(words[1:]), environ={})
        shares.append(parse_partition(cfg.partition))
        assert cfg.steal and d["spec"]["clusterSelector"] == drivers[0]["spec"]["clusterSelector"]
        assert "rayClusterSpec" not in d["spec"]  # one shared cluster
    n = len(drivers)
    assert sorted(shares) == [(k, n) for k in range(n)]
    assert len({d["metadata"]["name"] for d in drivers}) == n
