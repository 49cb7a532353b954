"""Cluster templates sized from a recipe: Ray cluster-launcher YAML (AWS, GCP) and KubeRay
RayCluster + RayJob manifests.

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
from dataclasses import dataclass
from pathlib import Path

import yaml

from thresher.pipeline.errors import ThresherError
from thresher.pipeline.recipe import load_recipe

MB_PER_CORE_SECOND = 2.0
TARGET_SECONDS = 3600
CPUS_PER_NODE = 16
TOKEN_SECRET = "thresher-ray-token"


@dataclass
class Size:
    cpus: int
    nodes: int
    mem_gb_per_cpu: int
    input_gb: float
    needs_model: bool


def size_for(recipe_name: str, sets: list[str] | None = None, input_gb: float | None = None) -> Size:
    from thresher.pipeline.io.inputs import resolve_inputs

    recipe = load_recipe(recipe_name, sets)
    ops = recipe.build_ops()
    if input_gb is None:
        try:
            files = resolve_inputs(recipe.input.paths, recipe.input.format)
            input_gb = sum(Path(f).stat().st_size for f, _, _ in files) / 1e9
        except ThresherError:
            input_gb = 100.0  # paths not visible from here (e.g. s3://): assume a mid-size corpus
    cpus = int(min(512, max(2, math.ceil(input_gb * 1000 / (MB_PER_CORE_SECOND * TARGET_SECONDS)))))
    mem = max([2] + [math.ceil(op.resources.memory_mb / 1024) for op in ops])
    return Size(cpus, max(1, math.ceil(cpus / CPUS_PER_NODE)), mem, round(input_gb, 3),
                any(op.resources.needs_model for op in ops))


def _name(recipe: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", f"thresher-{Path(recipe).stem}".lower())[:50].strip("-")


def _start_commands(fetch_token: str) -> tuple[list[str], list[str]]:
    env = f'export RAY_AUTH_MODE=token RAY_AUTH_TOKEN="$({fetch_token})"'
    head = ["ray stop", f"{env} && ray start --head --port=6379 --dashboard-host=127.0.0.1 "
                        "--autoscaling-config=~/ray_bootstrap_config.yaml --disable-usage-stats"]
    worker = ["ray stop", f"{env} && ray start --address=$RAY_HEAD_IP:6379 --disable-usage-stats"]
    return head, worker


def launcher_config(provider: str, recipe: str, size: Size) -> dict:
    name = _name(recipe)
    if provider == "aws":
        fetch = (f"aws secretsmanager get-secret-value --secret-id {TOKEN_SECRET} "
                 "--query SecretString --output text")
        prov = {"type": "aws", "region": "us-west-2", "cache_stopped_nodes": False}
        head_cfg = {"InstanceType": "m6i.2xlarge",
                    "IamInstanceProfile": {"Name": "thresher-ray-head"}}  # may read the token secret
        worker_type = "m6i.4xlarge" if size.mem_gb_per_cpu <= 4 else "r6i.4xlarge"
        worker_cfg = {"InstanceType": worker_type, "IamInstanceProfile": {"Name": "thresher-ray-head"}}
    else:
        fetch = f"gcloud secrets versions access latest --secret={TOKEN_SECRET}"
        prov = {"type": "gcp", "region": "us-west1", "availability_zone": "us-west1-a", "project_id": "YOUR-PROJECT-ID"}
        disk = {"boot": True, "autoDelete": True, "type": "PERSISTENT",
                "initializeParams": {"diskSizeGb": 100,
                                     "sourceImage": "projects/deeplearning-platform-release/global/images/family/common-cpu"}}
        head_cfg = {"machineType": "n2-standard-8", "disks": [disk],
                    "serviceAccounts": [{"email": "thresher-ray@YOUR-PROJECT-ID.iam.gserviceaccount.com",
                                         "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}]}
        machine = "n2-standard-16" if size.mem_gb_per_cpu <= 4 else "n2-highmem-16"
        worker_cfg = {"machineType": machine, "disks": [disk], "serviceAccounts": head_cfg["serviceAccounts"]}
    head_cmds, worker_cmds = _start_commands(fetch)
    return {
        "cluster_name": name,
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
        "setup_commands": ["pip install -q ~/thresher"],
        "head_start_ray_commands": head_cmds,
        "worker_start_ray_commands": worker_cmds,
    }


def kuberay_manifests(recipe: str, size: Size) -> list[dict]:
    name = _name(recipe)
    token_env = [{"name": "RAY_AUTH_MODE", "value": "token"},
                 {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": TOKEN_SECRET, "key": "token"}}}]
    image = "thresher:latest"  # an image with thresher installed (pip install . on rayproject/ray:2.60.0-py311)

    def container(cpus: int, mem_gb: int) -> dict:
        res = {"cpu": str(cpus), "memory": f"{mem_gb}Gi"}
        return {"name": "ray", "image": image, "env": token_env, "resources": {"requests": res, "limits": res},
                "securityContext": {"allowPrivilegeEscalation": False}}

    cluster_spec = {
        "rayVersion": "2.60.0",
        "headGroupSpec": {
            # the dashboard listens in the pod; the Service is ClusterIP (never published), and token auth is on
            "serviceType": "ClusterIP",
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
            "template": {"spec": {"containers": [container(4, 16)]}},
        },
        "workerGroupSpecs": [{
            "groupName": "workers", "replicas": size.nodes, "minReplicas": 0, "maxReplicas": size.nodes,
            "rayStartParams": {},
            "template": {"spec": {"containers": [container(CPUS_PER_NODE, CPUS_PER_NODE * size.mem_gb_per_cpu)]}},
        }],
    }
    ray_cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": name},
                   "spec": cluster_spec}
    ray_job = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": f"{name}-job"},
               "spec": {"entrypoint": f"python -m thresher run {Path(recipe).name} --executor ray -q",
                        "shutdownAfterJobFinishes": True, "ttlSecondsAfterFinished": 3600,
                        "rayClusterSpec": cluster_spec,
                        "submitterPodTemplate": {"spec": {"restartPolicy": "Never", "containers": [
                            {"name": "submitter", "image": image, "env": token_env}]}}}}
    return [ray_cluster, ray_job]


def write_templates(provider: str, recipe: str, out: str, sets: list[str] | None = None,
                    input_gb: float | None = None) -> list[Path]:
    size = size_for(recipe, sets, input_gb)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = (f"# {provider} cluster for recipe {recipe}: {size.input_gb} GB input -> {size.cpus} CPUs "
              f"({size.nodes} x {CPUS_PER_NODE}), {size.mem_gb_per_cpu} GB per CPU.\n"
              f"# Token auth: store the token as secret '{TOKEN_SECRET}' in the provider's secret store.\n")
    if provider == "kuberay":
        docs = kuberay_manifests(recipe, size)
        path = out_dir / f"{_name(recipe)}-kuberay.yaml"
        path.write_text(header + yaml.safe_dump_all(docs, sort_keys=False))
    else:
        path = out_dir / f"{_name(recipe)}-{provider}.yaml"
        path.write_text(header + yaml.safe_dump(launcher_config(provider, recipe, size), sort_keys=False))
    return [path]
