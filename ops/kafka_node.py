"""Apache Kafka (KRaft) from Maven Central's jars: one node, or a cluster of KAFKA_BROKERS
nodes on loopback, each broker and controller.

Every listener asks who is calling (SASL, no TLS on loopback). The brokers and
controllers know one principal from their own configuration, `admin` (PLAIN, a super
user): they talk to each other as it, and ops uses it, so neither depends on credentials
kept in the cluster's metadata. Each platform component has a SCRAM-SHA-512 principal of
its own, written into the metadata when the storage is formatted (and kept up to date by
ops/kafka_acl.py for a cluster formatted before), with ACLs (StandardAuthorizer) that
allow it only what it needs. The passwords are in the run folder (core/credentials.py);
a run folder without them runs a PLAINTEXT node, as earlier versions did.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from core import credentials
from core.settings import Settings
from ops.credentials import private_file

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
    # The file holds the admin password: readable by its owner only.
    private_file(
        properties,
        "\n".join(
            [
                "# Written by `make up` from the platform settings; edits are overwritten.",
                "process.roles=broker,controller",
                f"node.id={node}",
                *quorum,
                *_listeners(settings.run_dir, port, controller),
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
        ),
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


def _jaas_plain(password: str) -> str:
    """The PLAIN login of the brokers' own principal: as a client (username, password)
    and as the server's one user (user_admin)."""
    admin = credentials.KAFKA_ADMIN
    return (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{admin}" password="{password}" user_{admin}="{password}";'
    )


def _listeners(run_dir: Path, port: int, controller: str) -> list[str]:
    """The listeners, and how each asks who is calling."""
    password = credentials.read(run_dir, credentials.kafka(credentials.KAFKA_ADMIN))
    if password is None:  # a run folder from before authentication
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
        ]
    return [
        f"listeners=BROKER://127.0.0.1:{port},CONTROLLER://{controller}",
        f"advertised.listeners=BROKER://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,BROKER:SASL_PLAINTEXT",
        "inter.broker.listener.name=BROKER",
        # Clients: SCRAM (the components) or PLAIN (admin); brokers and controllers: PLAIN.
        "listener.name.broker.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        "sasl.mechanism.inter.broker.protocol=PLAIN",
        "sasl.mechanism.controller.protocol=PLAIN",
        f"listener.name.broker.plain.sasl.jaas.config={_jaas_plain(password)}",
        f"listener.name.controller.plain.sasl.jaas.config={_jaas_plain(password)}",
        "listener.name.broker.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        f"super.users=User:{credentials.KAFKA_ADMIN}",
        "allow.everyone.if.no.acl.found=false",
    ]


def scram_arguments(run_dir: Path) -> list[str]:
    """`--add-scram` for every principal with a password in the run folder."""
    found = []
    for principal in credentials.KAFKA_PRINCIPALS:
        password = credentials.read(run_dir, credentials.kafka(principal))
        if password is not None:
            found += ["--add-scram", f"SCRAM-SHA-512=[name={principal},password={password}]"]
    return found


def _new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def cluster_id(run_dir: Path) -> str:
    """The id every node of the local cluster is formatted with, made once per run folder."""
    path = run_dir.resolve() / "kafka-cluster.id"
    if not path.exists():
        path.write_text(_new_cluster_id() + "\n")
    return path.read_text().strip()


def format_storage_once(
    home: Path, cluster: str | None = None, run_dir: Path | None = None
) -> bool:
    """Format the log directory, unless it already holds a cluster's data: a lone node
    with a new cluster id as a standalone quorum; a cluster node with `cluster`, the id
    all its nodes share (the voters come from server.properties). The SCRAM principals
    whose passwords `run_dir` holds are written into the metadata from the start.

    The arguments (passwords among them) reach Java through an argument file of mode
    0600, removed at once: a command line is readable by every local user. Returns
    whether it formatted."""
    if (home / "data" / "meta.properties").exists():
        return False
    quorum = ["--standalone"] if cluster is None else []
    scram = scram_arguments(run_dir) if run_dir is not None else []
    arguments = [
        "-cp", classpath(), "kafka.tools.StorageTool", "format",
        f"--cluster-id={cluster or _new_cluster_id()}", "-c", str(home / "server.properties"),
        *quorum, *scram,
    ]  # fmt: skip
    argfile = home / "format.args"
    private_file(argfile, "\n".join(_argfile_quote(a) for a in arguments) + "\n")
    try:
        subprocess.run(["java", f"@{argfile}"], check=True, capture_output=True)
    finally:
        argfile.unlink(missing_ok=True)
    return True


def _argfile_quote(argument: str) -> str:
    """One argument of a Java argument file, quoted (it may hold spaces or `"`)."""
    return '"' + argument.replace("\\", "\\\\").replace('"', '\\"') + '"'


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
    # The client's credentials go through the environment (a command line is public).
    env = {**os.environ, "KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol}
    if settings.kafka_sasl_password is not None:
        env.update(
            KAFKA_SASL_MECHANISM=settings.kafka_sasl_mechanism,
            KAFKA_SASL_USERNAME=settings.kafka_sasl_username,
            KAFKA_SASL_PASSWORD=settings.kafka_sasl_password.get_secret_value(),
        )
    result = subprocess.run(
        [
            "java", "-Xmx64m", "-Dlog4j2.level=OFF", "-cp", classpath(),
            str(REPO_ROOT / "deploy" / "kafka" / "QuorumLeader.java"), settings.kafka_bootstrap,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )  # fmt: skip
    lines = result.stdout.split()
    if result.returncode != 0 or not lines or not lines[-1].isdigit():
        raise RuntimeError(f"no quorum leader: {result.stderr.strip()[-500:]}")
    return int(lines[-1])
