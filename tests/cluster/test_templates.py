"""Cluster templates: Ray's own config validation for the launcher YAML; the KubeRay objects
validated against KubeRay's RayJob CRD schema and Kubernetes' ConfigMap schema (vendored in
tests/fixtures/kuberay, with where they come from); the resolved recipe (overrides applied) travels
with the job and the output is an object-store URL; no public dashboard/GCS; the token only from
secrets; sizing from data size."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from thresher.cluster.templates import (
    RECIPE_DIR,
    STAGING_DIR,
    cluster_job,
    kuberay_manifests,
    launcher_config,
    size_for,
    write_templates,
)
from thresher.pipeline.errors import ThresherError
from thresher.pipeline.recipe import parse_recipe

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kuberay"
OUT = "s3://corpus-bucket/runs/fineweb"
SETS = ["process.language_id.min_score=0.7", "output.format=parquet"]
INT32 = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def structural_to_json_schema(node):
    """A Kubernetes structural schema as JSON Schema: an object that lists its properties accepts no
    others (strict field validation) unless marked x-kubernetes-preserve-unknown-fields; intN
    formats are ranges; the x- markers and defaults go."""
    if isinstance(node, list):
        return [structural_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: structural_to_json_schema(v) for name, v in value.items()}
        elif key.startswith("x-kubernetes") or key in ("default", "format"):
            continue
        else:
            out[key] = structural_to_json_schema(value)
    if node.get("format") in INT32:
        out["minimum"], out["maximum"] = INT32[node["format"]]
    if "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def validators() -> dict[str, jsonschema.Draft202012Validator]:
    crd = yaml.safe_load((FIXTURES / "ray.io_rayjobs.subset.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    assert crd["spec"]["names"]["kind"] == "RayJob" and version["name"] == "v1"
    rayjob = structural_to_json_schema(version["schema"]["openAPIV3Schema"])
    core = {kind: structural_to_json_schema(yaml.safe_load((FIXTURES / f"{kind.lower()}.schema.yaml").read_text()))
            for kind in ("ConfigMap", "PersistentVolumeClaim")}
    return {"RayJob": jsonschema.Draft202012Validator(rayjob),
            **{kind: jsonschema.Draft202012Validator(schema) for kind, schema in core.items()}}


def kuberay_docs(tmp_path, **kw) -> list[dict]:
    kw.setdefault("output", OUT)
    (path,) = write_templates("kuberay", "fineweb", str(tmp_path), SETS, input_gb=50, **kw)
    return list(yaml.safe_load_all(path.read_text()))


def by_kind(docs: list[dict]) -> dict[str, dict]:
    assert len({d["kind"] for d in docs}) == len(docs)
    return {d["kind"]: d for d in docs}


def pods(job: dict) -> list[dict]:
    cluster = job["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]


def errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_kuberay_manifests_pass_the_crd_schemas(tmp_path):
    check = validators()
    for kw, kinds in (({"service_account": "thresher-irsa"}, ["ConfigMap", "RayJob"]),
                      ({"staging_class": "efs-sc"}, ["ConfigMap", "PersistentVolumeClaim", "RayJob"]),
                      ({"staging_claim": "shared-rwx"}, ["ConfigMap", "RayJob"])):
        docs = kuberay_docs(tmp_path / next(iter(kw)), **kw)
        assert [d["kind"] for d in docs] == kinds  # one RayCluster: the RayJob's own
        for d in docs:
            assert errors(check[d["kind"]], d) == []
            assert DNS1123.match(d["metadata"]["name"]) and len(d["metadata"]["name"]) <= 63
        assert d["apiVersion"] == "ray.io/v1" and "rayClusterSpec" in d["spec"]


def test_the_schema_check_is_not_vacuous(tmp_path):
    """A typo, a wrong type, a missing required field and a field of the wrong level are each caught."""
    check = validators()["RayJob"]
    job = by_kind(kuberay_docs(tmp_path))["RayJob"]
    bad = []
    for mutate in (
        lambda j: j["spec"].update(shutdownAfterJobFinish=True),  # typo
        lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(replicas="3"),  # string for int32
        lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].pop("groupName"),
        lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        .update(serviceAccountName="x"),  # a pod field on the container
        lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]
        ["limits"].update(cpu="four"),  # not a quantity
    ):
        broken = copy.deepcopy(job)
        mutate(broken)
        bad.append(len(errors(check, broken)))
    assert all(bad), bad


def test_the_resolved_recipe_travels_in_a_configmap(tmp_path):
    docs = by_kind(kuberay_docs(tmp_path))
    config_map, job = docs["ConfigMap"], docs["RayJob"]
    text = config_map["data"]["recipe.yaml"]
    recipe = parse_recipe(text, "configmap")  # loads as it will on the head, with the overrides applied
    assert recipe.output.path == OUT and recipe.output.format == "parquet"
    assert recipe.executor.type == "ray" and recipe.executor.address is None
    assert next(s for s in recipe.ops if s.name == "language_id").params.min_score == 0.7
    assert job["spec"]["entrypoint"] == f"python -m thresher run {RECIPE_DIR}/recipe.yaml --resume"
    for pod in pods(job):  # the ConfigMap is mounted where the entrypoint reads it
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
        assert volumes[mounts[RECIPE_DIR]["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
        assert mounts[RECIPE_DIR]["readOnly"]


def test_no_shared_volume_is_needed(tmp_path):
    """docs/storage.md: the Ray tasks write their parts to the bucket, so by default the manifests
    mount no volume and set no THRESHER_STAGING."""
    docs = by_kind(kuberay_docs(tmp_path))
    assert set(docs) == {"ConfigMap", "RayJob"}
    for pod in pods(docs["RayJob"]):
        assert [v["name"] for v in pod["spec"]["volumes"]] == ["recipe"]
        assert not [e for e in pod["spec"]["containers"][0]["env"] if e["name"] == "THRESHER_STAGING"]


def test_a_staging_volume_stays_possible(tmp_path):
    """Asked for, a ReadWriteMany claim for the driver's files is made (or an existing one used),
    mounted in the head and every worker, with THRESHER_STAGING pointing at it."""
    docs = by_kind(kuberay_docs(tmp_path, staging_class="efs-sc"))
    claim = docs["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and claim["spec"]["storageClassName"] == "efs-sc"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"  # the driver's files: small
    for pod in pods(docs["RayJob"]):
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        container = pod["spec"]["containers"][0]
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == STAGING_DIR]
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert {"name": "THRESHER_STAGING", "value": STAGING_DIR} in container["env"]
    job = by_kind(kuberay_docs(tmp_path / "existing", staging_claim="shared-rwx"))["RayJob"]
    for pod in pods(job):
        assert {"name": "staging", "persistentVolumeClaim": {"claimName": "shared-rwx"}} in pod["spec"]["volumes"]


def test_inputs_and_the_image_and_service_account_are_applied(tmp_path):
    docs = by_kind(kuberay_docs(tmp_path, inputs=["s3://corpus-bucket/crawl/*.jsonl.zst"], image="reg.example/thr:1",
                                service_account="thresher-irsa"))
    text = docs["ConfigMap"]["data"]["recipe.yaml"]
    assert parse_recipe(text).input.paths == ["s3://corpus-bucket/crawl/*.jsonl.zst"]
    for pod in pods(docs["RayJob"]):
        assert pod["spec"]["serviceAccountName"] == "thresher-irsa"
        c = pod["spec"]["containers"][0]
        assert c["image"] == "reg.example/thr:1"
        assert c["envFrom"] == [{"secretRef": {"name": "thresher-storage", "optional": True}}]


def test_the_output_must_be_an_object_store_url(tmp_path):
    with pytest.raises(ThresherError, match=r"object-store URL.*--output s3://"):
        write_templates("kuberay", "fineweb", str(tmp_path), input_gb=1)  # fineweb writes to a local path
    with pytest.raises(ThresherError, match="object-store URL"):
        write_templates("aws", "fineweb", str(tmp_path), input_gb=1, output="/mnt/out")
    assert not list(tmp_path.iterdir())


def test_a_credential_from_the_environment_is_not_written_into_the_manifests(tmp_path, monkeypatch):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("input: {paths: [s3://b/in/]}\noutput: {path: s3://b/out}\nprocess:\n"
                      "  - text_length_filter: {min_words: 1}\nname: ${HF_TOKEN:-x}\n")
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue")
    with pytest.raises(ThresherError, match=r"interpolates \$\{HF_TOKEN\}, which looks like a credential") as e:
        write_templates("kuberay", str(recipe), str(tmp_path / "k8s"), input_gb=1)
    assert "hf_secretvalue" not in str(e.value) and not (tmp_path / "k8s").exists()


def test_a_local_input_is_named_in_the_header(tmp_path):
    (path,) = write_templates("kuberay", "quickstart", str(tmp_path), input_gb=1, output=OUT, inputs=["/data/x.jsonl"])
    assert "# note: input '/data/x.jsonl' is a local path" in path.read_text()


def test_kuberay_objects_are_private_and_take_the_token_from_a_secret(tmp_path):
    ray_job = by_kind(kuberay_docs(tmp_path))["RayJob"]
    job = ray_job["spec"]
    assert job["rayClusterSpec"]["headGroupSpec"]["serviceType"] == "ClusterIP"
    containers = [c for pod in pods(ray_job) for c in pod["spec"]["containers"]]
    for c in containers + job["submitterPodTemplate"]["spec"]["containers"]:
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"] and "value" not in env["RAY_AUTH_TOKEN"]
    assert "hostNetwork" not in yaml.safe_dump(job) and job["shutdownAfterJobFinishes"] is True


@pytest.mark.parametrize("provider", ["aws", "gcp"])
def test_launcher_yaml_passes_rays_validation(tmp_path, provider):
    from ray.autoscaler._private.util import prepare_config, validate_config

    (path,) = write_templates(provider, "fineweb", str(tmp_path), SETS, input_gb=50, output=OUT)
    cfg = yaml.safe_load(path.read_text())
    validate_config(prepare_config(cfg))  # raises on any schema error
    cmds = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in cmds and "RAY_AUTH_MODE=token" in cmds
    assert "thresher-ray-token" in cmds  # the token is read from the secret store at start...
    assert not re.search(r"RAY_AUTH_TOKEN=[\"']?[A-Za-z0-9]{16}", path.read_text())  # ...never written down
    assert "~/thresher-recipe.yaml --resume" in path.read_text()  # the header says how to run it
    text = path.read_text()  # no shared filesystem: the tasks write to the bucket
    assert "mount -t nfs4" not in text and "THRESHER_STAGING" not in text and "NFS" not in text
    (path,) = write_templates(provider, "fineweb", str(tmp_path / "nfs"), SETS, input_gb=50, output=OUT,
                              staging_nfs="10.0.0.2:/thresher")
    cfg = yaml.safe_load(path.read_text())
    validate_config(prepare_config(cfg))
    mount = cfg["setup_commands"][-1]  # asked for: every node mounts the export, THRESHER_STAGING points there
    assert "mount -t nfs4" in mount and "/mnt/thresher-staging" in mount and "10.0.0.2:/thresher" in mount
    assert "THRESHER_STAGING=/mnt/thresher-staging" in " ".join(cfg["head_start_ray_commands"])
    assert "THRESHER_STAGING=" in " ".join(cfg["worker_start_ray_commands"])


def test_launcher_setup_command_writes_the_resolved_recipe(tmp_path):
    """The head's setup command, run by a real shell, writes exactly the resolved recipe."""
    job = cluster_job("fineweb", SETS, output=OUT)
    cfg = launcher_config("aws", job, size_for("fineweb", input_gb=1))
    (cmd,) = cfg["head_setup_commands"]
    subprocess.run(["bash", "-c", cmd], check=True, env={**os.environ, "HOME": str(tmp_path)})
    written = (tmp_path / "thresher-recipe.yaml").read_text()
    assert written == job.recipe_yaml
    recipe = parse_recipe(written)
    assert recipe.output.path == OUT and recipe.output.format == "parquet" and recipe.executor.type == "ray"


