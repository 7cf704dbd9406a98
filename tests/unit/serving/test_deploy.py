"""deploy/serve.yaml is a valid Serve config, and what `serve up` deploys is that file plus the local facts."""

import json
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from unison.config import load_settings
from unison.model.drift import DriftConfig
from unison.ops.stack import Endpoints
from unison.serving import deploy
from unison.serving.app import DRIFT, EVENTS, INGRESS, MODEL, STREAM, AppArgs
from unison.serving.model_server import ModelUserConfig
from unison.serving.routing import RoutingConfig
from unison.streaming.autoscaling import LagPolicy
from unison.streaming.events import FeatureEventConfig
from unison.streaming.tickets import StreamConfig

ROOT = Path(__file__).resolve().parents[3]


def test_the_file_is_a_serve_config_with_unison_parts() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    (application,) = schema.applications
    assert application.import_path == "unison.serving.app:build"
    AppArgs.model_validate(application.args)  # Unison's own parts validate too
    deployments = {d.name: d for d in application.deployments}
    assert set(deployments) == {INGRESS, MODEL, STREAM, EVENTS, DRIFT}
    assert deployments[DRIFT].num_replicas == 1  # one monitor sees every replica's counts
    DriftConfig.model_validate(deployments[DRIFT].user_config)
    StreamConfig.model_validate(deployments[STREAM].user_config)
    FeatureEventConfig.model_validate(deployments[EVENTS].user_config)
    # The streaming deployment scales on lag with Unison's policy, bounded by the input topic's partitions.
    scaling = deployments[STREAM].autoscaling_config
    assert scaling["policy"]["policy_function"] == "unison.streaming.autoscaling:LagPolicy"
    LagPolicy(**scaling["policy"]["policy_kwargs"])
    partitions = {t.name: t.partitions for t in load_settings().kafka.topics}
    assert scaling["min_replicas"] <= scaling["max_replicas"] <= partitions[load_settings().kafka.input_topic]
    assert scaling["downscale_delay_s"] > scaling["upscale_delay_s"]
    ModelUserConfig.model_validate(deployments[MODEL].user_config)
    RoutingConfig.model_validate(deployments[INGRESS].user_config)
    for d in deployments.values():  # bounded queues: overload answers 503 instead of waiting without bound
        assert d.max_queued_requests > 0 and d.max_ongoing_requests > 0
    batching = ModelUserConfig.model_validate(deployments[MODEL].user_config)
    assert deployments[MODEL].max_ongoing_requests >= 2 * batching.max_batch_size


def test_render_fills_in_address_environment_and_overrides(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path / "state", serving={"config_file": ROOT / "deploy" / "serve.yaml"})
    stack = Endpoints(ray_address="10.0.0.1:6380", ray_dashboard_url="http://10.0.0.1:8266",
                      kafka_bootstrap_servers="10.0.0.1:9093")
    config = deploy.render(settings, stack, 18123, overrides={MODEL: {"max_queued_requests": 2}})
    assert config["http_options"]["port"] == 18123
    env = config["applications"][0]["runtime_env"]["env_vars"]
    assert env["UNISON_KAFKA__BOOTSTRAP_SERVERS"] == "10.0.0.1:9093"
    assert Path(env["UNISON_MODEL__REGISTRY_DIR"]).is_absolute()
    model = next(d for d in config["applications"][0]["deployments"] if d["name"] == MODEL)
    assert model["max_queued_requests"] == 2
    ServeDeploySchema.model_validate(config)


def test_render_refuses_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "serve.yaml"
    bad.write_text(yaml.safe_dump({"applications": [{"name": "x", "import_path": "no_colon_here"}]}))
    with pytest.raises(deploy.ServeError, match="invalid Serve config"):
        deploy.render(load_settings(serving={"config_file": bad}), None, 8000)
    with pytest.raises(deploy.ServeError, match="does not exist"):
        deploy.render(load_settings(serving={"config_file": tmp_path / "missing.yaml"}), None, 8000)


def _scoring(config: dict) -> dict[str, dict]:
    return {d["name"]: d for d in config["applications"][0]["deployments"] if d["name"] in (MODEL, STREAM)}


def test_a_cpu_host_gets_no_gpus_and_no_placement_groups(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path / "state", serving={"config_file": ROOT / "deploy" / "serve.yaml"})
    for deployment in _scoring(deploy.render(settings, None, 8000)).values():
        assert "num_gpus" not in deployment["ray_actor_options"]
        assert "placement_group_bundles" not in deployment and "max_replicas_per_node" not in deployment


def test_gpu_replicas_are_chosen_by_configuration(tmp_path: Path) -> None:
    """Data-parallel replicas sharing GPUs and spread one per node, for the HTTP and the streaming path."""
    settings = load_settings(state_dir=tmp_path / "state", model={"device": "cuda", "variant": "fp16"},
                             serving={"config_file": ROOT / "deploy" / "serve.yaml", "gpus_per_replica": 0.5,
                                      "max_replicas_per_node": 1})
    config = deploy.render(settings, None, 8000)
    for deployment in _scoring(config).values():
        assert deployment["ray_actor_options"]["num_gpus"] == 0.5 and deployment["max_replicas_per_node"] == 1
    assert config["applications"][0]["runtime_env"]["env_vars"]["UNISON_MODEL__DEVICE"] == "cuda"
    ServeDeploySchema.model_validate(config)


def test_sharded_replicas_own_one_bundle_per_stage(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path / "state", model={"stages": 3, "stage_placement": "STRICT_SPREAD",
                                                                  "stage_resources": {"CPU": 1, "GPU": 1}},
                             serving={"config_file": ROOT / "deploy" / "serve.yaml"})
    config = deploy.render(settings, None, 8000)
    for deployment in _scoring(config).values():
        own = deployment["ray_actor_options"]["num_cpus"]
        assert deployment["placement_group_bundles"] == [{"CPU": own}] + [{"CPU": 1, "GPU": 1}] * 3
        assert deployment["placement_group_strategy"] == "STRICT_SPREAD"
    env = config["applications"][0]["runtime_env"]["env_vars"]
    assert env["UNISON_MODEL__STAGES"] == "3" and json.loads(env["UNISON_MODEL__STAGE_RESOURCES"]) == {"CPU": 1,
                                                                                                       "GPU": 1}
    ServeDeploySchema.model_validate(config)
