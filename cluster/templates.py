"""Cluster templates sized from a recipe: Ray cluster-launcher YAML (AWS, GCP) and KubeRay
manifests (a ConfigMap holding the recipe and one RayJob that brings up its own RayCluster).

What runs: the recipe as resolved here — ``${VAR}`` filled in, ``--set``, ``--input`` and
``--output`` applied, ``executor: ray`` — travels with the cluster (KubeRay: a ConfigMap mounted at
``/etc/thresher/recipe.yaml`` in the head and worker pods; AWS/GCP: a head setup command writes it to
``~/thresher-recipe.yaml``), and the job runs ``thresher run ... --resume``, so a retried job finishes
the interrupted run instead of refusing it. The output must be an object-store URL (``s3://``,
``gs://``, ...): a pod's disk is deleted with the job. The Ray tasks write their parts straight to
the bucket and the run's state for ``--resume`` is kept there too (``_work/``; docs/storage.md), so
the nodes share no filesystem: no volume is needed. A shared one stays possible for the driver's
own files (``THRESHER_STAGING``): an existing ReadWriteMany claim (``staging_claim``) or one the
manifests make (``staging_class``) on Kubernetes, an NFS export (``staging_nfs``) on AWS/GCP.
Storage credentials come from the platform (IRSA / Workload Identity through ``--service-account``,
an instance profile, or the optional Secret ``thresher-storage`` as environment), never the recipe.

Sizing: the recipe's input bytes (when its paths are readable here, else ``input_gb``) and the ops'
declared resources. CPU count targets about an hour of work at a conservative 2 MB/s per core
(the `fineweb` recipe measures ~5 MB/s per core, bench/filters.py), within [2, 512]; memory per CPU
is at least 2 GB and at least the largest op's declared need.

Security: the dashboard and GCS are never published. On AWS/GCP the head binds the dashboard to
127.0.0.1 (reach it with `ray dashboard cluster.yaml`, an SSH tunnel) and GCS is reachable only
inside the cluster's security group / network; on Kubernetes the head Service is ClusterIP. Token
authentication is on, and the token comes from the provider's secret store into an environment
variable at start (AWS Secrets Manager, GCP Secret Manager, a Kubernetes Secret) — never a file.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from thresher.pipeline.errors import ThresherError
from thresher.pipeline.recipe import find_recipe, load_recipe, parse_recipe

MB_PER_CORE_SECOND = 2.0
TARGET_SECONDS = 3600
CPUS_PER_NODE = 16
TOKEN_SECRET = "thresher-ray-token"
STORAGE_SECRET = "thresher-storage"  # optional: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...
DEFAULT_IMAGE = "thresher:latest"  # an image with thresher installed (pip install . on rayproject/ray:2.60.0-py311)
RAY_VERSION = "2.60.0"
RECIPE_DIR = "/etc/thresher"  # where the ConfigMap is mounted in the pods
STAGING_DIR = "/var/thresher/staging"  # THRESHER_STAGING in the pods, where a staging volume is asked for
RAY_GID = 100  # the rayproject/ray images run as user ray (uid 1000, group users = 100)
LAUNCHER_RECIPE = "~/thresher-recipe.yaml"
LAUNCHER_STAGING = "/mnt/thresher-staging"  # THRESHER_STAGING on every node, where an NFS export is given
CONFIGMAP_LIMIT = 1024 * 1024  # bytes: Kubernetes refuses a larger ConfigMap
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_SECRET_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?:KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL)[A-Za-z0-9_]*)", re.I)


@dataclass
class Size:
    cpus: int
    nodes: int
    mem_gb_per_cpu: int
    input_gb: float
    needs_model: bool


@dataclass
class ClusterJob:
    """What a cluster template runs: the resolved recipe and where its output goes."""

    name: str
    recipe_yaml: str
    output: str
    image: str = DEFAULT_IMAGE
    service_account: str | None = None
    # optional: a volume for the driver's own files (THRESHER_STAGING); the parts go to the bucket without one
    staging_claim: str | None = None  # an existing ReadWriteMany claim to mount
    staging_class: str | None = None  # the storage class of a claim the manifests make
    staging_nfs: str | None = None  # (aws, gcp) an NFS export every node mounts
    notes: list[str] = field(default_factory=list)

    def command(self, recipe_path: str) -> str:
        return f"python -m thresher run {recipe_path} --resume"


def _is_url(path: str) -> bool:
    return bool(_URL.match(path))


def size_for(recipe_name: str, sets: list[str] | None = None, input_gb: float | None = None,
             inputs: list[str] | None = None) -> Size:
    from thresher.pipeline.io.inputs import resolve_inputs

    recipe = load_recipe(recipe_name, sets, inputs=inputs)
    ops = recipe.build_ops()
    if input_gb is None:
        input_gb = 100.0  # paths not visible from here (e.g. s3://): assume a mid-size corpus
        if not any(_is_url(p) for p in recipe.input.paths):  # never a network call to size a template
            try:
                files = resolve_inputs(recipe.input.paths, recipe.input.format)
                input_gb = sum(Path(f).stat().st_size for f, _, _ in files) / 1e9
            except ThresherError:
                pass
    cpus = int(min(512, max(2, math.ceil(input_gb * 1000 / (MB_PER_CORE_SECOND * TARGET_SECONDS)))))
    mem = max([2] + [math.ceil(op.resources.memory_mb / 1024) for op in ops])
    return Size(cpus, max(1, math.ceil(cpus / CPUS_PER_NODE)), mem, round(input_gb, 3),
                any(op.resources.needs_model for op in ops))


def _name(recipe: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", f"thresher-{Path(recipe).stem}".lower())[:50].strip("-")


def _plain(value):
    """The recipe's values as plain YAML types (interpolated values are a ``str`` subclass)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, str) else value


