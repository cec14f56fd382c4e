"""The files in deploy/ parse, agree with each other and with the libraries they target.

Nothing here starts a cluster. The Kubernetes manifests are checked against the DaskCluster
schema and the make_cluster_spec output of dask-kubernetes and against the Kubernetes API
models; jobqueue.yaml against dask-jobqueue's own keys and job script; the sbatch script runs
with stub `dask`, `srun` and `recall-dask` commands.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml
from dask.utils import parse_bytes

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CLUSTER = DEPLOY / "kubernetes" / "dask-cluster.yaml"
JOB = DEPLOY / "kubernetes" / "recall-job.yaml"
PVC = DEPLOY / "kubernetes" / "shared-pvc.yaml"
HELM_VALUES = DEPLOY / "kubernetes" / "values.yaml"
JOBQUEUE = DEPLOY / "slurm" / "jobqueue.yaml"
SBATCH = DEPLOY / "slurm" / "recall.sbatch"
README = DEPLOY / "README.md"
YAML_FILES = sorted(DEPLOY.rglob("*.yaml"))


def load(path: Path) -> dict:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert len(docs) == 1, f"{path.name}: expected one YAML document, found {len(docs)}"
    assert isinstance(docs[0], dict), f"{path.name}: top level is not a mapping"
    return docs[0]


def pod_specs() -> dict[str, dict]:
    """The three pod templates that run recall-dask code."""
    cluster, job = load(CLUSTER), load(JOB)
    return {
        "scheduler": cluster["spec"]["scheduler"]["spec"],
        "worker": cluster["spec"]["worker"]["spec"],
        "client": job["spec"]["template"]["spec"],
    }


def all_containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


def container(pod: dict, name: str) -> dict:
    (found,) = [c for c in pod["containers"] if c["name"] == name]
    return found


def options(args: list[str]) -> dict[str, str | None]:
    """`--flag value` pairs of a command line (a flag followed by another flag gets None)."""
    parsed: dict[str, str | None] = {}
    for i, arg in enumerate(args):
        if arg.startswith("-"):
            following = args[i + 1] if i + 1 < len(args) else None
            parsed[arg] = None if following is None or following.startswith("-") else following
    return parsed


def documented_image() -> str:
    match = re.search(r"docker build -f deploy/docker/Dockerfile -t (\S+) \.", README.read_text())
    assert match, "deploy/README.md has no `docker build -f deploy/docker/Dockerfile -t IMAGE .`"
    return match.group(1)


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def unknown_keys(ours: dict, defaults: dict, path: str = "") -> list[str]:
    """Keys of ``ours`` missing from a defaults file; free-form mappings ({} there) not entered."""
    found = []
    for key, value in ours.items():
        if key not in defaults:
            found.append(f"{path}{key}")
        elif isinstance(value, dict) and isinstance(defaults[key], dict) and defaults[key]:
            found += unknown_keys(value, defaults[key], f"{path}{key}.")
    return found


# --- generic structure checkers -----------------------------------------------------------


def schema_errors(value, schema: dict, path: str = "") -> list[str]:
    """Where ``value`` breaks an OpenAPI v3 schema of a CRD: unknown fields (which the API
    server would silently prune), missing required fields and wrong scalar types."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, int | str) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected int or string, got {value!r}"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping, got {value!r}"]
        errors = [
            f"{path}.{key}: required" for key in schema.get("required", []) if key not in value
        ]
        properties, extra = schema.get("properties"), schema.get("additionalProperties")
        for key, item in value.items():
            if properties is not None and key in properties:
                errors += schema_errors(item, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, f"{path}.{key}")
            elif properties is not None:
                errors.append(f"{path}.{key}: unknown field")
        return errors
    if kind == "array":
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {value!r}"]
        items = schema.get("items", {})
        return [
            e for i, item in enumerate(value) for e in schema_errors(item, items, f"{path}[{i}]")
        ]
    scalar = {"string": str, "integer": int, "boolean": bool, "number": int | float}.get(kind)
    if scalar is not None and (
        not isinstance(value, scalar) or (kind != "boolean" and value is True)
    ):
        return [f"{path}: expected {kind}, got {value!r}"]
    return []


