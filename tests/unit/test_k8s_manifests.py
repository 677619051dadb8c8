"""The deployment in ``k8s/`` (and its images and operator values in ``infra/``), checked the way a cluster
would check it and against the project it deploys.

* Every standard object passes ``kubernetes-validate`` in strict mode for the newest Kubernetes version the
  installed package knows; the KubeRay resources pass the v1.7 CRD schemas (``../shared/schemas``, made
  strict: unknown fields are errors, as with ``kubectl apply``'s server-side field validation), and their
  embedded pod templates pass the Kubernetes ``PodTemplate`` schema.
* ``kubectl apply -f k8s/`` and ``-k k8s/`` apply the same objects, namespace first.
* The jobs' entrypoints are parsed by the jobs' own ``main`` (their run functions replaced by recorders),
  so the config each job would run with is the one checked; the RayService's ``serveConfigV2`` is
  regenerated with ``jobs/serve.py --print-config`` and its application is built.
* Security (no committed secret values, restricted security contexts, resources), probes, and the network
  policies, evaluated flow by flow with the labels the manifests give their pods.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
INFRA = REPO / "infra"
NAMESPACE = "tvifm"
OPERATOR_NAMESPACE = "kuberay-system"
KUBERAY_SCHEMAS = "kuberay-v1.7"
RAY_KINDS = ("RayJob", "RayService")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
CLUSTER_SCOPED = {"Namespace"}
CONFIG_MOUNT = "/etc/tvifm"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MLFLOW_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
TRAIN_MLFLOW_SECRET, SERVE_MLFLOW_SECRET = "tvifm-mlflow-train", "tvifm-mlflow-serve"


# --- loading ----------------------------------------------------------------------------------------------


def _yaml_all(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=yaml.CSafeLoader) if doc is not None]


@functools.cache
def manifests() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file name, object) for every object of every ``k8s/*.yaml`` file, in ``kubectl apply -f`` order."""
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        out += [(path.name, obj) for obj in _yaml_all(path.read_text())]
    return tuple(out)


