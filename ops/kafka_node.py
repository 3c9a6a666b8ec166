"""Apache Kafka (KRaft) from Maven Central's jars: one node, or a cluster of KAFKA_BROKERS
nodes on loopback, each broker and controller."""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from pathlib import Path

from core.settings import Settings

KAFKA_VERSION = "4.1.2"
REPO_ROOT = Path(__file__).resolve().parent.parent
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"


def jar_dir() -> Path:
    return REPO_ROOT / ".cache" / f"kafka-{KAFKA_VERSION}"


def fetch_jars() -> Path:
    """Resolve the broker's classpath with Maven once; later calls reuse the cache."""
    target = jar_dir()
    marker = target / ".complete"
    if marker.exists():
        return target
    if shutil.which("mvn") is None:
        raise RuntimeError("mvn is not installed; run `make setup`")
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            # --strict-checksums: a jar whose checksum does not match is refused.
            "mvn", "-q", "-B", "--strict-checksums", "-f", str(POM),
            "dependency:copy-dependencies", f"-DoutputDirectory={target}",
        ],
        check=True,
    )  # fmt: skip
    marker.write_text(KAFKA_VERSION + "\n")
    return target


def classpath() -> str:
    return f"{fetch_jars()}/*"


def node_name(settings: Settings, node: int) -> str:
    """The component name of node `node`: `kafka` alone, `kafka-<n>` in a cluster."""
    return "kafka" if settings.kafka_brokers == 1 else f"kafka-{node}"


def node_home(settings: Settings, run_dir: Path, node: int) -> Path:
    return run_dir.resolve() / node_name(settings, node)


def render_config(settings: Settings, home: Path, node: int = 1) -> Path:
    """Write server.properties and the log4j2 configuration of node `node` (1-based);
    returns the properties file. One node is a standalone quorum; KAFKA_BROKERS nodes
    are each broker and controller, the quorum's voters listed statically."""
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    properties = home / "server.properties"
    _, port, controller_port = settings.kafka_nodes[node - 1]
    controller = f"127.0.0.1:{controller_port}"
    # Kafka's internal topics (consumer offsets, transactions) as safe as the platform's.
    replicas = min(settings.kafka_replication_factor, settings.kafka_brokers)
    in_sync = min(settings.kafka_min_insync_replicas, replicas)
    if settings.kafka_brokers == 1:
        quorum = [f"controller.quorum.bootstrap.servers={controller}"]
    else:
        voters = ",".join(f"{n}@127.0.0.1:{c}" for n, _, c in settings.kafka_nodes)
        quorum = [
            f"controller.quorum.voters={voters}",
            f"default.replication.factor={replicas}",
            f"min.insync.replicas={in_sync}",
        ]
    properties.write_text(
        "\n".join(
            [
                "# Written by `make up` from the platform settings; edits are overwritten.",
                "process.roles=broker,controller",
                f"node.id={node}",
                *quorum,
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://{controller}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={data}",
                f"num.partitions={settings.topic_partitions}",
                "auto.create.topics.enable=false",
                f"offsets.topic.replication.factor={replicas}",
                "offsets.topic.num.partitions=10",
                f"transaction.state.log.replication.factor={replicas}",
                f"transaction.state.log.min.isr={in_sync}",
                f"share.coordinator.state.topic.replication.factor={replicas}",
                f"share.coordinator.state.topic.min.isr={in_sync}",
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=168",
                "",
            ]
        )
    )
    (home / "log4j2.yaml").write_text(
        f"""Configuration:
  Appenders:
    RollingFile:
      name: FILE
      fileName: {home}/server.log
      filePattern: {home}/server.log.%i
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
      Policies:
        SizeBasedTriggeringPolicy:
          size: 50MB
      DefaultRolloverStrategy:
        max: 3
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: FILE
    Logger:
      - name: kafka.request.logger
        level: WARN
"""
    )
    return properties


def _new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def cluster_id(run_dir: Path) -> str:
    """The id every node of the local cluster is formatted with, made once per run folder."""
    path = run_dir.resolve() / "kafka-cluster.id"
    if not path.exists():
        path.write_text(_new_cluster_id() + "\n")
    return path.read_text().strip()


def format_storage_once(home: Path, cluster: str | None = None) -> None:
    """Format the log directory, unless it already holds a cluster's data: a lone node
    with a new cluster id as a standalone quorum; a cluster node with `cluster`, the id
    all its nodes share (the voters come from server.properties)."""
    if (home / "data" / "meta.properties").exists():
        return
    quorum = ["--standalone"] if cluster is None else []
    subprocess.run(
        [
            "java", "-cp", classpath(), "kafka.tools.StorageTool", "format",
            f"--cluster-id={cluster or _new_cluster_id()}", "-c", str(home / "server.properties"),
            *quorum,
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip


def server_argv(settings: Settings, home: Path) -> list[str]:
    return [
        "java",
        f"-Xmx{settings.kafka_heap}",
        f"-Xms{settings.kafka_heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={home / 'log4j2.yaml'}",
        f"-Dkafka.logs.dir={home}",
        "-cp",
        classpath(),
        "kafka.Kafka",
        str(home / "server.properties"),
    ]


def active_controller(settings: Settings, timeout: float = 60) -> int:
    """The node id of the active controller (the KRaft quorum's leader), from the Admin
    API's DescribeMetadataQuorum (librdkafka has no such call, and its describe_cluster
    names a random broker in KRaft). Raises RuntimeError if the cluster cannot say."""
    result = subprocess.run(
        [
            "java", "-Xmx64m", "-Dlog4j2.level=OFF", "-cp", classpath(),
            str(REPO_ROOT / "deploy" / "kafka" / "QuorumLeader.java"), settings.kafka_bootstrap,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )  # fmt: skip
    lines = result.stdout.split()
    if result.returncode != 0 or not lines or not lines[-1].isdigit():
        raise RuntimeError(f"no quorum leader: {result.stderr.strip()[-500:]}")
    return int(lines[-1])