def model_errors(value, type_name: str, path: str = "") -> list[str]:
    """Where ``value`` breaks the Kubernetes API model ``type_name`` of the kubernetes client
    (``V1Job``, ``List[V1Container]``, ``Dict[str, str]``, ``str``, ...)."""
    from kubernetes.client import models

    if match := re.fullmatch(r"[Ll]ist\[(.+)\]", type_name):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {value!r}"]
        return [e for i, v in enumerate(value) for e in model_errors(v, match[1], f"{path}[{i}]")]
    if match := re.fullmatch(r"[Dd]ict[\[(]str, (.+)[\])]", type_name):
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping, got {value!r}"]
        return [e for k, v in value.items() for e in model_errors(v, match[1], f"{path}.{k}")]
    scalars = {"str": str, "int": int, "bool": bool, "float": int | float}
    if type_name in scalars:
        wrong = not isinstance(value, scalars[type_name]) or (type_name == "int" and value is True)
        return [f"{path}: expected {type_name}, got {value!r}"] if wrong else []
    if type_name == "object":  # int-or-string and free-form fields
        return []
    model = getattr(models, type_name)
    if not isinstance(value, dict):
        return [f"{path}: expected a {type_name} mapping, got {value!r}"]
    attribute = {key: attr for attr, key in model.attribute_map.items()}
    errors = []
    for key, item in value.items():
        if key not in attribute:
            errors.append(f"{path}.{key}: not a field of {type_name}")
        else:
            errors += model_errors(item, model.openapi_types[attribute[key]], f"{path}.{key}")
    return errors


def test_checkers_report_unknown_fields_and_wrong_types():
    """The two checkers find what they are meant to find (typo, number in args)."""
    pytest.importorskip("kubernetes.client")
    pod = {"containers": [{"name": "x", "args": ["dask", 4], "volumeMount": []}]}
    assert sorted(model_errors(pod, "V1PodSpec")) == [
        ".containers[0].args[1]: expected str, got 4",
        ".containers[0].volumeMount: not a field of V1Container",
    ]
    schema = {
        "type": "object",
        "required": ["replicas"],
        "properties": {"replicas": {"type": "integer"}, "spec": {"type": "object"}},
    }
    assert schema_errors({"replica": 2}, schema) == [
        ".replicas: required",
        ".replica: unknown field",
    ]
    assert schema_errors({"replicas": "2"}, schema) == [".replicas: expected integer, got '2'"]


# --- every file ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses_to_one_mapping(path):
    assert load(path)


def test_readme_mentions_every_deploy_file():
    text = README.read_text()
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and p != README] + [DOCKERIGNORE]
    missing = [str(p.relative_to(ROOT)) for p in files if str(p.relative_to(ROOT)) not in text]
    assert not missing, f"deploy/README.md does not mention {missing}"


def test_readme_dask_config_examples_use_real_keys():
    """The YAML blocks of the README (TLS, custom cluster spec) name existing dask config keys."""
    import distributed

    defaults = yaml.safe_load(Path(distributed.__file__).with_name("distributed.yaml").read_text())
    kubernetes = pytest.importorskip("dask_kubernetes")
    defaults.update(
        yaml.safe_load(Path(kubernetes.__file__).with_name("kubernetes.yaml").read_text())
    )

    text = README.read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    assert {next(iter(b)) for b in blocks} == {"distributed", "kubernetes"}
    for block in blocks:
        assert unknown_keys(block, defaults) == []
    tls = next(b for b in blocks if "distributed" in b)["distributed"]["comm"]["tls"]
    assert {"ca-file", "scheduler", "worker", "client"} <= set(tls)
    assert "tls://" in text and "distributed.comm.tls" in text


# --- Docker image -------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_python_311_both_extras_non_root_no_entrypoint():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = " && ".join(arg for op, arg in instructions if op == "RUN")
    match = re.search(r"pip install '\.\[([a-z,]+)\]'", runs)
    assert match, "the image does not pip install the package from the build context"
    extras = set(match.group(1).split(","))
    assert extras == {"slurm", "kubernetes"}
    declared = project()["optional-dependencies"]
    assert any(dep.startswith("dask-jobqueue") for dep in declared["slurm"])
    assert any(dep.startswith("dask-kubernetes") for dep in declared["kubernetes"])
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    # The operator passes "dask worker ..." as container args: an ENTRYPOINT would prefix it.
    assert not [op for op, _ in instructions if op == "ENTRYPOINT"]
    assert not re.search(r"\b(curl|wget)\b|^ADD\s+https?:", DOCKERFILE.read_text(), re.M)


