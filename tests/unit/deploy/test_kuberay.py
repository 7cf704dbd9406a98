"""The KubeRay manifests: rendered from deploy/serve.yaml (never drifting), valid for Ray and KubeRay, no secrets."""

import copy
import importlib.util
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema
from typer.testing import CliRunner

from unison.cli import app
from unison.config import ModelConfig
from unison.ops import kuberay
from unison.ops.kuberay import KubeRayConfig

ROOT = Path(__file__).resolve().parents[3]
KUBERAY_DIR = ROOT / "deploy" / "kuberay"
SERVE_YAML = ROOT / "deploy" / "serve.yaml"
SECRET_NAME = re.compile(r"PASSWORD|SASL_USERNAME|_USER$|SECRET|TOKEN|CREDENTIAL", re.IGNORECASE)
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("clean_env")  # no UNISON_* variables, an empty working dir


def _serve_v2(rayservice: dict[str, Any]) -> dict[str, Any]:
    text = rayservice["spec"]["serveConfigV2"]
    assert isinstance(text, str), "KubeRay wants serveConfigV2 as a YAML string"
    return dict(yaml.safe_load(text))


# ---------------------------------------------------------------------------------------------- no drift


def test_committed_manifests_are_exactly_what_the_generator_renders() -> None:
    rendered = kuberay.render(KubeRayConfig(), SERVE_YAML)
    committed = {path.name: path.read_text() for path in KUBERAY_DIR.glob("*.yaml")}
    assert set(committed) == set(rendered), "deploy/kuberay/ holds other files than the generator writes"
    for name, text in rendered.items():
        assert committed[name] == text, (f"deploy/kuberay/{name} is stale (deploy/serve.yaml or the generator "
                                         "changed): run `.venv/bin/unison deploy kuberay` and commit the result")


def test_serve_config_v2_is_serve_yaml_with_only_the_intended_changes(rayservice: dict[str, Any]) -> None:
    config = KubeRayConfig()
    expected = copy.deepcopy(yaml.safe_load(SERVE_YAML.read_text()))
    expected["proxy_location"] = "EveryNode"
    expected["http_options"].update(host="0.0.0.0", port=8000)
    for app_ in expected["applications"]:
        for deployment in app_["deployments"]:
            if deployment["name"] == "Model":
                deployment["autoscaling_config"].update(min_replicas=config.model_min_replicas,
                                                        max_replicas=config.model_max_replicas)
            if deployment["name"] == "StreamConsumer":
                deployment["autoscaling_config"]["max_replicas"] = config.stream_max_replicas
    assert _serve_v2(rayservice) == expected


@pytest.mark.parametrize("which", ["deploy/serve.yaml", "serveConfigV2", "serveConfigV2 on GPUs"])
def test_every_serve_config_validates_with_serves_own_schema(which: str, rayservice: dict[str, Any]) -> None:
    if which == "deploy/serve.yaml":
        config = yaml.safe_load(SERVE_YAML.read_text())
    elif which == "serveConfigV2":
        config = _serve_v2(rayservice)
    else:
        config = kuberay.serve_config_v2(kuberay.load_serve_config(SERVE_YAML), KubeRayConfig(serve_gpus=0.5))
    ServeDeploySchema.model_validate(config)


def test_serve_gpus_move_both_scoring_deployments_to_cuda_with_the_same_variant() -> None:
    rendered = kuberay.serve_config_v2(kuberay.load_serve_config(SERVE_YAML),
                                       KubeRayConfig(serve_gpus=1, gpu_variant="fp16"))
    by_name = {d["name"]: d for a in rendered["applications"] for d in a["deployments"]}
    for name in ("Model", "StreamConsumer"):
        options = by_name[name]["ray_actor_options"]
        assert options["num_gpus"] == 1
        assert options["runtime_env"]["env_vars"] == {"UNISON_MODEL__DEVICE": "cuda", "UNISON_MODEL__VARIANT": "fp16"}
    assert "num_gpus" not in by_name["Ingress"]["ray_actor_options"]


