"""docker-compose.yml describes the native stack, with the same variables (no Docker engine
needed): it is valid Compose, every setting reaches every service that reads it, each
service runs the command `make up` runs, and the image holds what those commands need.
tests/ops/test_compose_native.py then runs those commands, as the image's user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from core.settings import Settings, load_settings
from ops import services
from ops.supervisor import Supervisor
from tests.ops import compose

# What a container is told about where things are, whatever the shell says: these settings
# are fixed by docker-compose.yml. Every other setting passes through from the shell.
CONTAINER_VALUES = {
    "KAFKA_BOOTSTRAP": "kafka:9092",
    "KAFKA_PORT": "9092",
    "KAFKA_CONTROLLER_PORT": "9093",
    "KAFKA_BROKERS": "1",
    "KAFKA_REPLICATION_FACTOR": "1",
    "KAFKA_MIN_INSYNC_REPLICAS": "1",
    "POSTGRES_PORT": "5432",
    "DATABASE_URL": "postgresql+psycopg://taskplatform@postgres:5432/taskplatform",
    "REDIS_PORT": "6379",
    "REDIS_URL": "redis://redis:6379/0",
    "CELERY_BROKER_URL": "redis://redis:6379/0",
    "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "KAFKA_SASL_MECHANISM": "PLAIN",
    "KAFKA_SASL_USERNAME": "taskplatform",
    "KAFKA_SSL_CA_LOCATION": "",
    "KAFKA_SSL_CERTIFICATE_LOCATION": "",
    "KAFKA_SSL_KEY_LOCATION": "",
    "KAFKA_SSL_KEY_PASSWORD": "",
    # Secrets the file asks the shell for: Compose refuses to start without them.
    "REDIS_PASSWORD": "${REDIS_PASSWORD:?set REDIS_PASSWORD}",
    "KAFKA_SASL_PASSWORD": "${KAFKA_SASL_PASSWORD:?set KAFKA_SASL_PASSWORD}",
    "API_HOST": "0.0.0.0",
    "API_PORT": "8000",
    "FLOWER_ADDRESS": "0.0.0.0",
    "FLOWER_PORT": "5555",
    "RUN_DIR": "/run/taskplatform",
}
# Not settings, but read by the platform's processes (libpq, ops' readiness, metrics).
OTHER_VARIABLES = {"PGPASSWORD", "READY_FILE", "PROMETHEUS_MULTIPROC_DIR"}
# A secret goes only to its reader.
ONLY_FOR = {"FLOWER_BASIC_AUTH": {"flower"}}
# How many of a service run, from the setting `make up` reads for the same.
REPLICAS = {"worker": "WORKERS", "bridge": "BRIDGES", "recorder": "RECORDERS"}
# Published ports: the host's port is the setting, as for the native stack.
PUBLISHED = {
    "kafka": "KAFKA_PORT",
    "postgres": "POSTGRES_PORT",
    "redis": "REDIS_PORT",
    "api": "API_PORT",
    "flower": "FLOWER_PORT",
}
HOST = {
    "POSTGRES_PASSWORD": "pw",
    "POSTGRES_SUPERUSER_PASSWORD": "super-pw",
    "REDIS_PASSWORD": "redis-pw",
    "KAFKA_SASL_PASSWORD": "kafka-pw",
    "FLOWER_BASIC_AUTH": "admin:pw",
}


def settings_variables() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return compose.load()


def test_the_file_validates_against_the_compose_specification() -> None:
    """The pinned check-jsonschema package carries the Compose specification's schema."""
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(compose.COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_the_interpolated_file_validates_too(document: dict[str, Any], tmp_path: Path) -> None:
    resolved = tmp_path / "resolved.json"
    resolved.write_text(json.dumps(compose.interpolate(document, HOST)))
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(resolved)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("secret", sorted(HOST))
def test_a_required_secret_left_unset_stops_compose(document: dict[str, Any], secret: str) -> None:
    others = {name: value for name, value in HOST.items() if name != secret}
    with pytest.raises(compose.MissingVariable, match=secret):
        compose.interpolate(document, others)


def test_every_setting_is_in_the_shared_block(document: dict[str, Any]) -> None:
    """A variable added to core/settings.py fails here until docker-compose.yml has it."""
    block = compose.shared_block(document)
    shared = settings_variables() - set(ONLY_FOR)
    missing = sorted(shared - set(block))
    assert not missing, f"add to x-platform-env in docker-compose.yml: {missing}"
    unknown = sorted(set(block) - shared - OTHER_VARIABLES)
    assert not unknown, f"x-platform-env names what no setting reads: {unknown}"
    for name in sorted(shared):
        expected = CONTAINER_VALUES.get(name)
        assert block[name] == expected, (
            f"{name}: {'pass it through (no value)' if expected is None else expected!r}"
            f" in x-platform-env, not {block[name]!r}"
        )


def test_every_setting_reaches_every_platform_service_that_reads_it(
    document: dict[str, Any],
) -> None:
    everything = {name: "1" for name in settings_variables()}  # as if all were set
    for service in compose.PLATFORM:
        env = compose.service_environment(document, service, {**HOST, **everything})
        for name in sorted(settings_variables() | OTHER_VARIABLES):
            readers = ONLY_FOR.get(name, set(compose.PLATFORM))
            if service in readers:
                assert name in env, f"{name} does not reach {service}"
            else:
                assert name not in env, f"{name} reaches {service}, which does not read it"


def test_each_container_loads_its_settings(document: dict[str, Any]) -> None:
    """With nothing but the two secrets set, each container's settings are valid and
    point at the other containers."""
    for service in compose.PLATFORM:
        env = compose.service_environment(document, service, HOST)
        settings = load_settings(_env_file=None, **{k.lower(): v for k, v in env.items()})
        assert settings.kafka_bootstrap == "kafka:9092"
        assert make_url(settings.database_url).host == "postgres"
        assert settings.celery_broker_url == settings.redis_url == "redis://:redis-pw@redis:6379/0"
        assert settings.kafka_replication_factor == 1  # one broker in this file
        assert settings.kafka_security_protocol == "SASL_PLAINTEXT"
        assert (settings.kafka_sasl_mechanism, settings.kafka_sasl_username) == (
            "PLAIN",
            "taskplatform",
        )
        assert settings.kafka_sasl_password is not None
        assert settings.kafka_sasl_password.get_secret_value() == "kafka-pw"
        assert settings.api_host == settings.flower_address == "0.0.0.0"


def test_the_postgres_password_is_never_put_into_a_url(document: dict[str, Any]) -> None:
    password = "p@ss:/w%rd?#&1"
    for service in compose.PLATFORM:
        env = compose.service_environment(
            document, service, {**HOST, "POSTGRES_PASSWORD": password}
        )
        assert env["PGPASSWORD"] == password  # libpq reads it, verbatim
        assert password not in env["DATABASE_URL"]
        url = make_url(env["DATABASE_URL"])
        assert (url.host, url.port, url.username, url.password) == (
            "postgres",
            5432,
            "taskplatform",
            None,
        )


def test_the_redis_password_reaches_the_urls_encoded_and_no_command_line(
    document: dict[str, Any],
) -> None:
    password = "p@ss:/w%rd?#&1"
    host = {**HOST, "REDIS_PASSWORD": password}
    for service in compose.PLATFORM:
        env = compose.service_environment(document, service, host)
        assert password not in env["REDIS_URL"] + env["CELERY_BROKER_URL"]
        settings = load_settings(_env_file=None, **{k.lower(): v for k, v in env.items()})
        for url in (settings.redis_url, settings.celery_broker_url):
            assert url == "redis://:p%40ss%3A%2Fw%25rd%3F%23%261@redis:6379/0"
    redis = compose.interpolate(document, host)["services"]["redis"]
    assert password not in " ".join(redis["command"])  # `ps` on the host shows it
    assert "$REDIS_PASSWORD" in redis["command"][-1]  # expanded by the container's shell
    assert redis["environment"]["REDISCLI_AUTH"] == password  # for its healthcheck


def test_every_kafka_listener_asks_for_the_platforms_password(
    document: dict[str, Any],
) -> None:
    password = "kafka pass-word"
    kafka = compose.interpolate(document, {**HOST, "KAFKA_SASL_PASSWORD": password})
    env = kafka["services"]["kafka"]["environment"]
    listeners = [item.split(":")[0] for item in env["KAFKA_LISTENERS"].split(",")]
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert sorted(protocols) == sorted(listeners)
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}
    for listener in listeners:
        jaas = env[f"KAFKA_LISTENER_NAME_{listener}_PLAIN_SASL_JAAS_CONFIG"]
        assert f'user_taskplatform="{password}";' in jaas
    assert password not in " ".join(kafka["services"]["kafka"]["healthcheck"]["test"])


