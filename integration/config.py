"""Configuration: one YAML file plus ``NODEGRAPH_*`` environment overrides.

    >>> from integration.config import load_config
    >>> load_config(None, environ={"NODEGRAPH_EXECUTION__STRATEGY": "parallel"}).execution.strategy
    'parallel'

The file has the seed's ``execution_engine.yaml`` shape: ``execution``,
``resource_management``, ``caching`` and ``monitoring``. It is found, first match wins,
at ``--config FILE``, ``$NODEGRAPH_CONFIG``, ``./nodegraph.yaml``, then
``~/.config/nodegraph/config.yaml``. Environment variables override the file, with
``__`` between levels: ``NODEGRAPH_EXECUTION__MAX_WORKERS=8``. Unknown keys are errors.
A config built in code (``NodegraphConfig(execution=...)``) overrides both, field by field:
the environment still supplies what the code leaves unset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from integration.errors import ConfigError

Strategy = Literal["sequential", "parallel", "distributed"]
ENV_PREFIX = "NODEGRAPH_"
CONFIG_FILE_NAMES = (Path("nodegraph.yaml"), Path.home() / ".config" / "nodegraph" / "config.yaml")
_environ: ContextVar[Mapping[str, str] | None] = ContextVar("nodegraph_environ", default=None)
_file_data: ContextVar[Mapping[str, Any] | None] = ContextVar("nodegraph_file", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' env source, reading a given mapping instead of os.environ."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _environ.get()
        if environ is None:
            return super()._load_env_vars()
        return parse_env_vars(
            environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )

    def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
        # A section may take a plain word as shorthand (``..._FUSION=off``): what is not
        # JSON goes to the section's own validator as it is.
        try:
            return super().decode_complex_value(field_name, field, value)
        except json.JSONDecodeError:
            return value


class _FileSource(PydanticBaseSettingsSource):
    """The config file's mapping (``load_config``): the lowest of the sources."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: ``__call__`` gives the whole mapping

    def __call__(self) -> dict[str, Any]:
        return dict(_file_data.get() or {})