def test_a_serve_config_without_the_model_deployment_is_refused(tmp_path: Path) -> None:
    broken = yaml.safe_load(SERVE_YAML.read_text())
    for app_ in broken["applications"]:
        app_["deployments"] = [d for d in app_["deployments"] if d["name"] != "Model"]
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(kuberay.KubeRayError, match="no Model deployment"):
        kuberay.render(KubeRayConfig(), path)


# ---------------------------------------------------------------------------------------------- KubeRay fields


def test_rayservice_has_the_crd_fields(rayservice: dict[str, Any], project: Any) -> None:
    assert rayservice["apiVersion"] == "ray.io/v1" and rayservice["kind"] == "RayService"
    spec = rayservice["spec"]
    assert set(spec) >= {"serveConfigV2", "rayClusterConfig"}
    cluster = spec["rayClusterConfig"]
    assert cluster["rayVersion"] == project.ray
    assert cluster["enableInTreeAutoscaling"] is True
    assert {g["groupName"] for g in cluster["workerGroupSpecs"]} == {"cpu", "gpu"}
    for group in cluster["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_rayjob_runs_the_batch_pipeline_on_its_own_cluster(rayjob: dict[str, Any], project: Any) -> None:
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    assert spec["rayClusterSpec"]["rayVersion"] == project.ray
    assert spec["shutdownAfterJobFinishes"] is True
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["python", "pipelines/batch_predict.py"]
    assert (ROOT / argv[1]).is_file()
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"working_dir": kuberay.APP_DIR}


def test_rayjob_arguments_are_accepted_by_the_pipeline(rayjob: dict[str, Any]) -> None:
    spec = importlib.util.spec_from_file_location("batch_predict", ROOT / "pipelines" / "batch_predict.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    job = module.parse(shlex.split(rayjob["spec"]["entrypoint"])[2:])
    assert job.tickets.startswith(kuberay.DATA_DIR) and job.output.startswith(kuberay.DATA_DIR)
    gpu = module.parse(shlex.split(kuberay.batch_entrypoint(KubeRayConfig(batch_gpus_per_actor=0.5,
                                                                          job_gpu_workers=1)))[2:])
    assert (gpu.device, gpu.variant, gpu.gpus_per_actor) == ("cuda", "fp16", 0.5)


def test_gpu_worker_groups_request_nvidia_gpus_and_run_the_gpu_image(ray_clusters: dict[str, Any]) -> None:
    config = KubeRayConfig()
    for owner, cluster in ray_clusters.items():
        groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
        gpu = groups["gpu"]["template"]["spec"]
        (container,) = gpu["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert int(limits["nvidia.com/gpu"]) >= 1 and requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"], owner
        assert container["image"] == config.worker_gpu_image
        assert any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])
        for template in [groups["cpu"]["template"], cluster["headGroupSpec"]["template"]]:
            for c in template["spec"]["containers"]:
                assert "nvidia.com/gpu" not in c["resources"]["limits"], owner
                assert c["image"] == config.image


def test_the_model_reference_agrees_everywhere(rayjob: dict[str, Any], configmap: dict[str, Any]) -> None:
    settings_ref = f"{ModelConfig().name}:{ModelConfig().alias}"
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[argv.index("--model") + 1] == settings_ref
    assert f"{configmap['data']['UNISON_MODEL__NAME']}:{configmap['data']['UNISON_MODEL__ALIAS']}" == settings_ref
    from unison.batch import BatchJobConfig

    assert BatchJobConfig.model_fields["model"].default is None  # the job then scores with settings.model's