def test_the_platforms_postgres_role_is_not_the_images_superuser(
    document: dict[str, Any],
) -> None:
    postgres = compose.interpolate(document, HOST)["services"]["postgres"]
    env = postgres["environment"]
    assert env["POSTGRES_USER"] == "postgres"
    assert env["POSTGRES_PASSWORD"] == HOST["POSTGRES_SUPERUSER_PASSWORD"]
    assert env["TASKPLATFORM_PASSWORD"] == HOST["POSTGRES_PASSWORD"]
    script = "./deploy/postgres/initdb.sh:/docker-entrypoint-initdb.d/taskplatform.sh:ro"
    assert script in postgres["volumes"]
    assert (compose.REPO / "deploy" / "postgres" / "initdb.sh").stat().st_mode & 0o111


def test_defaults_written_in_the_file_are_the_settings_defaults() -> None:
    fields = Settings.model_fields
    for name, default in compose.defaults_in_file():
        if name.lower() in fields:
            assert default == str(fields[name.lower()].default), (
                f"${{{name}:-{default}}}: core/settings.py says {fields[name.lower()].default}"
            )


def test_counts_and_ports_follow_the_settings(document: dict[str, Any]) -> None:
    raw = document["services"]
    for service, variable in REPLICAS.items():
        assert str(raw[service]["deploy"]["replicas"]).startswith(f"${{{variable}:-")
    for service, variable in PUBLISHED.items():
        assert all(
            port.startswith(f"127.0.0.1:${{{variable}:-") for port in raw[service]["ports"]
        ), f"{service} publishes {raw[service]['ports']}"
    kafka = raw["kafka"]["environment"]
    assert "HOST://127.0.0.1:${KAFKA_PORT:-9092}" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    assert "kafka-data:/var/lib/kafka/data" in raw["kafka"]["volumes"]
    assert "${KAFKA_HEAP:-" in kafka["KAFKA_HEAP_OPTS"]