class _CodeSource(PydanticBaseSettingsSource):
    """Keyword arguments given in code, above the environment. A section passed as a
    model counts only for the fields it sets, so that the environment still fills the
    others (pydantic-settings merges mappings, but a model would replace them whole)."""

    def __init__(self, settings_cls: type[BaseSettings], init: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self._init = init

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: ``__call__`` gives the whole mapping

    def __call__(self) -> dict[str, Any]:
        return {
            name: value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value
            for name, value in self._init().items()
        }


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


FusionMode = Literal["auto", "off", "aggressive"]


class FusionConfig(_Section):
    """Which nodes share a Prefect task (``execution.fusion``).

    ``fusion: off`` in YAML (or ``NODEGRAPH_EXECUTION__FUSION=off``) is short for
    ``fusion: {mode: off}``.
    """

    mode: FusionMode = Field(
        default="auto",
        description="auto: fuse nodes that declare cost='cheap' or whose recorded median "
        "duration is under max_node_ms; aggressive: fuse every policy-compatible node "
        "not declared cost='expensive'; off: one task per node.",
    )
    max_node_ms: float = Field(
        default=2.0,
        ge=0,
        description="auto: a node whose recorded median duration is below this many "
        "milliseconds is cheap enough to fuse.",
    )
    batching: bool = Field(
        default=True,
        description="Group ready nodes of a batchable type with equal params into one call.",
    )


class ExecutionConfig(_Section):
    """How graphs run."""

    strategy: Strategy = Field(
        default="sequential",
        description="sequential: direct task calls; parallel: a thread or process pool; "
        "distributed: a Dask cluster.",
    )
    max_workers: int | None = Field(
        default=None, ge=1, description="Pool size for the parallel strategy (default: CPUs)."
    )
    processes: bool = Field(
        default=False, description="parallel: use a process pool instead of threads."
    )
    retry_attempts: int = Field(
        default=0, ge=0, le=50, description="Retries for nodes whose policy sets none."
    )
    # The bounds of a node's own policy (integration.graph.policy): one day, 30 days.
    retry_delay: float = Field(
        default=1.0, ge=0, le=86400, description="First retry delay (seconds) for those nodes."
    )
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        le=30 * 86400,
        description="Longest one attempt of a node may run, for nodes whose policy sets "
        "none (default: no limit).",
    )
    cancel_check_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How often a run asks the Prefect server whether it was cancelled, "
        "and publishes its progress (0: never).",
    )
    tag_node_types: bool = Field(
        default=True,
        description="Tag each task run with its node type (enables Prefect tag concurrency "
        "limits per type; costs one server round trip per task run).",
    )
    freeze_heap: bool = Field(
        default=True,
        description="Keep the cycle collector off the objects alive when a run starts "
        "(gc.freeze() for the run; see integration.graph.gcpause).",
    )
    node_paths: list[Path] = Field(
        default_factory=list, description="Extra folders of node packs, after ./nodes."
    )
    node_modules: list[str] = Field(
        default_factory=list, description="Importable modules to load as node packs."
    )
    dask_address: str | None = Field(
        default=None,
        description="distributed: the scheduler of an existing cluster (tcp://host:port); "
        "default: a temporary local cluster.",
    )
    threads_per_worker: int = Field(
        default=1, ge=1, description="distributed, local cluster: threads per worker."
    )
    worker_memory_limit: str | None = Field(
        default=None,
        description="distributed, local cluster: memory per worker ('4GB'; default: "
        "the machine's memory shared among the workers).",
    )
    worker_resources: dict[str, float] = Field(
        default_factory=dict,
        description="distributed, local cluster: extra resources every worker advertises "
        "(Dask names: GPU, MEMORY, ...).",
    )
    gpus: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="distributed, local cluster: one dask-cuda worker per GPU when pynvml "
        "finds GPUs (auto), always (on), or never (off).",
    )
    fusion: FusionConfig = Field(
        default_factory=FusionConfig,
        description="Fusing cheap nodes into shared tasks, and batching (see FusionConfig).",
    )

    @field_validator("fusion", mode="before")
    @classmethod
    def _fusion_shorthand(cls, value: Any) -> Any:
        return {"mode": value} if isinstance(value, str) else value


class ResourceManagementConfig(_Section):
    """What the local resource pool offers, and when memory spills to disk."""

    cpu_cores: float | None = Field(
        default=None, gt=0, description="Cores nodes may hold at once (default: this machine's)."
    )
    memory_mb: float | None = Field(
        default=None, gt=0, description="Memory nodes may hold at once, MB (default: RAM)."
    )
    gpu_count: float | None = Field(
        default=None, ge=0, description="GPUs (default: as many as pynvml finds)."
    )
    gpu_memory_mb: float | None = Field(
        default=None, ge=0, description="Memory of one GPU, MB (default: pynvml's reading)."
    )
    disk_space_mb: float | None = Field(default=None, ge=0, description="Scratch disk, MB.")
    network_bandwidth_mbps: float | None = Field(
        default=None, ge=0, description="Network bandwidth, Mbit/s."
    )
    offload_threshold: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Fraction of memory in use above which outputs still needed spill to "
        "disk (on Dask: the workers' spill fraction).",
    )

    def capacity_overrides(self) -> dict[str, float | None]:
        return self.model_dump(exclude={"offload_threshold"})


CacheLevel = Literal["memory", "disk", "redis", "s3"]


class RedisSettings(_Section):
    """Where the redis tier connects."""

    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "nodegraph:"
    timeout_seconds: float = Field(default=0.5, gt=0)


class S3Settings(_Section):
    """Where the s3 tier writes. Credentials also come from the standard AWS variables."""

    bucket: str = ""
    prefix: str = "nodegraph/"
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    timeout_seconds: float = Field(default=2.0, gt=0)