def test_the_registry_is_mounted_where_the_images_and_configmap_expect_it(
        pod_templates: dict[tuple[str, str], Any], configmap: dict[str, Any], dockerfiles: Any) -> None:
    assert configmap["data"]["UNISON_MODEL__REGISTRY_DIR"] == kuberay.REGISTRY_DIR
    for kind, instructions in dockerfiles.items():
        env = " ".join(i.args for i in instructions if i.keyword == "ENV")
        assert f"UNISON_MODEL__REGISTRY_DIR={kuberay.REGISTRY_DIR}" in env, kind
        assert f'VOLUME ["{kuberay.REGISTRY_DIR}"]' in [f"{i.keyword} {i.args}" for i in instructions], kind
        workdirs = [i.args for i in instructions if i.keyword == "WORKDIR"]
        assert workdirs[-1] == kuberay.APP_DIR, kind
    for where, template in pod_templates.items():
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in template["spec"]["volumes"]
                  if "persistentVolumeClaim" in v}
        assert claims == {"registry": "unison-registry", "data": "unison-data"}, where
        (container,) = template["spec"]["containers"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["registry"] == kuberay.REGISTRY_DIR and mounts["data"] == kuberay.DATA_DIR, where


def test_pods_run_as_the_images_non_root_user(pod_templates: dict[tuple[str, str], Any]) -> None:
    for where, template in pod_templates.items():
        context = template["spec"]["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] != 0, where


# ---------------------------------------------------------------------------------------------- credentials


def test_no_secret_value_in_any_manifest(manifests: dict[str, Any], all_containers: list[dict[str, Any]],
                                         configmap: dict[str, Any]) -> None:
    assert not any(doc["kind"] == "Secret" for docs in manifests.values() for doc in docs)
    config = KubeRayConfig()
    assert all_containers
    for container in all_containers:
        for item in container["env"]:
            if SECRET_NAME.search(item["name"]):
                assert "value" not in item, f"{item['name']} has a literal value"
                ref = item["valueFrom"]["secretKeyRef"]
                assert ref["name"] == config.secret_name and ref["key"] in kuberay.SECRET_ENV.values()
            value = item.get("value", "")
            # A credential inside a connection string may only be a reference that Kubernetes fills in.
            for secret in re.findall(r"password=([^,]*)", value) + re.findall(r"://[^@]*:([^@]*)@", value):
                assert re.fullmatch(r"\$\([A-Z0-9_]+\)", secret), f"{item['name']} embeds a credential"
    for key, value in configmap["data"].items():
        assert not SECRET_NAME.search(key) and "password" not in value.lower(), key
    for path in KUBERAY_DIR.glob("*.yaml"):
        assert not re.search(r"password=(?!\$\()", path.read_text(), re.IGNORECASE), path.name


def test_every_env_reference_is_defined_before_use(all_containers: list[dict[str, Any]],
                                                  configmap: dict[str, Any]) -> None:
    """Kubernetes leaves `$(VAR)` as literal text when VAR is not defined earlier: a broken connection string."""
    for container in all_containers:
        (source,) = container["envFrom"]
        assert source["configMapRef"]["name"] == configmap["metadata"]["name"]
        defined = set(configmap["data"])
        for item in container["env"]:
            for reference in re.findall(r"\$\(([A-Za-z0-9_]+)\)", item.get("value", "")):
                assert reference in defined, f"{item['name']} uses $({reference}) before it is defined"
            defined.add(item["name"])


def test_kafka_and_feature_store_addresses_come_from_the_configmap(configmap: dict[str, Any]) -> None:
    data = configmap["data"]
    assert data["UNISON_KAFKA__BOOTSTRAP_SERVERS"] and data["UNISON_REDIS_ADDRESS"]
    assert data["UNISON_FEAST_REGISTRY_ADDRESS"] and data["UNISON_FEATURES__PROFILE"] == "redis"


# ---------------------------------------------------------------------------------------------- metrics


def test_pod_monitors_scrape_rays_metrics_port_on_head_and_workers(
        manifests: dict[str, Any], pod_templates: dict[tuple[str, str], Any], ray_clusters: dict[str, Any]) -> None:
    monitors = {doc["spec"]["selector"]["matchLabels"]["ray.io/node-type"]: doc
                for doc in manifests["monitoring.yaml"] if doc["kind"] == "PodMonitor"}
    assert set(monitors) == {"head", "worker"}
    for monitor in monitors.values():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert "metrics" in [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]]
    for (owner, group), template in pod_templates.items():
        if owner != "RayService":
            continue
        monitor = monitors["head" if group == "head" else "worker"]
        selector = {k: v for k, v in monitor["spec"]["selector"]["matchLabels"].items() if k != "ray.io/node-type"}
        assert selector.items() <= template["metadata"]["labels"].items(), group
        (container,) = template["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in ports, f"{group} pods have no port {endpoint['port']}"
        assert ports["metrics"] == kuberay.METRICS_PORT
    for cluster in ray_clusters.values():
        groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        assert all(g["rayStartParams"]["metrics-export-port"] == str(kuberay.METRICS_PORT) for g in groups)


# ---------------------------------------------------------------------------------------------- config and CLI


def test_every_config_field_is_documented() -> None:
    for model in (KubeRayConfig, kuberay.WorkerGroup):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


@pytest.mark.parametrize("bad", [{"model_min_replicas": 5, "model_max_replicas": 2},
                                 {"serve_gpus": 1, "gpu_workers": {"cpus": 8, "memory": "32Gi", "gpus": 1,
                                                                   "min_replicas": 0, "max_replicas": 0}},
                                 {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": None},
                                 {"image": "unison:latest", "gpu_image": "unison:1-gpu"}, {"image": "unison"},
                                 {"image": "unison:1"}, {"namespace": "Not_A_Label"}, {"typo": 1}])
def test_inconsistent_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        KubeRayConfig.model_validate(bad)


def test_the_cli_renders_the_committed_files_and_check_finds_drift(tmp_path: Path) -> None:
    out = tmp_path / "kuberay"
    result = runner.invoke(app, ["deploy", "kuberay", "--out", str(out), "--serve-config", str(SERVE_YAML)])
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_text() for p in out.iterdir()} == {p.name: p.read_text() for p in KUBERAY_DIR.iterdir()}
    check = ["deploy", "kuberay", "--check", "--out", str(out), "--serve-config", str(SERVE_YAML)]
    assert runner.invoke(app, check).exit_code == 0
    (out / "rayjob.yaml").write_text((out / "rayjob.yaml").read_text().replace("triage:production", "x:y"))
    result = runner.invoke(app, check)
    assert result.exit_code == 1 and "rayjob.yaml" in result.output


def test_the_cli_takes_the_pushed_image_and_derives_the_gpu_one(tmp_path: Path) -> None:
    result = runner.invoke(app, ["deploy", "kuberay", "--out", str(tmp_path), "--serve-config", str(SERVE_YAML),
                                 "--image", "registry.example.com/unison:0.1.0-cpu", "--namespace", "ml"])
    assert result.exit_code == 0, result.output
    service = yaml.safe_load((tmp_path / "rayservice.yaml").read_text())
    images = {g["groupName"]: g["template"]["spec"]["containers"][0]["image"]
              for g in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    assert images == {"cpu": "registry.example.com/unison:0.1.0-cpu", "gpu": "registry.example.com/unison:0.1.0-gpu"}
    assert service["metadata"]["namespace"] == "ml"


def test_the_cli_reads_values_and_drops_storage_when_claims_are_disabled(tmp_path: Path) -> None:
    shutil.copytree(KUBERAY_DIR, tmp_path / "out")
    values = tmp_path / "values.yaml"
    values.write_text("registry_claim: null\ndata_claim: null\ncpu_workers: {cpus: 2, memory: 4Gi, min_replicas: 1, "
                      "max_replicas: 1}\n")
    result = runner.invoke(app, ["deploy", "kuberay", "--out", str(tmp_path / "out"), "--values", str(values),
                                 "--serve-config", str(SERVE_YAML)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "out" / "storage.yaml").exists()
    service = yaml.safe_load((tmp_path / "out" / "rayservice.yaml").read_text())
    cpu = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert cpu["maxReplicas"] == 1 and cpu["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "2"
    assert all("persistentVolumeClaim" not in v for v in cpu["template"]["spec"]["volumes"])


def test_the_cli_names_a_bad_value_and_exits_2(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("model_max_replicas: 0\n")
    result = runner.invoke(app, ["deploy", "kuberay", "--out", str(tmp_path), "--values", str(values),
                                 "--serve-config", str(SERVE_YAML)])
    assert result.exit_code == 2
    assert "model_max_replicas" in result.output


def test_deploy_is_listed_in_the_manual() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "deploy" in result.output
    result = runner.invoke(app, ["deploy", "kuberay", "--help"])
    assert result.exit_code == 0 and "RayService" in result.output
