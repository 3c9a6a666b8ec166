"""The platform's one typed settings object, read from the environment and an optional `.env`.

Entry points call `load_settings()` once and pass the object down; nothing reads the
environment at import time. A bad value stops start-up with `ConfigError`, whose message
names the environment variable and the value at fault.
"""

from __future__ import annotations

import enum
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from core import credentials
from core.limits import Limits
from core.payloads import PayloadSchema, SchemaError, builtin_schema
from core.priority import DEFAULT_WEIGHTS, Priority, parse_priority_map

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
FUNCTION_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ConfigError(Exception):
    """Configuration that cannot work; the message names the variable and the value."""


class RoutineType(enum.StrEnum):
    INTERACTIVE = "interactive"  # someone waits for it: never staggered
    BATCH = "batch"  # throughput work: may be staggered, capped at medium by default


class RoutineSpec(BaseModel):
    """How one routine runs: where its code is and how it is scheduled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    function: str = Field(description="module:function the workers call")
    type: RoutineType = RoutineType.INTERACTIVE
    priority: Priority = Priority.MEDIUM
    max_priority: Priority | None = None
    timeout: float = Field(default=30.0, gt=0, description="soft time limit, seconds")
    retries: int = Field(default=0, ge=0, le=100)
    stagger: float = Field(default=0.0, ge=0, description="spread over this many seconds")
    batch: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="tasks that may share one Celery message when many wait (tiny routines)",
    )
    payload_schema: dict[str, Any] | None = Field(
        default=None,
        description="JSON Schema of the payload, checked at submit; without it, a built-in "
        "function's own model (core.payloads), else any JSON object",
    )
    _payload: PayloadSchema | None = PrivateAttr(default=None)

    @field_validator("function")
    @classmethod
    def _function_path(cls, value: str) -> str:
        if not FUNCTION_PATTERN.match(value):
            raise ValueError(f"{value!r} is not of the form module.path:function")
        return value

    @model_validator(mode="after")
    def _priorities_agree(self) -> RoutineSpec:
        if self.stagger and self.type is not RoutineType.BATCH:
            raise ValueError("only batch routines may be staggered")
        if self.max_priority is not None and self.priority.rank < self.max_priority.rank:
            raise ValueError(
                f"default priority {self.priority} is above max_priority {self.max_priority}"
            )
        return self

    @model_validator(mode="after")
    def _payload_schema_compiles(self) -> RoutineSpec:
        # Compiled once, here: a schema that cannot work stops start-up naming the routine.
        if self.payload_schema is not None:
            try:
                self._payload = PayloadSchema(self.payload_schema)
            except SchemaError as exc:
                raise ValueError(f"payload_schema: {exc}") from None
        return self

    @property
    def payload(self) -> PayloadSchema | None:
        """The payload's schema, compiled; None: any JSON object."""
        if self.payload_schema is not None:
            return self._payload
        return builtin_schema(self.function)

    @property
    def highest_priority(self) -> Priority:
        if self.max_priority is not None:
            return self.max_priority
        return Priority.MEDIUM if self.type is RoutineType.BATCH else Priority.highest()

    @property
    def hard_timeout(self) -> float:
        """The hard time limit: the soft one plus a grace for clean-up."""
        return self.timeout + max(1.0, self.timeout * 0.1)