class CachingConfig(_Section):
    """Node result caching: which tiers, in which order, and their bounds."""

    enable: bool = Field(default=True, description="Cache node results by content key.")
    cache_levels: list[CacheLevel] = Field(
        default_factory=lambda: ["memory", "disk"],
        description="Tiers, nearest first; reads promote, writes go to every level.",
    )
    ttl_seconds: float | None = Field(default=None, gt=0, description="Entry lifetime.")
    max_cache_size_mb: float = Field(default=1024, gt=0, description="Disk tier bound.")
    memory_size_mb: float = Field(default=256, gt=0, description="Memory tier bound.")
    directory: Path | None = Field(
        default=None,
        description="Disk tier folder (default $NODEGRAPH_CACHE_DIR or ~/.cache/nodegraph).",
    )
    redis: RedisSettings = Field(default_factory=RedisSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    locking: Literal["auto", "none", "filesystem", "redis"] = Field(
        default="auto",
        description="Serialize concurrent runs per node key, so that two processes "
        "running the same graph compute each node once: 'auto' follows the tiers "
        "('redis' when a redis tier is configured, 'filesystem' otherwise), "
        "'filesystem' for one machine, 'redis' (at caching.redis.url) across machines, "
        "'none' to opt out.",
    )
    lock_directory: Path | None = Field(
        default=None,
        description="Lock files for 'filesystem' locking (default: <cache folder>/.locks).",
    )
    lock_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A node lock's lease, renewed every third of it while its node runs: "
        "a lock whose holder died is taken over at most this long after.",
    )
    secret: SecretStr | None = Field(
        default=None,
        description="The HMAC key that signs cache entries, the same on every machine "
        "sharing a redis or s3 tier (NODEGRAPH_CACHE_SECRET overrides it; default: this "
        "user's local key, see NODEGRAPH_CACHE_KEY_FILE).",
    )
    secret_block: str | None = Field(
        default=None,
        description="The name of a Prefect Secret block holding the signing secret "
        "(read by the flow process when caching.secret is not set).",
    )

    @field_validator("cache_levels")
    @classmethod
    def _distinct_levels(cls, levels: list[str]) -> list[str]:
        if len(set(levels)) != len(levels):
            raise ValueError(f"cache levels must not repeat, got {levels}")
        return levels

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> CachingConfig:
        if "s3" in self.cache_levels and not self.s3.bucket:
            raise ValueError("cache level 's3' needs caching.s3.bucket")
        return self

    def lock_kind(self) -> str:
        """The node-key lock in use: ``none``, ``filesystem`` or ``redis`` (``auto``
        follows the tiers: Redis locks where a redis tier is shared, files otherwise)."""
        if not self.enable:
            return "none"
        if self.locking == "auto":
            return "redis" if "redis" in self.cache_levels else "filesystem"
        return self.locking


class MonitoringConfig(_Section):
    """What runs report about themselves."""

    progress: bool = Field(default=True, description="Show a progress bar in `nodegraph run`.")
    prefect_console_log_level: str = Field(
        default="WARNING",
        description="Level of Prefect's console log in the CLI; the Prefect UI gets all.",
    )
    events: bool = Field(
        default=True,
        description="Emit Prefect events: nodegraph.graph.completed|failed per run, and "
        "per node unless node_events is false.",
    )
    node_events: bool = Field(
        default=True,
        description="Also emit nodegraph.node.completed|failed|cached per node (when "
        "events is true); switch off for huge graphs.",
    )
    max_node_events: int | None = Field(
        default=1000,
        ge=0,
        description="At most this many nodegraph.node.completed|cached events per run "
        "(failures always go out; the graph event counts what was left out): Prefect's "
        "server takes milliseconds to store each event. null: no limit.",
    )
    artifacts: bool = Field(
        default=True,
        description="Publish a summary table and a mermaid diagram of each run as "
        "Prefect artifacts on its flow run.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve Prometheus metrics on this port (/metrics) while runs go on, "
        "and for the life of `nodegraph serve`; 0 picks a free port.",
    )
    metrics_address: str = Field(
        default="127.0.0.1",
        description="The address /metrics listens on; 0.0.0.0 for a Prometheus on "
        "another machine or container.",
    )
    trace_sampling_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="The share of runs traced with OpenTelemetry (0: none, 1: all); "
        "export follows the OTEL_* environment variables.",
    )
    profile: bool = Field(
        default=False,
        description="Measure every node's CPU time, peak memory and output size "
        "(RunResult.profile, `nodegraph run --profile`).",
    )