def test_dockerignore_lets_through_exactly_what_the_dockerfile_copies():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", ".dockerignore should exclude everything first"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for op, arg in dockerfile_instructions():
        if op == "COPY":
            copied.update(source.rstrip("/") for source in shlex.split(arg)[:-1])
    assert copied == allowed
    assert all((ROOT / name).exists() for name in copied)


def test_documented_image_tag_is_the_package_version_everywhere():
    image = documented_image()
    assert image.rsplit(":", 1)[1] == project()["version"]
    assert f"-t {image} ." in DOCKERFILE.read_text()
    images = {c["image"] for pod in pod_specs().values() for c in all_containers(pod)}
    assert images == {image}


# --- Kubernetes ---------------------------------------------------------------------------


def crd_schema(kind_file: str) -> dict:
    pytest.importorskip("dask_kubernetes")
    import dask_kubernetes

    chart = Path(dask_kubernetes.__file__).parent / "operator/deployment/helm"
    crd = load(chart / "dask-kubernetes-operator/crds" / kind_file)
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


def test_dask_cluster_fits_the_operator_crd():
    manifest = load(CLUSTER)
    assert (manifest["apiVersion"], manifest["kind"]) == ("kubernetes.dask.org/v1", "DaskCluster")
    schema = crd_schema("daskcluster.yaml")
    assert schema_errors(manifest["spec"], schema["properties"]["spec"], "spec") == []


def missing_paths(expected, actual, path: str = "") -> list[str]:
    """Keys set in ``expected`` that ``actual`` lacks; lists of named items matched by name."""
    if isinstance(expected, list) and expected and isinstance(expected[0], dict):
        expected = {item["name"]: item for item in expected}
        actual = {item["name"]: item for item in actual} if isinstance(actual, list) else actual
    if not isinstance(expected, dict):
        return []
    if not isinstance(actual, dict):
        return [path]
    missing = []
    for key, value in expected.items():
        if value is None:
            continue
        if key in actual:
            missing += missing_paths(value, actual[key], f"{path}.{key}")
        else:
            missing.append(f"{path}.{key}")
    return missing


def test_dask_cluster_has_the_shape_make_cluster_spec_produces():
    pytest.importorskip("dask_kubernetes")
    from dask_kubernetes.operator import make_cluster_spec

    ours = load(CLUSTER)
    name = ours["metadata"]["name"]
    expected = make_cluster_spec(
        name=name,
        image=documented_image(),
        n_workers=ours["spec"]["worker"]["replicas"],
        worker_command="dask worker",
    )
    assert missing_paths(expected, ours) == []
    assert ours["spec"]["scheduler"]["service"] == expected["spec"]["scheduler"]["service"]
    for role in ("scheduler", "worker"):
        ours_c = container(ours["spec"][role]["spec"], role)
        expected_c = container(expected["spec"][role]["spec"], role)
        assert ours_c["ports"] == expected_c["ports"], role
        assert options(expected_c["args"]).items() <= options(ours_c["args"]).items(), role
    scheduler = container(ours["spec"]["scheduler"]["spec"], "scheduler")
    assert scheduler["args"][:2] == ["dask", "scheduler"]  # the newer spelling of dask-scheduler
    for probe in ("readinessProbe", "livenessProbe"):
        assert scheduler[probe]["httpGet"] == {"port": "http-dashboard", "path": "/health"}


def test_workers_run_dask_worker_within_their_container_limits():
    worker = container(pod_specs()["worker"], "worker")
    assert worker["args"][:2] == ["dask", "worker"]
    flags = options(worker["args"])
    assert flags["--name"] == "$(DASK_WORKER_NAME)"  # set by the operator
    limits = worker["resources"]["limits"]
    assert 1 <= int(flags["--nthreads"]) <= float(limits["cpu"])
    # Dask must spill and pause below the memory at which Kubernetes kills the pod.
    assert parse_bytes(flags["--memory-limit"]) < parse_bytes(limits["memory"])
    mounts = {m["mountPath"] for m in worker["volumeMounts"]}
    assert flags["--local-directory"] in mounts


