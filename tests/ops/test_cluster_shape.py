"""The cluster shape from the environment: Kafka nodes, their ports and configuration,
replication, and the names of the components `make up` starts (no process is started)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from core import credentials
from core.settings import ConfigError, Settings, load_settings
from ops import kafka_node, services
from ops.credentials import provision
from ops.stack import Stack
from ops.supervisor import StartError

SHAPE = (
    "KAFKA_BROKERS",
    "KAFKA_PORT",
    "KAFKA_CONTROLLER_PORT",
    "KAFKA_BOOTSTRAP",
    "KAFKA_REPLICATION_FACTOR",
    "KAFKA_MIN_INSYNC_REPLICAS",
    "BRIDGES",
    "RECORDERS",
    "WORKERS",
    "TEAMS",
    "TOPIC_PARTITIONS",
    "RUN_DIR",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SHAPE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir("/")  # no .env


def _settings(tmp_path: Path, **values: object) -> Settings:
    return load_settings(run_dir=tmp_path, **values)


def test_the_default_is_one_of_each(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.kafka_nodes == [(1, 9092, 9093)]
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == (1, 1)
    names = [spec.name for spec in Stack(settings).specs()]
    assert names == [
        "kafka", "postgres", "redis", "api", "recorder", "bridge", "worker-1", "flower",
    ]  # fmt: skip


def test_three_brokers_two_bridges_two_recorders_two_workers(tmp_path: Path) -> None:
    settings = _settings(tmp_path, kafka_brokers=3, bridges=2, recorders=2, workers=2)
    assert settings.kafka_nodes == [(1, 9092, 9093), (2, 9094, 9095), (3, 9096, 9097)]
    assert settings.kafka_bootstrap == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == (3, 2)
    specs = Stack(settings).specs()
    assert [spec.name for spec in specs] == [
        "kafka-1", "kafka-2", "kafka-3", "postgres", "redis", "api",
        "recorder-1", "recorder-2", "bridge-1", "bridge-2", "worker-1", "worker-2", "flower",
    ]  # fmt: skip
    assert [spec.port for spec in specs[:3]] == [9092, 9094, 9096]
    workers = [spec for spec in specs if spec.name.startswith("worker-")]
    assert [w.argv[w.argv.index("--hostname") + 1] for w in workers] == [
        "worker1@%h",
        "worker2@%h",
    ]
    assert all(services.is_infrastructure(name) for name in ("kafka-2", "postgres", "kafka"))
    assert not services.is_infrastructure("bridge-1")


def test_a_kind_names_every_component_of_it(tmp_path: Path) -> None:
    stack = Stack(_settings(tmp_path, kafka_brokers=3, bridges=2))
    assert [s.name for s in stack._select(["bridge"])] == ["bridge-1", "bridge-2"]
    assert [s.name for s in stack._select(["kafka", "bridge-2"])] == [
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "bridge-2",
    ]
    with pytest.raises(StartError, match="bridge-3"):
        stack._select(["bridge-3"])


def test_each_node_is_a_voter_with_its_own_ports_and_replicated_internal_topics(
    tmp_path: Path,
) -> None:
    provision(tmp_path, "kafka")
    settings = _settings(tmp_path, kafka_brokers=3, kafka_port=20000, kafka_controller_port=20001)
    path = kafka_node.render_config(settings, tmp_path / "kafka-2", 2)
    assert path.stat().st_mode & 0o777 == 0o600  # it holds the brokers' password
    lines = set(path.read_text().splitlines())
    assert {
        "node.id=2",
        "controller.quorum.voters=1@127.0.0.1:20001,2@127.0.0.1:20003,3@127.0.0.1:20005",
        "listeners=BROKER://127.0.0.1:20002,CONTROLLER://127.0.0.1:20003",
        "advertised.listeners=BROKER://127.0.0.1:20002",
        "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,BROKER:SASL_PLAINTEXT",
        "inter.broker.listener.name=BROKER",
        "sasl.mechanism.inter.broker.protocol=PLAIN",
        "sasl.mechanism.controller.protocol=PLAIN",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:admin",
        "allow.everyone.if.no.acl.found=false",
        "min.insync.replicas=2",
        "default.replication.factor=3",
        "offsets.topic.replication.factor=3",
        "transaction.state.log.replication.factor=3",
        "transaction.state.log.min.isr=2",
    } <= lines
    assert not any(line.startswith("controller.quorum.bootstrap.servers") for line in lines)
    # One id for the whole cluster, made once.
    assert kafka_node.cluster_id(tmp_path) == kafka_node.cluster_id(tmp_path)


def test_a_run_folder_without_kafka_secrets_keeps_a_plaintext_node(tmp_path: Path) -> None:
    """One from before authentication, whose Kafka still runs (`make down` turns it on)."""
    text = kafka_node.render_config(_settings(tmp_path), tmp_path / "kafka").read_text()
    assert "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT" in text
    assert "sasl" not in text and "authorizer" not in text


def test_format_adds_every_principal_with_its_password(tmp_path: Path) -> None:
    provision(tmp_path, "kafka")
    arguments = kafka_node.scram_arguments(tmp_path)
    for principal in ("admin", "api", "bridge", "worker", "recorder"):
        password = credentials.read(tmp_path, credentials.kafka(principal))
        assert f"SCRAM-SHA-512=[name={principal},password={password}]" in arguments


def test_a_single_node_is_a_standalone_quorum_with_one_copy(tmp_path: Path) -> None:
    text = kafka_node.render_config(_settings(tmp_path), tmp_path / "kafka").read_text()
    lines = set(text.splitlines())
    assert "controller.quorum.bootstrap.servers=127.0.0.1:9093" in lines
    assert "offsets.topic.replication.factor=1" in lines
    assert not any(line.startswith("controller.quorum.voters") for line in lines)


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"kafka_brokers": 2}, "KAFKA_BROKERS"),
        ({"kafka_brokers": 3, "kafka_controller_port": 9094}, "KAFKA_CONTROLLER_PORT"),
        ({"kafka_brokers": 3, "kafka_port": 65532}, "KAFKA_PORT"),
        ({"kafka_replication_factor": 3}, "KAFKA_REPLICATION_FACTOR"),
        ({"kafka_brokers": 3, "kafka_min_insync_replicas": 4}, "KAFKA_MIN_INSYNC_REPLICAS"),
        ({"recorders": 4}, "RECORDERS"),
        ({"bridges": 10}, "BRIDGES"),
    ],
)
def test_a_shape_that_cannot_work_names_its_variable(
    tmp_path: Path, values: dict[str, object], variable: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        _settings(tmp_path, **values)


def test_an_external_cluster_may_have_more_copies_than_local_nodes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "h1:9092,h2:9092,h3:9092")
    monkeypatch.setenv("KAFKA_REPLICATION_FACTOR", "3")
    settings = _settings(tmp_path)
    assert settings.kafka_bootstrap == "h1:9092,h2:9092,h3:9092"
    assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == (3, 2)


class _StopsTogether:
    """A supervisor whose `stop` of a member returns only once every member of its kind
    is being stopped (a barrier with a deadline), recording the order kinds end in."""

    def __init__(self, real: object, specs: list[object]) -> None:
        self.real = real
        kinds: dict[str, int] = {}
        for spec in specs:
            kind = services.group_of(spec.name)  # type: ignore[attr-defined]
            kinds[kind] = kinds.get(kind, 0) + 1
        self.barriers = {kind: threading.Barrier(n, timeout=10) for kind, n in kinds.items()}
        self.order: list[str] = []
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)  # what the specs read (the run folder)

    def stop(self, name: str, stop_signal: object, timeout: float) -> int:
        kind = services.group_of(name)
        self.barriers[kind].wait()  # raises BrokenBarrierError if stopped one by one
        with self.lock:
            if kind not in self.order:
                self.order.append(kind)
        return 1


def test_down_stops_the_members_of_each_kind_together_platform_first(tmp_path: Path) -> None:
    settings = _settings(tmp_path, kafka_brokers=3, bridges=2, recorders=2, workers=2)
    stack = Stack(settings)
    specs = stack.specs()
    fake = _StopsTogether(stack.supervisor, specs)
    stack.supervisor = fake  # type: ignore[assignment]
    stopped = stack.down(echo=False)
    assert sorted(stopped) == sorted(spec.name for spec in specs)
    assert fake.order == [
        "flower", "worker", "bridge", "recorder", "api", "redis", "postgres", "kafka",
    ]  # fmt: skip