class NodegraphConfig(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    resource_management: ResourceManagementConfig = Field(default_factory=ResourceManagementConfig)
    caching: CachingConfig = Field(default_factory=CachingConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Code overrides the environment, which overrides the file.
        return (
            _CodeSource(settings_cls, init_settings),
            _MappingEnvSource(settings_cls),
            _FileSource(settings_cls),
        )


def caching_for(config: NodegraphConfig, cache: bool | None) -> CachingConfig:
    """The configured caching, switched on or off where a call says so (``cache``)."""
    if cache is None:
        return config.caching
    return config.caching.model_copy(update={"enable": cache})


def find_config_file(
    explicit: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The config file to read, by the documented search order, or ``None``."""
    env = os.environ if environ is None else environ
    if explicit is not None:
        return Path(explicit)
    if env.get("NODEGRAPH_CONFIG"):
        return Path(env["NODEGRAPH_CONFIG"])
    return next((path for path in CONFIG_FILE_NAMES if path.is_file()), None)


def load_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> NodegraphConfig:
    """Read the config file (if any) and apply environment overrides.

    Raises ``ConfigError`` naming the file and key for anything it cannot use.
    """
    env = dict(os.environ if environ is None else environ)
    file = find_config_file(path, env)
    data: dict[str, Any] = {}
    where = "environment"
    if file is not None:
        where = str(file)
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {file} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: invalid YAML: {exc}") from None
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            # PyYAML's constructors raise these for tags they cannot build (!!bool maybe)
            raise ConfigError(f"{file}: invalid YAML: {type(exc).__name__}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: the config is a mapping, not {type(data).__name__}")
    unknown_env = _unknown_env_keys(env)
    if unknown_env:
        raise ConfigError(
            f"unknown nodegraph environment variable(s): {', '.join(unknown_env)}; "
            "see the README's configuration section"
        )
    token, file_token = _environ.set(env), _file_data.set(data)
    try:
        return NodegraphConfig()
    except ValidationError as exc:
        lines = [
            f"{'.'.join(str(p) for p in error['loc'])}: "
            + ("unknown key" if error["type"] == "extra_forbidden" else error["msg"])
            for error in exc.errors()
        ]
        raise ConfigError(f"invalid configuration ({where}):\n  " + "\n  ".join(lines)) from None
    finally:
        _environ.reset(token)
        _file_data.reset(file_token)


_NON_SETTINGS = {
    "NODEGRAPH_CONFIG",
    "NODEGRAPH_NODE_PATH",
    "NODEGRAPH_CACHE_DIR",
    "NODEGRAPH_CACHE_KEY_FILE",
    "NODEGRAPH_CACHE_SECRET",
    "NODEGRAPH_DEBUG",  # the CLI's tracebacks (integration.cli.failures)
}


def _unknown_env_keys(env: Mapping[str, str]) -> list[str]:
    sections = NodegraphConfig.model_fields
    unknown = []
    for key in env:
        if not key.startswith(ENV_PREFIX) or key in _NON_SETTINGS:
            continue
        section, _, field_name = key[len(ENV_PREFIX) :].lower().partition("__")
        model = sections.get(section)
        if model is None:
            unknown.append(key)
            continue
        annotation = model.annotation
        if field_name and field_name.split("__")[0] not in getattr(annotation, "model_fields", {}):
            unknown.append(key)
    return sorted(unknown)