def test_scheduler_service_exposes_8786_and_the_job_connects_to_it():
    cluster = load(CLUSTER)
    service = cluster["spec"]["scheduler"]["service"]
    comm = {p["name"]: p for p in service["ports"]}["tcp-comm"]
    assert comm["port"] == 8786
    scheduler_ports = container(cluster["spec"]["scheduler"]["spec"], "scheduler")["ports"]
    assert {"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"} in scheduler_ports
    assert service["selector"]["dask.org/cluster-name"] == cluster["metadata"]["name"]
    args = container(pod_specs()["client"], "recall")["args"]
    assert args[:2] == ["recall-dask", "run"]
    # The operator names the Service <cluster>-scheduler.
    assert options(args)["--scheduler"] == f"tcp://{cluster['metadata']['name']}-scheduler:8786"


@pytest.mark.parametrize(
    ("path", "model"), [(JOB, "V1Job"), (PVC, "V1PersistentVolumeClaim")], ids=["job", "pvc"]
)
def test_core_manifests_fit_the_kubernetes_api(path, model):
    pytest.importorskip("kubernetes.client")
    assert model_errors(load(path), model) == []


def test_shared_volume_mounted_at_one_path_everywhere():
    pvc = load(PVC)
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    claim = pvc["metadata"]["name"]
    paths = set()
    for role, pod in pod_specs().items():
        volumes = [v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim")]
        claims = [
            v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if v["name"] in volumes
        ]
        assert claims == [claim], role
        for c in all_containers(pod):
            mounts = [m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] == volumes[0]]
            assert len(mounts) == 1, f"{role}/{c['name']} does not mount the shared volume"
            paths.update(mounts)
    assert len(paths) == 1, f"shared volume mounted at different paths: {paths}"
    shared = PurePosixPath(paths.pop())
    client = pod_specs()["client"]
    flags = options(container(client, "recall")["args"])
    work_dir, output = PurePosixPath(flags["--work-dir"]), PurePosixPath(flags["-o"])
    input_path = PurePosixPath(container(client, "recall")["args"][2])
    for p in (work_dir, output, input_path):
        assert p.is_relative_to(shared), p
    # recall-dask refuses a --work-dir that does not exist: an init container makes it.
    (prepare,) = client["initContainers"]
    assert prepare["args"][:2] == ["mkdir", "-p"]
    assert {str(work_dir), str(output.parent)} <= set(prepare["args"][2:])


def test_pods_run_as_the_image_user():
    user = [arg for op, arg in dockerfile_instructions() if op == "USER"][-1]
    uid = int(user.split(":")[0])
    for role, pod in pod_specs().items():
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, role
        assert context["runAsUser"] == uid, role


def test_helm_values_only_use_keys_of_the_operator_chart():
    pytest.importorskip("dask_kubernetes")
    import dask_kubernetes

    chart = Path(dask_kubernetes.__file__).parent / "operator/deployment/helm"
    defaults = load(chart / "dask-kubernetes-operator/values.yaml")
    ours = load(HELM_VALUES)

    assert unknown_keys(ours, defaults) == []
    rbac = {**defaults["rbac"], **ours.get("rbac", {})}
    kopf_args = ours.get("kopfArgs", defaults["kopfArgs"])
    # A ClusterRole goes with --all-namespaces, a namespaced Role with --namespace.
    if rbac["cluster"]:
        assert "--all-namespaces" in kopf_args
    else:
        assert any(arg.startswith("--namespace") for arg in kopf_args)


# --- SLURM --------------------------------------------------------------------------------

CLI_JOBQUEUE_KEYS = {
    "queue",
    "account",
    "walltime",
    "cores",
    "memory",
}  # our --cluster slurm options