def cluster_job(recipe: str, sets: list[str] | None = None, inputs: list[str] | None = None,
                output: str | None = None, image: str | None = None,
                service_account: str | None = None) -> ClusterJob:
    """The recipe resolved here for a cluster run: overrides applied, ``executor: ray`` (the job's
    own cluster: no address), the output an object-store URL. Checked by loading it back."""
    secret = _SECRET_VAR.search(find_recipe(recipe).read_text(encoding="utf-8"))
    if secret:  # resolved here, its value would be written into the ConfigMap / cluster YAML in clear
        raise ThresherError(f"{recipe} interpolates ${{{secret.group(1)}}}, which looks like a credential; the resolved "
                            "recipe is written into the cluster's manifests in clear text. Name the variable in the "
                            "recipe instead (e.g. llm.api_key_env) and give the pods its value from a Secret")
    loaded = load_recipe(recipe, sets, inputs=inputs, output=output, executor="ray")
    out = output or loaded.output.path
    if not _is_url(out):
        raise ThresherError(f"the cluster's output must be an object-store URL (a pod's disk is deleted with the job "
                            f"and nodes share no filesystem); got '{out}': give --output s3://BUCKET/PREFIX "
                            "(or gs://, az://, or any URL thresher writes to)")
    raw = _plain(loaded.raw)
    raw["output"]["path"] = out
    executor = raw.get("executor") or {}
    executor = {"type": executor} if isinstance(executor, str) else dict(executor)
    executor["type"] = "ray"
    executor.pop("address", None)  # the job runs on the cluster it connects to (RAY_ADDRESS in the job)
    raw["executor"] = executor
    text = (f"# {Path(recipe).name} resolved by `thresher cluster init` (overrides: "
            f"{', '.join(sets or []) or 'none'}); the cluster runs exactly this.\n"
            + dump([raw]))
    parse_recipe(text, f"{recipe} (resolved)")  # what the cluster will load must load
    notes = [f"input '{p}' is a local path: the cluster's pods must see it at that path (use an object-store URL)"
             for p in loaded.input.paths if not _is_url(p) and not p.startswith("demo:")]
    return ClusterJob(_name(recipe), text, out, image=image or DEFAULT_IMAGE, service_account=service_account,
                      notes=notes)


def _start_commands(fetch_token: str, staging: bool) -> tuple[list[str], list[str]]:
    env = _token_env(fetch_token, staging)
    head = ["ray stop", f"{env} && ray start --head --port=6379 --dashboard-host=127.0.0.1 "
                        "--autoscaling-config=~/ray_bootstrap_config.yaml --disable-usage-stats"]
    worker = ["ray stop", f"{env} && ray start --address=$RAY_HEAD_IP:6379 --disable-usage-stats"]
    return head, worker


def _token_env(fetch_token: str, staging: bool = False) -> str:
    shared = f"THRESHER_STAGING={LAUNCHER_STAGING} " if staging else ""
    return f'export {shared}RAY_AUTH_MODE=token RAY_AUTH_TOKEN="$({fetch_token})"'


def _fetch_token(provider: str) -> str:
    if provider == "aws":
        return (f"aws secretsmanager get-secret-value --secret-id {TOKEN_SECRET} "
                "--query SecretString --output text")
    return f"gcloud secrets versions access latest --secret={TOKEN_SECRET}"


def launcher_run_command(provider: str, job: ClusterJob) -> str:
    """The command (for ``ray exec CLUSTER.yaml '...'``) that runs the recipe on the head."""
    return f"{_token_env(_fetch_token(provider), bool(job.staging_nfs))} && {job.command(LAUNCHER_RECIPE)}"


