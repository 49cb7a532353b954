"""Cluster templates: Ray's own config validation for the launcher YAML, a schema check of the
KubeRay objects, no public dashboard/GCS, the token only from secrets, sizing from data size."""

from __future__ import annotations

import re

import pytest
import yaml

from thresher.cluster.templates import kuberay_manifests, launcher_config, size_for, write_templates

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize("provider", ["aws", "gcp"])
def test_launcher_yaml_passes_rays_validation(tmp_path, provider):
    from ray.autoscaler._private.util import prepare_config, validate_config

    (path,) = write_templates(provider, "fineweb", str(tmp_path), input_gb=50)
    cfg = yaml.safe_load(path.read_text())
    validate_config(prepare_config(cfg))  # raises on any schema error
    cmds = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in cmds and "RAY_AUTH_MODE=token" in cmds
    assert "thresher-ray-token" in cmds  # the token is read from the secret store at start...
    assert not re.search(r"RAY_AUTH_TOKEN=[\"']?[A-Za-z0-9]{16}", path.read_text())  # ...never written down


def test_kuberay_objects_are_well_formed_and_private(tmp_path):
    (path,) = write_templates("kuberay", "fineweb", str(tmp_path), input_gb=50)
    docs = list(yaml.safe_load_all(path.read_text()))
    assert [d["kind"] for d in docs] == ["RayCluster", "RayJob"]
    for d in docs:
        assert d["apiVersion"] == "ray.io/v1" and DNS1123.match(d["metadata"]["name"])
    cluster = docs[0]["spec"]
    assert cluster["headGroupSpec"]["serviceType"] == "ClusterIP"
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        for c in pod["spec"]["containers"]:
            assert c["image"] and c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
            env = {e["name"]: e for e in c["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"] and "value" not in env["RAY_AUTH_TOKEN"]
    assert "hostNetwork" not in yaml.safe_dump(docs)
    job = docs[1]["spec"]
    assert "python -m thresher run" in job["entrypoint"] and job["shutdownAfterJobFinishes"] is True


def test_sizing_follows_data_size():
    small, big = size_for("fineweb", input_gb=1), size_for("fineweb", input_gb=200)
    assert small.cpus == 2 and big.cpus > small.cpus * 10
    assert big.nodes == -(-big.cpus // 16)
    cfg = launcher_config("aws", "fineweb", big)
    assert cfg["max_workers"] == big.nodes
    assert kuberay_manifests("fineweb", big)[0]["spec"]["workerGroupSpecs"][0]["maxReplicas"] == big.nodes
    assert size_for("fineweb", input_gb=1).needs_model  # language ID loads a model