def test_jobqueue_yaml_keys_are_slurmcluster_keys():
    dask_jobqueue = pytest.importorskip("dask_jobqueue")
    defaults = yaml.safe_load(Path(dask_jobqueue.__file__).with_name("jobqueue.yaml").read_text())
    ours = load(JOBQUEUE)
    assert set(ours) == {"jobqueue"} and set(ours["jobqueue"]) == {"slurm"}
    slurm = ours["jobqueue"]["slurm"]
    assert set(slurm) <= set(defaults["jobqueue"]["slurm"])
    assert set(slurm) >= CLI_JOBQUEUE_KEYS
    assert not {"extra", "env-extra", "job-extra"} & set(slurm), "deprecated jobqueue keys"


def test_jobqueue_yaml_renders_a_slurm_job_script():
    pytest.importorskip("dask_jobqueue")
    import dask.config
    from dask_jobqueue.slurm import SLURMJob

    slurm = load(JOBQUEUE)["jobqueue"]["slurm"]
    with dask.config.set({f"jobqueue.slurm.{key}": value for key, value in slurm.items()}):
        script = SLURMJob(scheduler="tcp://10.0.0.1:8786", name="w").job_script()
    assert f"#SBATCH -J {slurm['name']}" in script
    assert f"#SBATCH --cpus-per-task={slurm['cores']}" in script
    assert f"#SBATCH -t {slurm['walltime']}" in script
    assert f"--nthreads {slurm['cores'] // slurm['processes']}" in script
    assert f"--death-timeout {slurm['death-timeout']}" in script
    assert f"--local-directory {slurm['local-directory']}" in script


def test_sbatch_script_is_valid_bash_and_runs_recall_with_the_scheduler():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    text = SBATCH.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert re.search(r"^recall-dask run .*--scheduler .*--work-dir ", text, re.M)
    assert re.search(r"^#SBATCH --nodes=\d+$", text, re.M)


STUBS = {
    # Record the arguments and the process id, write the scheduler file, then idle.
    "dask": """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$STUB_LOG/dask-$1.args"
echo $$ > "$STUB_LOG/dask-$1.pid"
if [[ $1 == scheduler ]]; then
    echo '{"address": "tcp://10.9.8.7:8786"}' > "$3"
fi
exec sleep 30 >/dev/null 2>&1  # no hold on the caller's pipes if left running
""",
    # Drop srun's own options, run the task once.
    "srun": """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$STUB_LOG/srun.args"
while [[ $1 == -* ]]; do shift; done
exec "$@"
""",
    "recall-dask": """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$STUB_LOG/recall-dask.args"
exit "${STUB_EXIT:-0}"
""",
}


@pytest.mark.parametrize("exit_code", [0, 3], ids=["run-succeeds", "run-fails"])
def test_sbatch_script_with_stub_commands(tmp_path, exit_code):
    """Scheduler file -> address -> recall-dask; workers and scheduler stopped at the end;
    the job's exit status is recall-dask's."""
    bin_dir, log, shared = tmp_path / "bin", tmp_path / "log", tmp_path / "shared"
    bin_dir.mkdir()
    log.mkdir()
    for name, body in STUBS.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "STUB_LOG": str(log),
        "STUB_EXIT": str(exit_code),
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_CPUS_PER_TASK": "4",
        "SCHEDULER_WAIT": "10",
    }
    env.pop("DASK_INTERFACE", None)
    env.pop("RECALL_VENV", None)
    try:
        done = subprocess.run(
            ["bash", str(SBATCH), "in.h5", "out.zarr", str(shared)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == exit_code, done.stderr
        recall = (log / "recall-dask.args").read_text().splitlines()
        assert recall == [
            "run", "in.h5", "-o", "out.zarr",
            "--scheduler", "tcp://10.9.8.7:8786",
            "--work-dir", str(shared / "work"),
        ]  # fmt: skip
        assert (shared / "work").is_dir()
        worker = options((log / "dask-worker.args").read_text().splitlines())
        scheduler = options((log / "dask-scheduler.args").read_text().splitlines())
        assert worker["--scheduler-file"] == scheduler["--scheduler-file"]
        assert Path(scheduler["--scheduler-file"]).parent == shared
        assert worker["--nthreads"] == "4"
        assert "--cpus-per-task=4" in (log / "srun.args").read_text().splitlines()
        for role in ("scheduler", "worker"):
            pid = int((log / f"dask-{role}.pid").read_text())
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        for pid_file in log.glob("*.pid"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