BUILTIN_ROUTINES: dict[str, RoutineSpec] = {
    "noop": RoutineSpec(function="tasks.routines:noop", timeout=10, batch=32),
    "echo": RoutineSpec(function="tasks.routines:echo", timeout=10, batch=32),
    "sleep": RoutineSpec(function="tasks.routines:sleep", timeout=120),
    "cpu": RoutineSpec(function="tasks.routines:cpu", timeout=120, max_priority=Priority.HIGH),
    "fail": RoutineSpec(function="tasks.routines:fail", timeout=10, retries=3),
}


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything configurable, with defaults that make a working development platform."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # Teams, routines and priorities.
    teams: Annotated[list[str], NoDecode] = ["alpha", "bravo", "charlie"]
    routines: dict[str, RoutineSpec] = Field(default_factory=dict)
    priority_weights: Annotated[dict[Priority, int], NoDecode] = dict(DEFAULT_WEIGHTS)
    flood_window_seconds: float = Field(default=10.0, gt=0)
    flood_quota: Annotated[dict[Priority, int], NoDecode] = {}

    # Kafka.
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    kafka_bootstrap: str = ""
    request_topic_prefix: str = "tasks."
    status_topic: str = "tasks.status"
    dlq_topic: str = "tasks.dlq"
    topic_partitions: int = Field(default=3, ge=1, le=256)
    kafka_produce_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    # The largest message any platform client produces; every other size limit derives
    # from it and RESULT_MAX_BYTES (core.limits).
    kafka_message_max_bytes: int = Field(default=1_048_576, ge=65_536, le=100_000_000)
    kafka_heap: str = "512m"
    consumer_group_prefix: str = "taskplatform"
    # The cluster `make up` runs: one node, or KAFKA_BROKERS nodes that are each broker and
    # controller (a controller quorum of them). Node n listens on KAFKA_PORT + 2(n-1) and
    # its controller on KAFKA_CONTROLLER_PORT + 2(n-1).
    kafka_brokers: int = Field(default=1, ge=1, le=9)
    # Of the platform's topics (and, on the local cluster, Kafka's internal ones); default:
    # min(3, KAFKA_BROKERS) copies, a majority of them in sync for a write (2 of 3).
    kafka_replication_factor: int = Field(default=0, ge=0, le=9)
    kafka_min_insync_replicas: int = Field(default=0, ge=0, le=9)
    # How clients prove who they are (README, "Configuration"). Unset, the local stack's
    # generated credentials are used once it has them (SASL/SCRAM, `admin` for tools),
    # else PLAINTEXT; for another cluster, say what it asks for.
    kafka_security_protocol: Literal["", "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = ""
    kafka_sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str = ""
    kafka_ssl_certificate_location: str = ""
    kafka_ssl_key_location: str = ""
    kafka_ssl_key_password: SecretStr | None = None
    _local_kafka: bool = PrivateAttr(default=True)

    # Postgres and Redis.
    postgres_port: int = Field(default=5432, ge=1, le=65535)
    database_url: str = ""
    redis_port: int = Field(default=6379, ge=1, le=65535)
    redis_url: str = ""
    celery_broker_url: str = ""
    # Put into REDIS_URL and CELERY_BROKER_URL where a redis:// URL carries no password;
    # unset, the local stack's generated one when REDIS_URL is not given.
    redis_password: SecretStr | None = None

    # Processes.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_workers: int = Field(default=2, ge=1, le=64)
    api_threads: int = Field(default=16, ge=1, le=256)
    api_max_body_bytes: int = Field(default=1_048_576, ge=1024)
    api_batch_max: int = Field(default=1000, ge=1)
    payload_max_depth: int = Field(default=64, ge=1)
    result_max_bytes: int = Field(default=262_144, ge=1024)
    # Per team: tasks per second (sustained) and burst; TEAM_RATE_LIMITS overrides per team.
    rate_limit: float = Field(default=2000.0, gt=0)
    rate_burst: int = Field(default=20_000, ge=1)
    team_rate_limits: Annotated[dict[str, float], NoDecode] = {}
    flower_port: int = Field(default=5555, ge=1, le=65535)
    flower_address: str = "127.0.0.1"
    flower_basic_auth: SecretStr | None = None
    # When set, the API's /metrics asks for `Authorization: Bearer <METRICS_TOKEN>`.
    metrics_token: SecretStr | None = None
    workers: int = Field(default=1, ge=0, le=32)
    # Bridges and recorders `make up` starts in their consumer groups (each beyond the
    # partitions it could read would idle).
    bridges: int = Field(default=1, ge=1, le=64)
    recorders: int = Field(default=1, ge=1, le=64)
    worker_concurrency: int = Field(default=2, ge=1, le=256)
    # Celery's own task events (task-received, -started, …) for Flower's task pages; off by
    # default: they cost ~10% of throughput and statuses already travel as status events.
    # Flower can switch them on at run time (celery control enable_events).
    celery_task_events: bool = False
    # Tasks the bridge keeps on the Celery queues beyond the worker slots, so a worker
    # never waits for the bridge; default: as many as there are slots.
    dispatch_headroom: int | None = Field(default=None, ge=0)
    bridge_max_waiting: int = Field(default=20_000, ge=100)
    task_lost_retries: int = Field(default=2, ge=0, le=20)

    # Lifecycle: scheduled runs, cancel, waiting.
    schedule_max_days: float = Field(default=30.0, gt=0, le=366)
    # A scheduled task due within this long is held by the bridge (its Kafka offset
    # uncommitted); a later one is parked in Postgres and released by the recorder's
    # releaser this long before its time, halved.
    schedule_hold_seconds: float = Field(default=60.0, ge=2, le=3600)
    # How long a running task has, after a cancel with terminate, before its process is
    # interrupted (and as long again before it is killed).
    cancel_grace_seconds: float = Field(default=5.0, ge=0, le=3600)

    # Operation.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    run_dir: Path = Path(".run")

    @field_validator("teams", mode="before")
    @classmethod
    def _teams_csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("teams")
    @classmethod
    def _team_names(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one team is needed")
        for team in value:
            if not NAME_PATTERN.match(team):
                raise ValueError(
                    f"{team!r} is not a team name (lowercase letter, then up to 39 of a-z 0-9 _ -)"
                )
        if len(set(value)) != len(value):
            raise ValueError("a team is listed twice")
        return value

    @field_validator("priority_weights", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        if isinstance(value, str):
            weights = parse_priority_map(value, what="weight")
            missing = [p.value for p in Priority.ordered() if p not in weights]
            if missing:
                raise ValueError(f"{value!r} gives no weight to {', '.join(missing)}")
            if any(w < 1 for w in weights.values()):
                raise ValueError(f"{value!r}: every weight must be at least 1 (no starvation)")
            return weights
        return value

    @field_validator("team_rate_limits", mode="before")
    @classmethod
    def _team_rates(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        rates: dict[str, float] = {}
        for part in (p.strip() for p in value.split(",") if p.strip()):
            team, sep, rate = part.partition(":")
            try:
                rates[team.strip()] = float(rate)
            except ValueError:
                raise ValueError(f"{part!r} is not of the form team:tasks_per_second") from None
            if not sep or rates[team.strip()] <= 0:
                raise ValueError(f"{part!r} is not of the form team:tasks_per_second")
        return rates

    @field_validator("flood_quota", mode="before")
    @classmethod
    def _quota(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_priority_map(value, what="tasks per window")
        return value

    @field_validator("routines")
    @classmethod
    def _routine_names(cls, value: dict[str, RoutineSpec]) -> dict[str, RoutineSpec]:
        for name in value:
            if not NAME_PATTERN.match(name):
                raise ValueError(f"{name!r} is not a routine name")
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _one_credential(cls, value: SecretStr | None) -> SecretStr | None:
        """Flower splits FLOWER_BASIC_AUTH at commas into several user:password pairs, so
        `admin:pa,ss` would let a bare `ss` in: refuse what it would misread."""
        if value is None:
            return value
        user, sep, password = value.get_secret_value().partition(":")
        if "," in value.get_secret_value():
            raise ValueError("must not hold a comma (Flower reads one as a second credential)")
        if not sep or not user or not password:
            raise ValueError("must be user:password, with neither empty")
        return value

    @field_validator("kafka_brokers")
    @classmethod
    def _quorum(cls, value: int) -> int:
        if value == 2:
            raise ValueError("a quorum of two controllers survives no loss: use 1, or 3 or more")
        return value

    @model_validator(mode="after")
    def _cluster_shape(self) -> Settings:
        """Derive and check the replication and process counts (frozen: set once, here)."""
        ports = [port for node in self.kafka_nodes for port in node[1:]]
        if len(set(ports)) != len(ports) or max(ports) > 65535:
            raise ValueError(
                f"KAFKA_PORT {self.kafka_port} and KAFKA_CONTROLLER_PORT "
                f"{self.kafka_controller_port}: the {self.kafka_brokers} node(s) need distinct "
                f"ports {sorted(ports)} (node n: each port + 2(n-1)), all at most 65535"
            )
        local = not self.kafka_bootstrap
        replicas = self.kafka_replication_factor or min(3, self.kafka_brokers)
        if local and replicas > self.kafka_brokers:
            raise ValueError(
                f"KAFKA_REPLICATION_FACTOR: {replicas} copies need at least as many brokers "
                f"(KAFKA_BROKERS is {self.kafka_brokers})"
            )
        in_sync = self.kafka_min_insync_replicas or (1 if replicas <= 2 else replicas // 2 + 1)
        if in_sync > replicas:
            raise ValueError(
                f"KAFKA_MIN_INSYNC_REPLICAS: {in_sync} is more than the {replicas} copies "
                "(KAFKA_REPLICATION_FACTOR): no write could ever succeed"
            )
        object.__setattr__(self, "kafka_replication_factor", replicas)
        object.__setattr__(self, "kafka_min_insync_replicas", in_sync)
        request_partitions = self.topic_partitions * len(self.teams)
        if self.bridges > request_partitions:
            raise ValueError(
                f"BRIDGES: {self.bridges} bridges share {request_partitions} request partitions "
                "(TOPIC_PARTITIONS x teams); the extra ones would idle"
            )
        if self.recorders > self.topic_partitions:
            raise ValueError(
                f"RECORDERS: {self.recorders} recorders share the status topic's "
                f"{self.topic_partitions} partitions (TOPIC_PARTITIONS); the extra ones would idle"
            )
        return self

    @model_validator(mode="after")
    def _derive_urls(self) -> Settings:
        # Frozen model: derived defaults are set once, here. The local stack's passwords
        # come from its run folder (core.credentials), percent-encoded into the URLs.
        self._local_kafka = not self.kafka_bootstrap
        try:
            self._derive_kafka_credentials()
            pg_password = _userinfo(credentials.read(self.run_dir, credentials.POSTGRES))
            if self.redis_password is None and not self.redis_url:
                local = credentials.read(self.run_dir, credentials.REDIS)
                if local is not None:
                    object.__setattr__(self, "redis_password", SecretStr(local))
        except PermissionError as exc:
            raise ValueError(f"RUN_DIR: {exc}") from None
        derived = {
            "kafka_bootstrap": ",".join(f"127.0.0.1:{node[1]}" for node in self.kafka_nodes),
            "database_url": (
                f"postgresql+psycopg://taskplatform{pg_password}@127.0.0.1:{self.postgres_port}"
                "/taskplatform"
            ),
            "redis_url": f"redis://127.0.0.1:{self.redis_port}/0",
        }
        for name, default in derived.items():
            if not getattr(self, name):
                object.__setattr__(self, name, default)
        if not self.celery_broker_url:
            object.__setattr__(self, "celery_broker_url", self.redis_url)
        if self.redis_password is not None:
            password = self.redis_password.get_secret_value()
            for name in ("redis_url", "celery_broker_url"):
                object.__setattr__(self, name, _with_password(getattr(self, name), password))
        problems = self.limits.problems()
        if problems:
            raise ValueError("; ".join(problems))
        reserved = {self.status_topic, self.dlq_topic}
        for team in self.teams:
            if self.request_topic(team) in reserved:
                raise ValueError(
                    f"TEAMS: team {team!r} would share a topic with {sorted(reserved)}"
                )
        return self

    def _derive_kafka_credentials(self) -> None:
        """KAFKA_SECURITY_PROTOCOL and the SASL settings, completed for the local stack
        from its run folder (the `admin` principal over PLAIN, for tools), and checked."""
        generated = self._local_kafka and (
            credentials.read(self.run_dir, credentials.kafka(credentials.KAFKA_ADMIN)) is not None
        )
        protocol = self.kafka_security_protocol or ("SASL_PLAINTEXT" if generated else "PLAINTEXT")
        object.__setattr__(self, "kafka_security_protocol", protocol)
        if protocol.startswith("SASL"):
            if not self.kafka_sasl_username and self._local_kafka:
                object.__setattr__(self, "kafka_sasl_username", credentials.KAFKA_ADMIN)
            if not self.kafka_sasl_mechanism:
                admin = self._local_kafka and self.kafka_sasl_username == credentials.KAFKA_ADMIN
                mechanism = "PLAIN" if admin else "SCRAM-SHA-512"
                object.__setattr__(self, "kafka_sasl_mechanism", mechanism)
            if self.kafka_sasl_password is None and self._local_kafka:
                name = credentials.kafka(self.kafka_sasl_username)
                local = credentials.read(self.run_dir, name)
                if local is not None:
                    object.__setattr__(self, "kafka_sasl_password", SecretStr(local))
            if not self.kafka_sasl_username or self.kafka_sasl_password is None:
                raise ValueError(
                    f"KAFKA_SECURITY_PROTOCOL {protocol} needs KAFKA_SASL_USERNAME and "
                    "KAFKA_SASL_PASSWORD"
                )
        elif self.kafka_sasl_username or self.kafka_sasl_password is not None:
            raise ValueError(
                f"KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD are set but KAFKA_SECURITY_PROTOCOL is "
                f"{protocol}: use SASL_PLAINTEXT or SASL_SSL"
            )
        tls_files = (
            self.kafka_ssl_ca_location,
            self.kafka_ssl_certificate_location,
            self.kafka_ssl_key_location,
        )
        if not protocol.endswith("SSL") and (any(tls_files) or self.kafka_ssl_key_password):
            raise ValueError(
                f"KAFKA_SSL_* settings are set but KAFKA_SECURITY_PROTOCOL is {protocol}: "
                "use SSL or SASL_SSL"
            )

    # Derived views.

    @property
    def local_kafka(self) -> bool:
        """Whether Kafka is the local stack's own (KAFKA_BOOTSTRAP not given): `ops` runs
        it, gives each component its own principal and keeps their ACLs."""
        return self._local_kafka

    @property
    def kafka_nodes(self) -> list[tuple[int, int, int]]:
        """(node id, broker port, controller port) of each node `make up` runs."""
        return [
            (n, self.kafka_port + 2 * (n - 1), self.kafka_controller_port + 2 * (n - 1))
            for n in range(1, self.kafka_brokers + 1)
        ]

    @property
    def limits(self) -> Limits:
        return Limits(
            message_max_bytes=self.kafka_message_max_bytes,
            payload_max_depth=self.payload_max_depth,
            result_max_bytes=self.result_max_bytes,
        )

    @property
    def routine_table(self) -> dict[str, RoutineSpec]:
        """Built-in routines, overridden and extended by ROUTINES."""
        return {**BUILTIN_ROUTINES, **self.routines}

    def request_topic(self, team: str) -> str:
        return f"{self.request_topic_prefix}{team}"

    @property
    def request_topics(self) -> list[str]:
        return [self.request_topic(team) for team in self.teams]

    @property
    def sync_database_url(self) -> str:
        """The URL for libraries that take a libpq URL (psycopg) rather than SQLAlchemy's."""
        return self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)

    def public_view(self) -> dict[str, Any]:
        """Settings safe to print: secrets masked."""
        data = self.model_dump(mode="json")
        for secret in sorted(SECRET_FIELDS):
            data[secret] = "***" if getattr(self, secret) else None
        for key in ("database_url", "redis_url", "celery_broker_url"):
            data[key] = re.sub(r"//([^:/@]*):[^@]+@", r"//\1:***@", data[key])
        return data


def _userinfo(password: str | None) -> str:
    """`:password` for a URL's user part, percent-encoded; empty without one."""
    return f":{quote(password, safe='')}" if password else ""


def _with_password(url: str, password: str) -> str:
    """A redis:// (rediss://) URL that carries no password, given `password`."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss"):
        return url
    authority = rest.split("/", 1)[0]
    if "@" in authority:
        user, _, _ = authority.rpartition("@")
        if ":" in user:
            return url  # it has its own
        return f"{scheme}://{user}{_userinfo(password)}@{rest.split('@', 1)[1]}"
    return f"{scheme}://{_userinfo(password)}@{rest}"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment; raise ConfigError naming what is wrong."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    except SettingsError as exc:
        # pydantic-settings could not even parse a complex value (JSON) from the environment.
        field = re.search(r'field "(\w+)"', str(exc))
        variable = field.group(1).upper() if field else "(environment)"
        cause = exc.__cause__ or exc
        raise ConfigError(f"bad configuration:\n  {variable}: not valid JSON ({cause})") from None


def settings_or_exit() -> Settings:
    """`load_settings()` for entry points: bad configuration prints the message naming the
    variable and exits with status 2."""
    try:
        return load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None


# Settings whose values are secrets: never printed.
SECRET_FIELDS = frozenset(
    {
        "flower_basic_auth",
        "metrics_token",
        "redis_password",
        "kafka_sasl_password",
        "kafka_ssl_key_password",
    }
)


def describe_validation_error(exc: ValidationError) -> str:
    lines = ["bad configuration:"]
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        variable = loc[0].upper() if loc else ""
        where = ".".join(loc[1:])
        value = error.get("input")
        shown = repr(value) if not isinstance(value, dict | list) else ""
        if loc and loc[0] in SECRET_FIELDS:
            shown = ""  # a secret is not echoed, even a wrong one
        message = error["msg"].removeprefix("Value error, ")
        detail = f" ({where})" if where else ""
        prefix = f"{variable}{detail}: " if variable else ""
        lines.append(f"  {prefix}{message}" + (f" — got {shown}" if shown else ""))
    return "\n".join(lines)