def test_sizing_follows_data_size():
    small, big = size_for("fineweb", input_gb=1), size_for("fineweb", input_gb=200)
    assert small.cpus == 2 and big.cpus > small.cpus * 10
    assert big.nodes == -(-big.cpus // 16)
    job = cluster_job("fineweb", output=OUT)
    assert launcher_config("aws", job, big)["max_workers"] == big.nodes
    ray_job = by_kind(kuberay_manifests(job, big))["RayJob"]
    assert ray_job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] == big.nodes
    assert size_for("fineweb", input_gb=1).needs_model  # language ID loads a model
    assert size_for("quickstart", inputs=["s3://b/x.jsonl"]).input_gb == 100.0  # a URL is never listed to size


def test_cli_writes_the_manifests(tmp_path):
    from thresher.pipeline.cli import main

    assert main(["cluster", "init", "kuberay", "quickstart", "--out", str(tmp_path), "--output", OUT,
                 "--set", "seed=7"]) == 0
    (path,) = tmp_path.glob("*-kuberay.yaml")
    config_map = next(yaml.safe_load_all(path.read_text()))
    assert parse_recipe(config_map["data"]["recipe.yaml"]).model.seed == 7
    assert main(["cluster", "init", "kuberay", "quickstart", "--out", str(tmp_path / "x")]) == 2
