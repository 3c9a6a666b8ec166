"""A single-node Apache Kafka (KRaft, broker + controller) run from Maven Central's jars."""

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
            "mvn", "-q", "-B", "-f", str(POM),
            "dependency:copy-dependencies", f"-DoutputDirectory={target}",
        ],
        check=True,
    )  # fmt: skip
    marker.write_text(KAFKA_VERSION + "\n")
    return target


def classpath() -> str:
    return f"{fetch_jars()}/*"


def render_config(settings: Settings, home: Path) -> Path:
    """Write server.properties and the log4j2 configuration; returns the properties file."""
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    properties = home / "server.properties"
    controller = f"127.0.0.1:{settings.kafka_controller_port}"
    properties.write_text(
        "\n".join(
            [
                "# Written by `make up` from the platform settings; edits are overwritten.",
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers={controller}",
                f"listeners=PLAINTEXT://127.0.0.1:{settings.kafka_port},CONTROLLER://{controller}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{settings.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={data}",
                f"num.partitions={settings.topic_partitions}",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
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


def format_storage_once(home: Path) -> None:
    """Format the log directory with a new cluster id, unless it already holds one."""
    if (home / "data" / "meta.properties").exists():
        return
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    subprocess.run(
        [
            "java", "-cp", classpath(), "kafka.tools.StorageTool", "format",
            f"--cluster-id={cluster_id}", "-c", str(home / "server.properties"), "--standalone",
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
