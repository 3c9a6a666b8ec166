"""The settings take the local stack's passwords from its run folder (core/credentials.py),
percent-encoded into the URLs, and check the Kafka security settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import credentials
from core.kafka import security_config
from core.settings import ConfigError, load_settings

CLEAN = (
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_PASSWORD",
    "CELERY_BROKER_URL",
    "KAFKA_BOOTSTRAP",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "RUN_DIR",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLEAN:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir("/")  # no .env


def _write(run_dir: Path, name: str, value: str) -> None:
    folder = credentials.folder(run_dir)
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(value + "\n")


def test_without_secrets_nothing_asks_for_a_password(tmp_path: Path) -> None:
    """A run folder from before authentication: the clients connect as they did."""
    settings = load_settings(run_dir=tmp_path)
    assert settings.database_url == "postgresql+psycopg://taskplatform@127.0.0.1:5432/taskplatform"
    assert settings.redis_url == settings.celery_broker_url == "redis://127.0.0.1:6379/0"
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert security_config(settings) == {"security.protocol": "plaintext"}


def test_the_run_folders_passwords_are_in_the_urls_percent_encoded(tmp_path: Path) -> None:
    _write(tmp_path, credentials.POSTGRES, "p@ss/w:rd")
    _write(tmp_path, credentials.REDIS, "r%d#s")
    settings = load_settings(run_dir=tmp_path)
    assert settings.database_url == (
        "postgresql+psycopg://taskplatform:p%40ss%2Fw%3Ard@127.0.0.1:5432/taskplatform"
    )
    assert settings.redis_url == settings.celery_broker_url == "redis://:r%25d%23s@127.0.0.1:6379/0"
    view = settings.public_view()
    assert "p%40ss" not in str(view) and "r%25d" not in str(view)
    assert view["redis_password"] == "***"


def test_redis_password_goes_into_given_urls_that_carry_none(tmp_path: Path) -> None:
    settings = load_settings(
        run_dir=tmp_path,
        redis_url="redis://h1:6379/0",
        celery_broker_url="redis://h2:6379/1",
        redis_password="a b",
    )
    assert settings.redis_url == "redis://:a%20b@h1:6379/0"
    assert settings.celery_broker_url == "redis://:a%20b@h2:6379/1"
    own = load_settings(run_dir=tmp_path, redis_url="redis://:mine@h1/0", redis_password="x")
    assert own.redis_url == "redis://:mine@h1/0"
    # A given REDIS_URL is another server's: the local stack's password is not put in it.
    _write(tmp_path, credentials.REDIS, "local")
    assert load_settings(run_dir=tmp_path, redis_url="redis://h1/0").redis_url == "redis://h1/0"


def test_the_local_kafka_with_secrets_is_sasl_as_admin_over_plain(tmp_path: Path) -> None:
    _write(tmp_path, credentials.kafka("admin"), "adm")
    _write(tmp_path, credentials.kafka("api"), "api-pw")
    settings = load_settings(run_dir=tmp_path)
    assert settings.local_kafka
    assert security_config(settings) == {
        "security.protocol": "sasl_plaintext",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "admin",
        "sasl.password": "adm",
    }
    api = load_settings(run_dir=tmp_path, kafka_sasl_username="api")
    assert (api.kafka_sasl_mechanism, api.kafka_sasl_password.get_secret_value()) == (  # type: ignore[union-attr]
        "SCRAM-SHA-512",
        "api-pw",
    )


def test_another_cluster_takes_its_own_settings(tmp_path: Path) -> None:
    _write(tmp_path, credentials.kafka("admin"), "adm")  # the local stack's: not used
    plain = load_settings(run_dir=tmp_path, kafka_bootstrap="k1:9092")
    assert not plain.local_kafka and plain.kafka_security_protocol == "PLAINTEXT"
    managed = load_settings(
        run_dir=tmp_path,
        kafka_bootstrap="k1:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
        kafka_ssl_ca_location="/etc/ca.pem",
    )
    assert security_config(managed) == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "pw",
        "ssl.ca.location": "/etc/ca.pem",
    }


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({"kafka_sasl_username": "svc", "kafka_sasl_password": "pw"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"kafka_ssl_ca_location": "/ca.pem"}, "KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
    ],
)
def test_security_settings_that_cannot_work_are_refused_naming_them(
    tmp_path: Path, values: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named) as refused:
        load_settings(run_dir=tmp_path, kafka_bootstrap="k1:9092", **values)
    assert "pw" not in str(refused.value)