def test_each_service_runs_the_command_make_up_runs(
    document: dict[str, Any], tmp_path: Path
) -> None:
    """Same arguments as ops/services.py (the interpreter's path and the worker's number
    in its host name aside), and as long to stop gracefully."""
    settings = Settings(_env_file=None, run_dir=tmp_path)  # type: ignore[call-arg]
    native = {spec.name: spec for spec in services.platform(settings, Supervisor(tmp_path))}
    resolved = compose.interpolate(document, HOST)["services"]

    def same(argv: list[str]) -> list[str]:
        return [Path(argv[0]).name, *(a.replace("worker1@", "worker@") for a in argv[1:])]

    for service, name in [("api", "api"), ("recorder", "recorder"), ("bridge", "bridge"),
                          ("worker", "worker-1"), ("flower", "flower")]:  # fmt: skip
        assert same(list(native[name].argv)) == resolved[service]["command"], service
        grace = compose.duration_seconds(resolved[service]["stop_grace_period"])
        assert grace == native[name].stop_timeout, f"{service}: stop_grace_period {grace}"
    assert resolved["migrate"]["command"] == ["python", "-m", "ops", "migrate"]


def test_platform_services_are_supervised_and_checked(document: dict[str, Any]) -> None:
    services_ = compose.interpolate(document, HOST)["services"]
    for name in compose.PLATFORM:
        service = services_[name]
        assert service["image"] == "taskplatform:local"
        assert service["init"] is True
        assert {"/run/taskplatform", "/run/metrics"} <= set(service["tmpfs"])
        assert ("build" in service) == (name == "migrate"), "the image is built once"
        if name != "migrate":
            assert service["depends_on"]["migrate"]["condition"] == (
                "service_completed_successfully"
            )
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    for name in ("kafka", "postgres", "redis"):
        assert services_["migrate"]["depends_on"][name]["condition"] == "service_healthy"
    pg_isready = services_["postgres"]["healthcheck"]["test"]
    assert pg_isready[pg_isready.index("-h") + 1] == "127.0.0.1"  # not the set-up server


def test_the_image_holds_what_the_commands_run() -> None:
    copies = dict(compose.dockerfile_copies())
    assert sorted(compose.dockerignore_allowed()) == sorted(copies)
    for package in ["core", "app", "bridge", "recorder", "tasks", "ops", "alembic"]:
        assert package in copies, f"the image lacks {package}/"
    assert "alembic.ini" in copies
    users = [
        args for instruction, args in compose.dockerfile_instructions() if instruction == "USER"
    ]
    assert users and users[-1] != ["root"], "the image should not run as root"