def objects(*kinds: str) -> list[dict[str, Any]]:
    return [obj for _, obj in manifests() if not kinds or obj["kind"] in kinds]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [obj for obj in objects(kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def ray_cluster_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["rayClusterSpec" if obj["kind"] == "RayJob" else "rayClusterConfig"]


@dataclass
class Template:
    """A pod template of the manifests and where it comes from."""

    where: str
    template: dict[str, Any]
    role: str  # workload | ray-head | ray-worker | ray-submitter
    group: dict[str, Any] = field(default_factory=dict)  # a Ray worker group

    @property
    def spec(self) -> dict[str, Any]:
        return self.template["spec"]

    @property
    def labels(self) -> dict[str, str]:
        return self.template.get("metadata", {}).get("labels", {})

    def containers(self, init: bool = True) -> list[dict[str, Any]]:
        return [*self.spec.get("containers", []), *(self.spec.get("initContainers", []) if init else [])]


def templates() -> list[Template]:
    out = []
    for obj in objects():
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in WORKLOAD_KINDS:
            out.append(Template(name, obj["spec"]["template"], "workload"))
        elif obj["kind"] in RAY_KINDS:
            cluster = ray_cluster_spec(obj)
            out.append(Template(f"{name} head", cluster["headGroupSpec"]["template"], "ray-head"))
            for group in cluster.get("workerGroupSpecs", []):
                out.append(Template(f"{name} {group['groupName']}", group["template"], "ray-worker", group))
            if "submitterPodTemplate" in obj["spec"]:
                out.append(
                    Template(f"{name} submitter", obj["spec"]["submitterPodTemplate"], "ray-submitter")
                )
    return out


def strings(node: Any) -> Iterator[str]:
    """Every string inside ``node`` (keys excluded)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity as a number (CPU in cores, memory in bytes)."""
    text = str(value)
    assert QUANTITY.match(text), f"{text!r} is not a resource quantity"
    units = {
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "P": 1e15,
        "E": 1e18,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "Pi": 2**50,
        "Ei": 2**60,
    }
    number = re.match(r"^[0-9.]+", text).group(0)  # type: ignore[union-attr]
    return float(number) * units.get(text[len(number) :], 1)


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def runtime_env(rayjob: dict[str, Any]) -> dict[str, str]:
    return yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["env_vars"]


def service_config(rayservice: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


def serve_args() -> dict[str, Any]:
    (app,) = service_config(one("RayService", "tvifm-retrieval"))["applications"]
    return app["args"]


def bucket_list() -> list[str]:
    job = one("Job", "tvifm-object-store-buckets")
    return env_of(job["spec"]["template"]["spec"]["containers"][0])["BUCKETS"]["value"].split()


def load_module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared_dir() -> Path:
    return Path(os.environ.get("TVIFM_SHARED") or REPO.parent / "shared")


# --- kubectl apply -f / -k ---------------------------------------------------------------------------------


def test_every_object_is_named_and_lives_in_the_namespace() -> None:
    assert manifests(), "k8s/ holds no manifests"
    for path in sorted(K8S.glob("*.yaml")):
        assert _yaml_all(path.read_text()), f"{path.name} holds no object"
    for file, obj in manifests():
        meta = obj["metadata"]
        assert obj.get("apiVersion") and obj.get("kind"), file
        assert DNS_LABEL.match(meta["name"]) and len(meta["name"]) <= 63, f"{file}: bad name {meta['name']}"
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta
        else:  # explicit, so `kubectl apply -f` needs no -n and kustomize needs no namespace transformer
            assert meta.get("namespace") == NAMESPACE, (
                f"{file}: {obj['kind']}/{meta['name']} not in {NAMESPACE}"
            )
    for obj in objects(*RAY_KINDS):  # KubeRay derives longer names (clusters, pods, services) from these
        assert len(obj["metadata"]["name"]) <= 40


def test_kubectl_apply_f_creates_the_namespace_first_and_reads_only_objects() -> None:
    files = sorted(p.name for p in K8S.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
    assert files == sorted(p.name for p in K8S.glob("*.yaml")), "use .yaml for every object file"
    first = _yaml_all((K8S / files[0]).read_text())
    assert [(o["kind"], o["metadata"]["name"]) for o in first] == [("Namespace", NAMESPACE)]
    assert [o for o in objects("Namespace")] == first, "only the first file may create a namespace"
    # `kubectl apply -f k8s/` reads every .yaml/.yml/.json file: anything else in the folder must not be
    # one (the kustomization is `Kustomization`, templates end in .example)
    others = sorted(p.name for p in K8S.iterdir() if p.name not in files)
    assert "Kustomization" in others
    assert all(name == "Kustomization" or name.endswith(".example") for name in others), others


def test_kustomization_lists_every_object_file_and_transforms_nothing() -> None:
    names = {p.name for p in K8S.iterdir()}
    assert not names & {"kustomization.yaml", "kustomization.yml"}, (
        "kustomize refuses two kustomization files"
    )
    kustomization = yaml.safe_load((K8S / "Kustomization").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["apiVersion"].startswith("kustomize.config.k8s.io/")
    # no namespace, labels, images, patches or generators: -k must create what -f creates
    assert set(kustomization) == {"apiVersion", "kind", "resources"}
    assert kustomization["resources"] == sorted(p.name for p in K8S.glob("*.yaml"))


# --- schema validation -------------------------------------------------------------------------------------


@functools.cache
def k8s_version() -> str:
    from kubernetes_validate import utils

    return utils.latest_version()


def validate_k8s(obj: dict[str, Any]) -> None:
    from kubernetes_validate import utils

    try:
        utils.validate(obj, k8s_version(), strict=True)
    except utils.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")


def test_validating_against_a_current_kubernetes() -> None:
    major, minor = (int(x) for x in k8s_version().split(".")[:2])
    assert (major, minor) >= (1, 33), f"kubernetes-validate only knows Kubernetes {k8s_version()}"


@pytest.mark.parametrize(
    "obj",
    [o for _, o in manifests() if o["kind"] not in RAY_KINDS],
    ids=lambda o: f"{o['kind']}/{o['metadata']['name']}",
)
def test_standard_objects_pass_strict_kubernetes_validation(obj: dict[str, Any]) -> None:
    from kubernetes_validate import utils

    try:
        validate_k8s(obj)
    except utils.SchemaNotFoundError as exc:
        pytest.fail(f"no Kubernetes schema for a standard object: {exc.message}")


def test_ray_pod_templates_pass_strict_kubernetes_validation() -> None:
    for tpl in templates():
        if tpl.role.startswith("ray-"):
            name = re.sub(r"[^a-z0-9-]+", "-", tpl.where.lower()).strip("-")[:63].strip("-")
            validate_k8s(
                {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": name},
                    "template": tpl.template,
                }
            )


def test_strict_validation_rejects_a_misspelt_field() -> None:
    """Guards the checks above: a typo in a container must fail, not pass unnoticed."""
    broken = copy.deepcopy(one("Deployment", "tvifm-mlflow"))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(pytest.fail.Exception, match="readinesProbe"):
        validate_k8s(broken)


def test_resource_quantities_are_well_formed_and_requests_fit_limits() -> None:
    for tpl in templates():
        for container in tpl.containers():
            res = container["resources"]
            for resource, limit in res["limits"].items():
                request = res["requests"].get(resource, limit)
                assert quantity(request) <= quantity(limit), f"{tpl.where}: {resource} request > limit"
    for obj in objects("StatefulSet"):
        for claim in obj["spec"].get("volumeClaimTemplates", []):
            quantity(claim["spec"]["resources"]["requests"]["storage"])


def _strict(schema: Any) -> Any:
    """The schema with unknown fields rejected wherever it lists the known ones (what the API server does
    with `kubectl apply`'s strict field validation), except where unknown fields are explicitly kept."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validators() -> dict[str, Any]:
    import jsonschema

    folder = shared_dir() / "schemas" / KUBERAY_SCHEMAS
    out = {}
    for file in ("ray.io_rayjobs.yaml", "ray.io_rayservices.yaml"):
        path = folder / file
        if not path.is_file():
            continue
        crd = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        out[crd["spec"]["names"]["kind"]] = jsonschema.Draft202012Validator(
            _strict(v1["schema"]["openAPIV3Schema"])
        )
    return out


def test_ray_resources_pass_the_kuberay_crd_schemas() -> None:
    validators = crd_validators()
    if set(validators) != set(RAY_KINDS):
        missing = sorted(set(RAY_KINDS) - set(validators))
        pytest.skip(f"KubeRay v1.7 CRD schemas for {missing} are absent from {shared_dir() / 'schemas'}")
    for obj in objects(*RAY_KINDS):
        errors = [
            f"{'.'.join(map(str, e.path))}: {e.message[:200]}"
            for e in validators[obj["kind"]].iter_errors(obj)
        ]
        assert not errors, f"{obj['kind']}/{obj['metadata']['name']}: {errors}"
    broken = copy.deepcopy(one("RayJob", "tvifm-train"))
    broken["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["rayStartParam"] = {}
    assert list(validators["RayJob"].iter_errors(broken)), "the strict CRD schema must reject unknown fields"


# --- KubeRay resources and the project ---------------------------------------------------------------------


def test_ray_start_params_are_strings_and_worker_groups_are_bounded() -> None:
    for obj in objects(*RAY_KINDS):
        cluster = ray_cluster_spec(obj)
        groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        for group in groups:
            params = group["rayStartParams"]
            assert all(isinstance(v, str) for v in params.values()), f"{obj['metadata']['name']}: {params}"
        # the head runs the driver and Ray's control plane, never tasks or replicas
        assert cluster["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0"
        for group in cluster["workerGroupSpecs"]:
            assert {"minReplicas", "maxReplicas", "replicas"} <= set(group), group["groupName"]
            assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_images_and_versions_agree_with_the_pinned_ray_torch_and_mlflow() -> None:
    import mlflow
    import ray

    pins = dict(
        re.match(r"^([a-zA-Z0-9_]+)==(.+)$", dep).groups()  # type: ignore[union-attr]
        for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if "==" in dep
    )
    dockerfile = (INFRA / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S*)", dockerfile, re.MULTILINE))
    assert args["RAY_VERSION"] == ray.__version__
    assert re.search(
        r"^FROM rayproject/ray:\$\{RAY_VERSION\}-\$\{PYTHON_TAG\}\$\{RAY_VARIANT\}$", dockerfile, re.M
    )
    assert args["PYTHON_TAG"] == f"py{sys.version_info.major}{sys.version_info.minor}"
    assert args["TORCH_VERSION"] == pins["torch"] and args["TORCHVISION_VERSION"] == pins["torchvision"]
    assert re.search(r"^USER ray$", dockerfile, re.MULTILINE), "the image must run as the non-root ray user"
    for obj in objects(*RAY_KINDS):
        cluster = ray_cluster_spec(obj)
        assert cluster["rayVersion"] == ray.__version__
        images = {
            c["image"]
            for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
            for c in group["template"]["spec"]["containers"]
        }
        assert len(images) == 1, f"{obj['metadata']['name']}: one image for head and workers, got {images}"
        (image,) = images
        assert f"-ray{ray.__version__}-{args['PYTHON_TAG']}" in image.rsplit(":", 1)[1]
    mlflow_args = dict(re.findall(r"^ARG (\w+)=(\S*)", (INFRA / "mlflow.Dockerfile").read_text(), re.M))
    assert mlflow_args["MLFLOW_VERSION"] == mlflow.__version__
    (container,) = one("Deployment", "tvifm-mlflow")["spec"]["template"]["spec"]["containers"]
    assert container["image"].rsplit(":", 1)[1] == mlflow.__version__


def test_dockerignore_keeps_what_the_image_copies() -> None:
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", (INFRA / "Dockerfile").read_text(), re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
            assert (REPO / source).exists(), f"the image copies {source}, which does not exist"
    assert {".venv", "runs", "data", ".git"} <= set(ignored)


def _config_files(tmp_path: Path) -> Path:
    """The files of the ConfigMap tvifm-config, written where the pods mount it (under ``tmp_path``)."""
    folder = tmp_path / CONFIG_MOUNT.strip("/")
    folder.mkdir(parents=True)
    for name, text in one("ConfigMap", "tvifm-config")["data"].items():
        (folder / name).write_text(text)
    return folder


def _argv(entrypoint: str, script: str, config_dir: Path) -> list[str]:
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["python", script], f"entrypoint {entrypoint!r} must run `python {script}`"
    assert (REPO / script).is_file(), f"{script} does not exist"
    return [arg.replace(CONFIG_MOUNT, str(config_dir)) for arg in argv[2:]]


def _mounts_config(obj: dict[str, Any]) -> None:
    """The driver of a RayJob may run on any of its pods: all of them mount the tvifm config files."""
    cluster = ray_cluster_spec(obj)
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        spec = group["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        assert volumes[mounts[CONFIG_MOUNT]]["configMap"]["name"] == "tvifm-config"


def gpus(obj: dict[str, Any]) -> list[tuple[int, float, float]]:
    """(replicas, GPUs, CPUs) per worker group of a Ray resource."""
    out = []
    for group in ray_cluster_spec(obj)["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        out.append((group["replicas"], quantity(limits.get("nvidia.com/gpu", 0)), quantity(limits["cpu"])))
    return out


def _train_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The config ``jobs/train.py`` builds from the RayJob's entrypoint (its main, with the Ray and MLflow
    sessions and the training replaced by recorders)."""
    import contextlib

    job = one("RayJob", "tvifm-train")
    argv = _argv(job["spec"]["entrypoint"], "jobs/train.py", _config_files(tmp_path))
    module = load_module(REPO / "jobs" / "train.py", "train_job_entry")
    seen: dict[str, Any] = {}

    @contextlib.contextmanager
    def session(cfg: Any) -> Iterator[None]:
        seen["cfg"] = cfg
        yield None

    def train_job(cfg: Any, uri: Any, *, evaluate: bool) -> Any:
        seen["evaluate"] = evaluate
        return type(
            "Result", (), {"run_name": "r", "exports": {}, "mlflow_run_id": None, "registration": None}
        )

    import tvifm.engine.job

    monkeypatch.setattr(tvifm.engine.job, "tracking_session", session)
    monkeypatch.setattr(tvifm.engine.job, "training_cluster", session)
    monkeypatch.setattr(tvifm.engine.job, "train_job", train_job)
    assert module.main(argv) == 0
    return seen["cfg"], seen["evaluate"]


def test_training_job_runs_jobs_train_on_its_gpus_with_storage_in_s3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, evaluate = _train_config(tmp_path, monkeypatch)
    job = one("RayJob", "tvifm-train")
    _mounts_config(job)
    assert evaluate, "the cluster job evaluates the final model"
    assert cfg.device == "cuda" and cfg.dist.use_gpu
    assert cfg.data.root.startswith("s3://") and cfg.dist.storage_path.startswith("s3://")
    assert cfg.dist.run_name, "a fixed run name is what lets a re-applied job resume"
    assert not cfg.tracking.uri and cfg.tracking.enabled  # the tracking server comes from the environment
    groups = gpus(job)
    assert sum(r * g for r, g, _ in groups) == cfg.dist.num_workers, "one Ray Train worker per GPU"
    # each worker needs 1 GPU and dist.cpus_per_worker CPUs: they must fit the pods
    fit = sum(r * min(g, c // cfg.dist.cpus_per_worker) for r, g, c in groups)
    assert fit >= cfg.dist.num_workers, "the Ray Train workers do not fit the GPU worker group"


def _caption_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> dict[str, Any]:
    job = one("RayJob", name)
    argv = _argv(job["spec"]["entrypoint"], "jobs/caption.py", _config_files(tmp_path))
    module = load_module(REPO / "jobs" / "caption.py", f"caption_entry_{name.replace('-', '_')}")
    seen: dict[str, Any] = {}

    class Done:
        def to_dict(self) -> dict[str, Any]:
            return {}

    def caption(root: str, ccfg: Any, dataset: str) -> Done:
        seen.update(kind="caption", root=root, ccfg=ccfg, rest=())
        return Done()

    def finetune(root: str, cfg: Any, ccfg: Any, modalities: Any) -> list[Done]:
        seen.update(kind="finetune", root=root, ccfg=ccfg, rest=(tuple(modalities),))
        return []

    import tvifm.captioning.finetune
    import tvifm.captioning.job

    monkeypatch.setattr(tvifm.captioning.job, "run_caption_job", caption)
    monkeypatch.setattr(tvifm.captioning.finetune, "finetune", finetune)
    assert module.main(argv) == 0
    return seen


def test_caption_jobs_run_jobs_caption_on_s3_within_their_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    finetune = _caption_call(tmp_path / "f", monkeypatch, "tvifm-caption-finetune")
    caption = _caption_call(tmp_path / "c", monkeypatch, "tvifm-caption")
    assert finetune["kind"] == "finetune" and finetune["rest"] == (("visible", "ir"),)
    assert caption["kind"] == "caption"
    assert finetune["root"] == caption["root"] and caption["root"].startswith("s3://")
    # the captioners the job uses are the ones fine-tuning wrote, in the object store
    assert finetune["ccfg"].captioner_dir == caption["ccfg"].captioner_dir
    assert caption["ccfg"].captioner_dir.startswith("s3://")
    assert caption["ccfg"].rgb_checkpoint is None and caption["ccfg"].ir_checkpoint is None
    for name in ("tvifm-caption-finetune", "tvifm-caption"):
        _mounts_config(one("RayJob", name))
    ccfg = caption["ccfg"]
    total = sum(r * g for r, g, _ in gpus(one("RayJob", "tvifm-caption")))
    assert ccfg.actors * ccfg.gpus_per_actor <= total, "the captioning actor pool does not fit the GPUs"
    ft_job = one("RayJob", "tvifm-caption-finetune")
    # fine-tuning runs in the driver: it must be placed on a GPU worker
    assert ft_job["spec"]["entrypointNumGpus"] >= 1
    assert max(g for _, g, _ in gpus(ft_job)) >= ft_job["spec"]["entrypointNumGpus"]


def test_jobs_start_suspended_and_shut_their_clusters_down() -> None:
    mlflow_url = f"http://{service_host('tvifm-mlflow')}:{service_port('tvifm-mlflow', 'http')}"
    s3_url = f"http://{service_host('tvifm-minio')}:{service_port('tvifm-minio', 's3')}"
    for job in objects("RayJob"):
        spec, name = job["spec"], job["metadata"]["name"]
        assert spec["suspend"] is True, f"{name}: applying the manifests must not start GPU work"
        assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
        assert spec["submissionMode"] == "K8sJobMode" and "submitterPodTemplate" in spec
        env = runtime_env(job)
        # only training tracks (and registers) in MLflow; captioning is given no tracking server
        assert env.get("MLFLOW_TRACKING_URI") == (mlflow_url if name == "tvifm-train" else None), name
        assert env["AWS_ENDPOINT_URL"] == s3_url, name
        assert not any(SECRET_NAME.search(key) for key in env), f"{name}: a secret in the runtime env"
        assert ray_cluster_spec(job)["authOptions"]["mode"] == "token"
        expected = {
            ("AWS_ACCESS_KEY_ID", "tvifm-s3-credentials"),
            ("AWS_SECRET_ACCESS_KEY", "tvifm-s3-credentials"),
        }
        if name == "tvifm-train":
            expected |= {(key, TRAIN_MLFLOW_SECRET) for key in MLFLOW_CREDENTIALS}
        for tpl in templates():
            if tpl.where.startswith(f"RayJob/{name} ") and tpl.role != "ray-submitter":
                refs = {
                    (e["name"], e["valueFrom"]["secretKeyRef"]["name"])
                    for e in tpl.containers(init=False)[0]["env"]
                    if "valueFrom" in e
                }
                assert refs == expected, tpl.where


def test_service_config_is_what_jobs_serve_print_config_prints() -> None:
    render = load_module(INFRA / "render_serve_config.py", "render_serve_config")
    text = (K8S / "60-rayservice-retrieval.yaml").read_text()
    argv = render.serve_command(text)
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    committed = one("RayService", "tvifm-retrieval")["spec"]["serveConfigV2"]
    assert committed == proc.stdout.rstrip("\n") + "\n", (
        "serveConfigV2 differs from the output of its command; run `python infra/render_serve_config.py`"
    )


def test_render_serve_config_rewrites_only_the_config_block() -> None:
    render = load_module(INFRA / "render_serve_config.py", "render_serve_config")
    text = (K8S / "60-rayservice-retrieval.yaml").read_text()
    new = "proxy_location: EveryNode\napplications: []\n"
    updated = render.replace_block(text, new)
    before, after = yaml.safe_load(text), yaml.safe_load(updated)
    assert after["spec"]["serveConfigV2"] == new
    after["spec"]["serveConfigV2"] = before["spec"]["serveConfigV2"]
    assert after == before
    assert [line for line in updated.splitlines() if line.lstrip().startswith("#")] == [
        line for line in text.splitlines() if line.lstrip().startswith("#")
    ], "comments are kept"


def test_service_config_builds_the_projects_application_on_its_workers() -> None:
    service = one("RayService", "tvifm-retrieval")
    config = service_config(service)
    (app,) = config["applications"]
    module_name, _, attr = app["import_path"].partition(":")
    builder = getattr(importlib.import_module(module_name), attr)
    from ray.serve import Application

    import tvifm.serve.app

    assert builder is tvifm.serve.app.build_app
    assert isinstance(builder(app["args"]), Application)
    args = serve_args()
    # the HTTP port Serve listens on is the port KubeRay's serve Service and the network policy expose
    (worker,) = ray_cluster_spec(service)["workerGroupSpecs"]
    container = worker["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert config["http_options"]["port"] == ports["serve"] == 8000
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": ports["serve"]}
    assert service["spec"]["excludeHeadPodFromServeSvc"] is True
    # the bearer token is a file of the Secret, mounted where the ingress replicas run; it is neither in
    # the pods' environment nor handed to Ray
    assert args["auth_token_env"] is None
    token_file = Path(args["auth_token_file"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in worker["template"]["spec"]["volumes"]}
    (mount,) = [m for m in mounts.values() if token_file.parent == Path(m["mountPath"])]
    assert mount["readOnly"] is True
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == "tvifm-serve-token"
    assert [i["path"] for i in secret["items"]] == [token_file.name]
    assert secret["defaultMode"] & 0o007 == 0, "the token file must not be world-readable"
    assert not any("tvifm-serve-token" in str(e.get("valueFrom")) for e in container["env"])
    # the workers' Serve proxies report the client behind the ingress controller (X-Forwarded-For), so
    # serve.max_uploads_per_client bounds each client rather than the controller's one address
    assert env_of(container)["FORWARDED_ALLOW_IPS"]["value"] == "*"
    assert args["max_uploads"] < args["ingress"]["max_ongoing_requests"]
    # replicas fit the GPU workers: every embedder replica gets its GPU
    total_gpus = sum(r * g for r, g, _ in gpus(service))
    assert args["embedder"]["max_replicas"] * args["embedder"]["num_gpus"] <= total_gpus
    assert args["device"] == "cuda"
    assert args["model"].startswith("models:/") and args["model"].endswith("@production")


# --- wiring between the pieces -----------------------------------------------------------------------------


def service_host(name: str) -> str:
    one("Service", name)
    return f"{name}.{NAMESPACE}.svc"


def service_port(name: str, port_name: str) -> int:
    (port,) = [p["port"] for p in one("Service", name)["spec"]["ports"] if p["name"] == port_name]
    return int(port)


def test_services_select_their_pods_on_declared_ports() -> None:
    for svc in objects("Service"):
        selector = svc["spec"]["selector"]
        matching = [t for t in templates() if all(t.labels.get(k) == v for k, v in selector.items())]
        assert len(matching) == 1, f"Service {svc['metadata']['name']} selects {[t.where for t in matching]}"
        declared = {
            p["containerPort"] for c in matching[0].containers(init=False) for p in c.get("ports", [])
        }
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in declared, f"{svc['metadata']['name']}: {port}"
    for obj in objects("StatefulSet"):
        governing = one("Service", obj["spec"]["serviceName"])
        assert governing["spec"]["clusterIP"] == "None"


def _mlflow_container() -> dict[str, Any]:
    (container,) = one("Deployment", "tvifm-mlflow")["spec"]["template"]["spec"]["containers"]
    return container


def _mlflow_server_params(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The MLflow server's command line parsed by the installed MLflow's own CLI (unknown flags fail)."""
    from mlflow.cli import server

    container = _mlflow_container()
    assert container["command"] == ["mlflow", "server"]
    for name, item in env_of(container).items():
        if "value" in item:
            monkeypatch.setenv(name, item["value"].replace("$(POSTGRES_PASSWORD)", "password"))
    ctx = server.make_context("server", list(container["args"]))
    return ctx.params


def test_mlflow_uses_postgres_and_the_object_store_and_accepts_in_cluster_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    params = _mlflow_server_params(monkeypatch)
    store = urlparse(params["backend_store_uri"])
    assert store.scheme == "postgresql"
    assert (store.hostname, store.port) == (
        service_host("tvifm-postgres"),
        service_port("tvifm-postgres", "postgres"),
    )
    env = env_of(_mlflow_container())
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "tvifm-postgres"
    # the password is expanded from the Secret by Kubernetes: it is not on the command line
    assert "$(POSTGRES_PASSWORD)" in env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert not any(
        "POSTGRES_PASSWORD" in arg or "postgresql://" in arg for arg in _mlflow_container()["args"]
    )
    assert params["artifacts_destination"].startswith("s3://") and params["serve_artifacts"]
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == f"http://{service_host('tvifm-minio')}:9000"
    allowed = params["allowed_hosts"].split(",")
    assert "*" not in allowed
    clients = [runtime_env(one("RayJob", "tvifm-train"))["MLFLOW_TRACKING_URI"]]
    clients.append(serve_args()["mlflow_tracking_uri"])
    clients.append(env_of(_mlflow_setup_container())["MLFLOW_TRACKING_URI"]["value"])
    for uri in [*clients, "http://localhost:5000", "http://127.0.0.1:5000"]:
        assert is_allowed_host_header(allowed, urlparse(uri).netloc), f"MLflow would refuse Host {uri}"
    assert not is_allowed_host_header(allowed, "evil.example.com:5000")


def _mlflow_setup_container() -> dict[str, Any]:
    (container,) = one("Job", "tvifm-mlflow-users")["spec"]["template"]["spec"]["containers"]
    return container


def mlflow_auth_settings() -> Any:
    import configparser

    parser = configparser.ConfigParser()
    parser.read_string(one("ConfigMap", "tvifm-mlflow-auth")["data"]["basic_auth.ini"])
    return parser["mlflow"]


def test_mlflow_requires_authentication_with_users_kept_in_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    params = _mlflow_server_params(monkeypatch)
    assert params["app_name"] == "basic-auth", "the MLflow server must run its basic-auth app"
    container = _mlflow_container()
    env = env_of(container)
    path = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in one("Deployment", "tvifm-mlflow")["spec"]["template"]["spec"]["volumes"]}
    mounted = volumes[mounts[str(path.parent)]]["configMap"]
    assert mounted["name"] == "tvifm-mlflow-auth" and [i["path"] for i in mounted["items"]] == [path.name]
    settings = mlflow_auth_settings()
    assert settings["default_permission"] == "NO_PERMISSIONS", "users get only what they are granted"
    assert settings["authorization_function"] == "mlflow.server.auth:authenticate_request_basic_auth"
    # users and permissions survive restarts: in Postgres, password from libpq's PGPASSWORD (a Secret)
    store = urlparse(settings["database_uri"])
    assert (store.scheme, store.hostname, store.password) == (
        "postgresql",
        service_host("tvifm-postgres"),
        None,
    )
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "tvifm-postgres",
        "key": "POSTGRES_PASSWORD",
    }
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "tvifm-mlflow-admin", "key": name}
    # the probes use /health, which the basic-auth app leaves open (importing mlflow.server.auth here
    # to ask it would read its settings file at import time)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health", probe


def test_only_the_training_job_holds_mlflow_credentials_that_may_move_aliases() -> None:
    holders: dict[str, set[str]] = {}
    for tpl in templates():
        for container in tpl.containers():
            for key in MLFLOW_CREDENTIALS:
                ref = env_of(container).get(key, {}).get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    holders.setdefault(ref["name"], set()).add(tpl.where)
    assert holders[TRAIN_MLFLOW_SECRET] == {"RayJob/tvifm-train head", "RayJob/tvifm-train gpu"}
    assert holders[SERVE_MLFLOW_SECRET] == {"RayService/tvifm-retrieval gpu"}
    assert holders["tvifm-mlflow-admin"] == {"Job/tvifm-mlflow-users"}, "the admin signs in nowhere else"
    assert set(holders) == {TRAIN_MLFLOW_SECRET, SERVE_MLFLOW_SECRET, "tvifm-mlflow-admin"}, holders
    # the user Job runs as the admin and gives each user its grants (the script is run for real against
    # an MLflow server in tests/integration/test_mlflow_auth.py)
    env = env_of(_mlflow_setup_container())
    assert env["MLFLOW_TRACKING_USERNAME"]["value"] == mlflow_auth_settings()["admin_username"]
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "tvifm-mlflow-admin"
    for role, secret in (("TRAIN", TRAIN_MLFLOW_SECRET), ("SERVE", SERVE_MLFLOW_SECRET)):
        for field_name, key in (("USERNAME", MLFLOW_CREDENTIALS[0]), ("PASSWORD", MLFLOW_CREDENTIALS[1])):
            assert env[f"{role}_{field_name}"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}
    script = one("ConfigMap", "tvifm-mlflow-auth")["data"]["setup_users.py"]
    grants = set(re.findall(r'grant\(auth, (train|serve), "(\w+)", \w+, "(\w+)"\)', script))
    assert grants == {
        ("train", "experiment", "EDIT"),
        ("train", "registered_model", "EDIT"),
        ("serve", "experiment", "READ"),
        ("serve", "registered_model", "READ"),
    }
    train_cfg = yaml.safe_load(one("ConfigMap", "tvifm-config")["data"]["train.yaml"])["tracking"]
    assert env["TVIFM_EXPERIMENT"]["value"] == train_cfg["experiment"]
    assert env["TVIFM_REGISTERED_MODEL"]["value"] == train_cfg["registered_model"]
    assert serve_args()["model"] == f"models:/{train_cfg['registered_model']}@production"


def test_the_retrieval_api_is_served_over_tls_by_an_ingress() -> None:
    (ingress,) = objects("Ingress")
    service = one("RayService", "tvifm-retrieval")
    spec = ingress["spec"]
    (tls,) = spec["tls"]
    assert tls["secretName"] == "tvifm-retrieval-tls"
    rule_hosts = [rule["host"] for rule in spec["rules"]]
    assert rule_hosts and set(rule_hosts) <= set(tls["hosts"]), "every host of the rules is served over TLS"
    assert "defaultBackend" not in spec
    (rule,) = spec["rules"]
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    # the Service KubeRay creates for a RayService, on the port Serve listens on
    assert backend["name"] == f"{service['metadata']['name']}-serve-svc"
    assert backend["port"]["number"] == service_config(service)["http_options"]["port"]
    assert path["path"] == service_config(service)["applications"][0]["route_prefix"]
    # behind the Ingress, the plain-HTTP port admits the ingress controller's namespace only
    policy = one("NetworkPolicy", "retrieval-serve-ingress")
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"tvifm.io/ingress-controller": "true"}}}]
    guide = (REPO / "docs" / "operations.md").read_text()
    assert "tvifm.io/ingress-controller=true" in guide and "create secret tls tvifm-retrieval-tls" in guide


def test_every_bucket_used_is_created_and_granted() -> None:
    buckets = bucket_list()
    used = {
        urlparse(s).netloc
        for _, obj in manifests()
        for text in strings(obj)
        for s in re.findall(r"s3://[a-z0-9.-]+", text)
    }
    assert used and used <= set(buckets), f"buckets used but never created: {sorted(used - set(buckets))}"
    policy = json.loads(one("ConfigMap", "tvifm-object-store-setup")["data"]["app-policy.json"])
    (statement,) = policy["Statement"]
    for bucket in buckets:
        assert any(fnmatch.fnmatch(f"arn:aws:s3:::{bucket}/key", r) for r in statement["Resource"]), bucket
    local_stack = load_module(INFRA / "local_stack.py", "local_stack")
    assert tuple(buckets) == local_stack.BUCKETS, "the local stack creates the cluster's buckets"
    endpoint = f"http://{service_host('tvifm-minio')}:{service_port('tvifm-minio', 's3')}"
    assert (
        env_of(one("Job", "tvifm-object-store-buckets")["spec"]["template"]["spec"]["containers"][0])[
            "S3_URL"
        ]["value"]
        == endpoint
    )
    assert serve_args()["s3_endpoint"] == endpoint


# --- secrets and security ----------------------------------------------------------------------------------


def secret_refs() -> set[tuple[str, str]]:
    """(Secret, key) pairs the manifests read: environment variables, mounted Secret files and the
    certificates of Ingresses."""
    refs = set()
    for tpl in templates():
        for container in tpl.containers():
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
            assert not any("secretRef" in source for source in container.get("envFrom", [])), tpl.where
        for volume in tpl.spec.get("volumes", []):
            if "secret" in volume:
                items = volume["secret"].get("items")
                assert items, f"{tpl.where}: mount only the keys needed ({volume['name']})"
                refs |= {(volume["secret"]["secretName"], item["key"]) for item in items}
    for ingress in objects("Ingress"):
        for tls in ingress["spec"].get("tls", []):
            refs |= {(tls["secretName"], "tls.crt"), (tls["secretName"], "tls.key")}
    return refs


def test_no_secret_values_are_committed() -> None:
    assert not objects("Secret"), "Secrets are created outside the manifests (docs/operations.md)"
    for tpl in templates():
        for container in tpl.containers():
            for item in container.get("env", []):
                if SECRET_NAME.search(item["name"]) and item["name"] != "POSTGRES_USER":
                    assert "value" not in item, f"{tpl.where}: {item['name']} has a literal value"
    examples = list(K8S.glob("*.example"))
    assert examples, "provide a template of the Secrets"
    documented, tls = set(), set()
    for path in examples:
        for secret in _yaml_all(path.read_text()):
            assert secret["kind"] == "Secret"
            for key, value in secret.get("stringData", {}).items():
                assert re.fullmatch(r"<[^<>]+>", value), f"{path.name}: {key} must be a <placeholder>"
                documented.add((secret["metadata"]["name"], key))
            assert "data" not in secret
            if secret.get("type") == "kubernetes.io/tls":
                tls.add(secret["metadata"]["name"])
    assert documented == secret_refs(), "the template must list exactly the Secrets the manifests use"
    guide = (REPO / "docs" / "operations.md").read_text()
    for name, key in secret_refs():
        if name in tls:  # kubectl create secret tls NAME --cert=... --key=...
            assert re.search(rf"create secret tls {name}\b", guide), f"docs: no command creating {name}"
            continue
        assert re.search(rf"create secret generic {name}\b", guide), f"docs: no command creating {name}"
        assert f"{key}=" in guide, f"docs: the {name} command does not set {key}"


def test_every_container_is_unprivileged_with_resources() -> None:
    for tpl in templates():
        pod = tpl.spec
        assert pod.get("automountServiceAccountToken") is False, (
            f"{tpl.where}: no Kubernetes API access needed"
        )
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        pod_ctx = pod.get("securityContext", {})
        assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", tpl.where
        writable = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        assert not any("hostPath" in v for v in pod.get("volumes", [])), tpl.where
        for container in tpl.containers():
            where = f"{tpl.where} {container['name']}"
            ctx = container.get("securityContext")
            assert ctx, f"{where}: no securityContext"
            assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, where
            assert ctx.get("runAsUser", pod_ctx.get("runAsUser", 1)) != 0, where
            assert ctx.get("allowPrivilegeEscalation") is False and not ctx.get("privileged"), where
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not ctx.get("capabilities", {}).get("add"), where
            assert ctx.get("readOnlyRootFilesystem") is True, where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in writable, f"{where}: a read-only root needs a writable /tmp"
            res = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{where}: {kind} must set cpu and memory"
            if "nvidia.com/gpu" in res["limits"]:
                assert res["requests"].get("nvidia.com/gpu") == res["limits"]["nvidia.com/gpu"], where
                assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])), where


def test_namespace_enforces_the_restricted_pod_security_profile() -> None:
    (namespace,) = objects("Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def _probe_target(probe: dict[str, Any]) -> tuple[str, Any]:
    if "httpGet" in probe:
        return "http", (probe["httpGet"]["path"], probe["httpGet"]["port"])
    return "exec", tuple(probe["exec"]["command"])


def test_deployments_and_statefulsets_have_probes_on_their_health_endpoints() -> None:
    expected = {
        "tvifm-mlflow": {
            "readinessProbe": ("http", ("/health", 5000)),
            "livenessProbe": ("http", ("/health", 5000)),
        },
        "tvifm-minio": {
            "readinessProbe": ("http", ("/minio/health/ready", 9000)),
            "livenessProbe": ("http", ("/minio/health/live", 9000)),
        },
    }
    for obj in objects("Deployment", "StatefulSet"):
        name = obj["metadata"]["name"]
        for container in obj["spec"]["template"]["spec"]["containers"]:
            declared = {p["containerPort"] for p in container.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in container, f"{name}: no {probe}"
                kind, target = _probe_target(container[probe])
                if kind == "http":
                    assert target[1] in declared, f"{name}: {probe} on an undeclared port"
                if name in expected:
                    assert (kind, target) == expected[name][probe]
    (postgres,) = one("StatefulSet", "tvifm-postgres")["spec"]["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert postgres[probe]["exec"]["command"][0] == "pg_isready"


def test_ray_containers_keep_kuberays_health_probes() -> None:
    """KubeRay injects a raylet liveness probe (and the heads' readiness) only where none is set."""
    values = yaml.safe_load((INFRA / "kuberay-operator-values.yaml").read_text())
    env = {e["name"]: e["value"] for e in values.get("env", [])}
    assert env.get("ENABLE_PROBES_INJECTION", "true") != "false"
    for tpl in templates():
        if tpl.role in ("ray-head", "ray-worker"):
            ray_container = tpl.spec["containers"][0]
            assert "livenessProbe" not in ray_container, tpl.where
            if tpl.role == "ray-head":
                assert "readinessProbe" not in ray_container, tpl.where


# --- network policies --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    name: str
    labels: dict[str, str]
    namespace: str = NAMESPACE
    extra_namespace_labels: tuple[tuple[str, str], ...] = ()

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, **dict(self.extra_namespace_labels)}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer(rule_peer: dict[str, Any], pod: Pod, policy_namespace: str) -> bool:
    assert "ipBlock" not in rule_peer, "policies select pods, not addresses"
    if "namespaceSelector" in rule_peer:
        namespace_ok = _selects(rule_peer["namespaceSelector"], pod.namespace_labels)
    else:
        namespace_ok = pod.namespace == policy_namespace
    return namespace_ok and _selects(rule_peer.get("podSelector", {}), pod.labels)


def _port(rule: dict[str, Any], port: int, protocol: str) -> bool:
    if not rule.get("ports"):
        return True
    for entry in rule["ports"]:
        assert isinstance(entry.get("port", 0), int), "use port numbers, not names"
        if entry.get("protocol", "TCP") == protocol and (
            "port" not in entry or entry["port"] <= port <= entry.get("endPort", entry["port"])
        ):
            return True
    return False


def _side_allows(pod: Pod, other: Pod, port: int, protocol: str, direction: str) -> bool:
    policies = [
        p
        for p in objects("NetworkPolicy")
        if p["metadata"]["namespace"] == pod.namespace
        and direction in p["spec"]["policyTypes"]
        and _selects(p["spec"]["podSelector"], pod.labels)
    ]
    if not policies:
        return True  # not isolated in this direction
    key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in policies:
        for rule in policy["spec"].get(key, []):
            peer_ok = rule.get(peers) is None or any(
                _peer(x, other, policy["metadata"]["namespace"]) for x in rule[peers]
            )
            if peer_ok and _port(rule, port, protocol):
                return True
    return False


def allowed(src: Pod, dst: Pod, port: int, protocol: str = "TCP") -> bool:
    return _side_allows(src, dst, port, protocol, "Egress") and _side_allows(
        dst, src, port, protocol, "Ingress"
    )


def pods() -> dict[str, Pod]:
    """The pods of the manifests, by role, with the labels their templates give them."""
    out = {}
    for tpl in templates():
        labels = tpl.labels
        if tpl.role == "workload":
            out[labels["tvifm.io/component"]] = Pod(tpl.where, labels)
        else:
            suffix = {"ray-head": "head", "ray-worker": "worker", "ray-submitter": "submitter"}[tpl.role]
            out[f"{labels['tvifm.io/ray-cluster']}-{suffix}"] = Pod(tpl.where, labels)
    return out


OUTSIDE = {
    "operator": Pod("kuberay operator", {"app.kubernetes.io/name": "kuberay-operator"}, OPERATOR_NAMESPACE),
    "dns": Pod("kube-dns", {"k8s-app": "kube-dns"}, "kube-system"),
    "client": Pod("a client elsewhere", {"app": "client"}, "default"),
    "stranger": Pod("an unlabelled pod in the namespace", {"app": "debug"}),
    "ingress-controller": Pod(
        "the ingress controller", {"app": "controller"}, "ingress", (("tvifm.io/ingress-controller", "true"),)
    ),
    "unlabelled-controller": Pod("an ingress controller whose namespace is not labelled", {}, "ingress2"),
}


def _flow(text: str) -> tuple[str, str, int, str]:
    """``"src -> dst:port"`` or ``"src -> dst:port/UDP"`` as (src, dst, port, protocol)."""
    src, _, target = text.partition(" -> ")
    dst, _, port = target.rpartition(":")
    number, _, protocol = port.partition("/")
    return src, dst, int(number), protocol or "TCP"


# flows between pod roles ("<ray cluster>-head|worker|submitter", a component, or one of OUTSIDE)
NEVER = [
    *(
        f"client -> {target}"
        for target in (
            "tracking:5000",
            "object-store:9000",
            "database:5432",
            "train-head:8265",
            "retrieval-head:8265",
            "train-worker:8000",
            "retrieval-worker:6379",
            "retrieval-worker:8000",  # plain HTTP: clients come through the TLS Ingress
        )
    ),
    "unlabelled-controller -> retrieval-worker:8000",
    "stranger -> retrieval-worker:8000",
    "train-worker -> retrieval-worker:8000",
    "caption-worker -> tracking:5000",  # only training and serving use MLflow
    "caption-head -> tracking:5000",
    "caption-finetune-worker -> tracking:5000",
    "train-worker -> retrieval-worker:23456",  # Ray clusters are isolated from each other
    "caption-head -> train-head:6379",
    "retrieval-worker -> train-head:8265",
    "tracking -> train-head:8265",
    "object-store-setup -> tracking:5000",
    "object-store-setup -> database:5432",
    "train-submitter -> object-store:9000",
    "train-submitter -> retrieval-head:8265",
    "stranger -> tracking:5000",
    "stranger -> object-store:9000",
    "train-worker -> client:443",  # no egress out of the system
    "tracking -> client:443",
    "operator -> train-worker:8265",
    "operator -> tracking:5000",
]


def test_network_policies_deny_by_default_and_allow_exactly_the_system_flows() -> None:
    deny = [
        policy
        for policy in objects("NetworkPolicy")
        if policy["spec"]["podSelector"] == {}
        and not policy["spec"].get("ingress")
        and not policy["spec"].get("egress")
    ]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}, "no default-deny policy"
    p = pods()
    clusters = sorted({pod.labels.get("tvifm.io/ray-cluster", "") for pod in p.values()} - {""})
    assert clusters == ["caption", "caption-finetune", "retrieval", "train"]
    ray = [name for name in p if name.endswith(("-head", "-worker"))]
    must = [f"{name} -> dns:53/{proto}" for name in p for proto in ("UDP", "TCP")]
    for cluster in clusters:
        head, worker = f"{cluster}-head", f"{cluster}-worker"
        for port in (6379, 8265, 10001, 23456):  # Ray uses many, partly random, ports inside a cluster
            must += [f"{worker} -> {head}:{port}", f"{head} -> {worker}:{port}"]
        must += [f"{worker} -> {worker}:23456", f"operator -> {head}:8265"]
        if f"{cluster}-submitter" in p:
            must.append(f"{cluster}-submitter -> {head}:8265")
    must += [f"{name} -> tracking:5000" for name in ray if name.startswith(("train-", "retrieval-"))]
    must += [f"{name} -> object-store:9000" for name in ray]
    must += [
        "tracking -> database:5432",
        "tracking -> object-store:9000",
        "object-store-setup -> object-store:9000",
        "tracking-setup -> tracking:5000",
        "operator -> retrieval-head:8000",
        "ingress-controller -> retrieval-worker:8000",
    ]
    never = [*NEVER, *(f"{name} -> database:5432" for name in ray)]
    every = {**p, **OUTSIDE}

    def open_(text: str) -> bool:
        src, dst, port, protocol = _flow(text)
        return allowed(every[src], every[dst], port, protocol)

    assert not [f for f in must if not open_(f)], "needed flows the policies block"
    assert not [f for f in never if open_(f)], "flows the policies should block"


def test_operator_values_match_the_manifests() -> None:
    values_text = (INFRA / "kuberay-operator-values.yaml").read_text()
    values = yaml.safe_load(values_text)
    assert NAMESPACE in values["watchNamespace"]
    version = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", values["image"]["tag"])
    assert version and f"kuberay-v{version[1]}.{version[2]}" == KUBERAY_SCHEMAS
    guide = (REPO / "docs" / "operations.md").read_text()
    for text in (values_text, guide):  # the operator's namespace is the one the network policy trusts
        installs = re.findall(r"helm (?:upgrade --install|install) .*?--namespace (\S+)", text, re.DOTALL)
        assert installs and set(installs) == {OPERATOR_NAMESPACE}