def _mount_staging(nfs: str) -> str:
    """Every node mounts one NFS export for the driver's files (THRESHER_STAGING, docs/storage.md):
    optional, the parts go to the bucket without it."""
    m = LAUNCHER_STAGING
    return (f"sudo mkdir -p {m} && (mountpoint -q {m} || sudo mount -t nfs4 -o nfsvers=4.1 {shlex.quote(nfs)} {m}) "
            f"&& sudo chmod 1777 {m}")


def launcher_config(provider: str, job: ClusterJob, size: Size) -> dict:
    fetch = _fetch_token(provider)
    if provider == "aws":
        prov = {"type": "aws", "region": "us-west-2", "cache_stopped_nodes": False}
        # the instance profile may read the token secret and read/write the output bucket
        head_cfg = {"InstanceType": "m6i.2xlarge", "IamInstanceProfile": {"Name": "thresher-ray-head"}}
        worker_type = "m6i.4xlarge" if size.mem_gb_per_cpu <= 4 else "r6i.4xlarge"
        worker_cfg = {"InstanceType": worker_type, "IamInstanceProfile": {"Name": "thresher-ray-head"}}
    else:
        prov = {"type": "gcp", "region": "us-west1", "availability_zone": "us-west1-a", "project_id": "YOUR-PROJECT-ID"}
        disk = {"boot": True, "autoDelete": True, "type": "PERSISTENT",
                "initializeParams": {"diskSizeGb": 100,
                                     "sourceImage": "projects/deeplearning-platform-release/global/images/family/common-cpu"}}
        head_cfg = {"machineType": "n2-standard-8", "disks": [disk],
                    "serviceAccounts": [{"email": "thresher-ray@YOUR-PROJECT-ID.iam.gserviceaccount.com",
                                         "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}]}
        machine = "n2-standard-16" if size.mem_gb_per_cpu <= 4 else "n2-highmem-16"
        worker_cfg = {"machineType": machine, "disks": [disk], "serviceAccounts": head_cfg["serviceAccounts"]}
    head_cmds, worker_cmds = _start_commands(fetch, bool(job.staging_nfs))
    return {
        "cluster_name": job.name,
        "max_workers": size.nodes,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "provider": prov,
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            "head": {"node_config": head_cfg, "resources": {"CPU": 0}},  # the head schedules, workers work
            "worker": {"node_config": worker_cfg, "min_workers": 0, "max_workers": size.nodes,
                       "resources": {"CPU": CPUS_PER_NODE}},
        },
        "head_node_type": "head",
        "file_mounts": {"~/thresher": "."},
        "setup_commands": ["pip install -q ~/thresher", *([_mount_staging(job.staging_nfs)] if job.staging_nfs else [])],
        # the resolved recipe, written on the head where the driver runs (one quoted argument)
        "head_setup_commands": [f"printf '%s' {shlex.quote(job.recipe_yaml)} > {LAUNCHER_RECIPE}"],
        "head_start_ray_commands": head_cmds,
        "worker_start_ray_commands": worker_cmds,
    }


def staging_claim(job: ClusterJob, size: Size, labels: dict) -> dict:
    """An optional ReadWriteMany volume for the driver's own files (``THRESHER_STAGING``,
    docs/storage.md: lock, done markers, the decisions of global ops — the parts and rows go to the
    bucket), made only when ``--staging-class`` asks for it: a tenth of the input, at least 10 Gi."""
    spec: dict = {"accessModes": ["ReadWriteMany"],
                  "resources": {"requests": {"storage": f"{max(10, math.ceil(size.input_gb * 0.1))}Gi"}}}
    if job.staging_class:
        spec["storageClassName"] = job.staging_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": f"{job.name}-staging", "labels": labels}, "spec": spec}


def kuberay_manifests(job: ClusterJob, size: Size) -> list[dict]:
    """A ConfigMap with the resolved recipe and one RayJob whose ``rayClusterSpec`` is the only
    RayCluster: the operator creates it for the job and deletes it after (``shutdownAfterJobFinishes``).
    No volume: the tasks write to the bucket. Optional: a staging claim mounted in every pod
    (``job.staging_claim``, an existing one, or one made of ``job.staging_class``)."""
    if len(job.recipe_yaml.encode()) > CONFIGMAP_LIMIT:
        raise ThresherError(f"the resolved recipe is {len(job.recipe_yaml.encode()):,} bytes, more than a ConfigMap "
                            "holds (1 MiB); move large values (word lists) into files the recipe names")
    labels = {"app.kubernetes.io/name": "thresher", "app.kubernetes.io/instance": job.name}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": f"{job.name}-recipe", "labels": labels},
                  "data": {"recipe.yaml": job.recipe_yaml}}
    claim = staging_claim(job, size, labels) if job.staging_class and not job.staging_claim else None
    claim_name = job.staging_claim or (claim["metadata"]["name"] if claim else None)
    token_env = [{"name": "RAY_AUTH_MODE", "value": "token"},
                 {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": TOKEN_SECRET, "key": "token"}}}]
    node_env = token_env + ([{"name": "THRESHER_STAGING", "value": STAGING_DIR}] if claim_name else [])
    # storage credentials, where no IRSA / Workload Identity gives them: an optional Secret's keys as environment
    storage = [{"secretRef": {"name": STORAGE_SECRET, "optional": True}}]
    volumes = [{"name": "recipe", "configMap": {"name": config_map["metadata"]["name"]}}]
    mounts = [{"name": "recipe", "mountPath": RECIPE_DIR, "readOnly": True}]
    if claim_name:
        volumes.append({"name": "staging", "persistentVolumeClaim": {"claimName": claim_name}})
        mounts.append({"name": "staging", "mountPath": STAGING_DIR})

    def pod(cpus: int, mem_gb: int) -> dict:
        res = {"cpu": str(cpus), "memory": f"{mem_gb}Gi"}
        container = {"name": "ray", "image": job.image, "env": node_env, "envFrom": storage,
                     "resources": {"requests": res, "limits": res}, "volumeMounts": mounts,
                     "securityContext": {"allowPrivilegeEscalation": False}}
        # fsGroup: the staging volume writable by the image's user, where the volume type honours it
        spec = {"containers": [container], "volumes": volumes, "securityContext": {"fsGroup": RAY_GID}}
        if job.service_account:
            spec["serviceAccountName"] = job.service_account
        return {"metadata": {"labels": labels}, "spec": spec}

    cluster_spec = {
        "rayVersion": RAY_VERSION,
        "headGroupSpec": {
            # the dashboard listens in the pod; the Service is ClusterIP (never published), and token auth is on
            "serviceType": "ClusterIP",
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
            "template": pod(4, 16),
        },
        "workerGroupSpecs": [{
            "groupName": "workers", "replicas": size.nodes, "minReplicas": 0, "maxReplicas": size.nodes,
            "rayStartParams": {},
            "template": pod(CPUS_PER_NODE, CPUS_PER_NODE * size.mem_gb_per_cpu),
        }],
    }
    submitter = {"containers": [{"name": "submitter", "image": job.image, "env": token_env}],
                 "restartPolicy": "Never"}
    ray_job = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": job.name, "labels": labels},
               "spec": {"entrypoint": job.command(f"{RECIPE_DIR}/recipe.yaml"),
                        "shutdownAfterJobFinishes": True, "ttlSecondsAfterFinished": 3600,
                        "metadata": {"tool": "thresher", "output": job.output},
                        "rayClusterSpec": cluster_spec,
                        "submitterPodTemplate": {"spec": submitter}}}
    return [config_map, *([claim] if claim else []), ray_job]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the recipe in the ConfigMap) as readable ``|`` blocks; no anchors."""

    def ignore_aliases(self, data) -> bool:
        return True


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def dump(docs: list[dict]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def write_templates(provider: str, recipe: str, out: str, sets: list[str] | None = None,
                    input_gb: float | None = None, *, inputs: list[str] | None = None, output: str | None = None,
                    image: str | None = None, service_account: str | None = None,
                    staging_claim: str | None = None, staging_class: str | None = None,
                    staging_nfs: str | None = None) -> list[Path]:
    job = cluster_job(recipe, sets, inputs, output, image, service_account)
    job.staging_claim, job.staging_class, job.staging_nfs = staging_claim, staging_class, staging_nfs
    size = size_for(recipe, sets, input_gb, inputs)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = (f"# {provider} cluster for recipe {recipe}: {size.input_gb} GB input -> {size.cpus} CPUs "
              f"({size.nodes} x {CPUS_PER_NODE}), {size.mem_gb_per_cpu} GB per CPU; output {job.output}.\n"
              f"# Token auth: store the token as secret '{TOKEN_SECRET}' in the provider's secret store.\n"
              + "".join(f"# note: {n}\n" for n in job.notes))
    if provider == "kuberay":
        header += (f"# Storage credentials: IRSA / Workload Identity (--service-account), or a Secret "
                   f"'{STORAGE_SECRET}' (its keys become environment variables). The Ray tasks write the output "
                   "parts straight to the bucket: no shared volume is needed. docs/cluster.md walks through it.\n")
        path = out_dir / f"{job.name}-kuberay.yaml"
        path.write_text(header + dump(kuberay_manifests(job, size)))
    else:
        header += ("# The Ray tasks write the output parts straight to the bucket: the nodes need no shared "
                   "filesystem.\n")
        header += (f"# Start: ray up {job.name}-{provider}.yaml; run: ray exec {job.name}-{provider}.yaml "
                   f"{shlex.quote(launcher_run_command(provider, job))}\n")
        path = out_dir / f"{job.name}-{provider}.yaml"
        path.write_text(header + dump([launcher_config(provider, job, size)]))
    return [path]
