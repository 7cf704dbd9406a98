"""Configuration: precedence (kwargs > env > YAML > defaults) and error messages that name the field."""

from pathlib import Path

import pytest

from unison.config import ConfigError, load_settings

pytestmark = pytest.mark.usefixtures("clean_env")  # no UNISON_* variables, an empty working dir


def test_defaults_are_the_embedded_stack() -> None:
    settings = load_settings()
    assert settings.state_dir == Path(".unison")
    assert not settings.ray.external and not settings.kafka.external
    assert {t.name for t in settings.kafka.topics} >= {"tickets", "predictions", "tickets.dlq"}


def test_yaml_then_env_then_kwargs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "unison.yaml"
    config.write_text("data:\n  seed: 11\n  customers: 50\nkafka:\n  client_id: from-yaml\n")
    settings = load_settings()  # ./unison.yaml is found without being named
    assert (settings.data.seed, settings.data.customers, settings.kafka.client_id) == (11, 50, "from-yaml")

    monkeypatch.setenv("UNISON_DATA__SEED", "12")
    settings = load_settings(config)
    assert (settings.data.seed, settings.data.customers) == (12, 50)

    settings = load_settings(config, state_dir=tmp_path / "elsewhere")
    assert settings.state_dir == tmp_path / "elsewhere" and settings.data.seed == 12


def test_unison_config_env_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "custom.yaml"
    config.write_text("data:\n  tickets: 5\n")
    monkeypatch.setenv("UNISON_CONFIG", str(config))
    assert load_settings().data.tickets == 5
    monkeypatch.setenv("UNISON_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load_settings()


def test_invalid_values_name_field_problem_and_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("kafka:\n  topics:\n    - name: t\n      partitions: 0\n  bogus: 1\n")
    monkeypatch.setenv("UNISON_DATA__SEED", "-1")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(config)
    message = str(excinfo.value)
    assert "kafka.topics.0.partitions: Input should be greater than or equal to 1 (got 0)" in message
    assert "kafka.bogus: Extra inputs are not permitted" in message
    assert "data.seed" in message and "UNISON_DATA__SEED" in message
    assert str(config) in message


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="set both `address` and `dashboard_url`"):
        load_settings(ray={"address": "head:6380"})
    with pytest.raises(ConfigError, match="sasl_mechanism"):
        load_settings(kafka={"security_protocol": "SASL_SSL"})
    with pytest.raises(ConfigError, match="topics listed twice: a"):
        load_settings(kafka={"topics": [{"name": "a"}, {"name": "a"}]})


def test_embedded_broker_storage_is_memory_unless_s3_is_chosen() -> None:
    assert load_settings().kafka.embedded_storage == "memory://tansu/"
    assert load_settings(kafka={"embedded_storage": "s3://tansu"}).kafka.embedded_storage == "s3://tansu/"
    for bad in ("file:///var/tansu", "postgres://db/tansu", "s3://", "s3://bucket/prefix/"):
        with pytest.raises(ConfigError, match=r"kafka\.embedded_storage: .*must be `memory://<name>/` \(not "
                           r"durable\) or `s3://<bucket>/`") as excinfo:
            load_settings(kafka={"embedded_storage": bad})
        assert "UNISON_KAFKA__EMBEDDED_STORAGE" in str(excinfo.value)
    with pytest.raises(ConfigError) as excinfo:  # credentials belong in AWS_* variables, and are never echoed
        load_settings(kafka={"embedded_storage": "s3://AKIA:hunter2@bucket/"})
    assert "hunter2" not in str(excinfo.value) and "s3://***@bucket/" in str(excinfo.value)


def test_secrets_are_masked_but_passed_to_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNISON_KAFKA__SASL_PASSWORD", "hunter2")
    settings = load_settings(kafka={"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
                                    "sasl_username": "svc"})
    assert "hunter2" not in settings.model_dump_json() and "hunter2" not in repr(settings)
    options = settings.kafka.client_options()
    assert options["sasl_plain_password"] == "hunter2" and options["security_protocol"] == "SASL_SSL"


def test_non_mapping_yaml_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "list.yaml"
    config.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match=r"list\.yaml"):
        load_settings(config)


def test_environment_rebuilds_the_settings_in_another_process(tmp_path, monkeypatch) -> None:
    from unison.config import environment

    settings = load_settings(state_dir=tmp_path / "s", model={"variant": "fp32", "max_length": 64},
                             kafka={"bootstrap_servers": "k:9092", "security_protocol": "SASL_SSL",
                                    "sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "pw",
                                    "topics": [{"name": "t", "partitions": 3}]})
    env = environment(settings)
    assert env["UNISON_MODEL__VARIANT"] == "fp32" and "UNISON_MODEL__NAME" not in env  # defaults left out
    assert all(env[k].startswith("/") for k in env if k.endswith("_DIR") or k.endswith("CONFIG_FILE"))
    for key in [k for k in __import__("os").environ if k.startswith("UNISON_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    rebuilt = load_settings()
    assert rebuilt.model == settings.model.model_copy(update={"registry_dir": settings.model.registry_dir.resolve()})
    assert rebuilt.kafka.sasl_password is not None and rebuilt.kafka.sasl_password.get_secret_value() == "pw"
    assert rebuilt.kafka.topics == settings.kafka.topics


def test_the_default_model_reference_is_name_and_alias() -> None:
    from unison.config import load_settings

    assert load_settings().model.ref == "triage:production"
    assert load_settings(model={"name": "spam", "alias": "staging"}).model.ref == "spam:staging"
