"""A single-node Apache Kafka 4.x broker in KRaft mode, run with the machine's Java, no Docker.

The broker's jars come from Maven Central through `tests/harness/kafka/pom.xml`
(`mvn dependency:copy-dependencies`) and are cached under ~/.cache/socialrx, so only the first run
downloads them. The broker's log lives on disk in the directory it is given.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import procs

KAFKA_VERSION = "4.1.1"
POM = Path(__file__).resolve().parents[2] / "kafka" / "pom.xml"
CACHE = Path(os.environ.get("SOCIALRX_CACHE", Path.home() / ".cache" / "socialrx"))

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = info
"""


def libs_dir() -> Path:
    return CACHE / f"kafka-{KAFKA_VERSION}" / "libs"


def fetch_jars() -> Path:
    """Resolve the broker jars from Maven Central once; later calls reuse the cache."""
    target = libs_dir()
    marker = target / ".complete"
    if marker.exists():
        return target
    if shutil.which("mvn") is None:
        raise RuntimeError("Maven (mvn) is needed to fetch the Kafka broker jars: apt-get install -y maven")
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={target}",
            f"-Dkafka.version={KAFKA_VERSION}",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"could not fetch Kafka jars from Maven Central:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    marker.write_text(KAFKA_VERSION)
    return target


@dataclass
class LocalKafka:
    data_dir: Path
    port: int
    controller_port: int
    partitions: int = 3
    heap: str = "512m"
    node_id: int = 1
    # For a cluster: every node's "id@host:controller_port"; a single node votes for itself.
    voters: str | None = None
    cluster_id: str | None = None
    replication: int = 1
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    f"node.id={self.node_id}",
                    f"controller.quorum.voters={self.voters or f'{self.node_id}@127.0.0.1:{self.controller_port}'}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={self.data_dir / 'log'}",
                    f"num.partitions={self.partitions}",
                    f"offsets.topic.replication.factor={self.replication}",
                    "offsets.topic.num.partitions=10",
                    f"transaction.state.log.replication.factor={self.replication}",
                    f"transaction.state.log.min.isr={min(self.replication, 2)}",
                    f"share.coordinator.state.topic.replication.factor={self.replication}",
                    f"share.coordinator.state.topic.min.isr={min(self.replication, 2)}",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "",
                ]
            )
        )
        (self.data_dir / "log4j2.properties").write_text(LOG4J2.format(log=self.data_dir / "broker.log"))
        return config

    def _java(self, libs: Path, *args: str) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            *args,
        ]

    def start(self, timeout_s: float = 90.0) -> None:
        self.launch()
        procs.wait_for_port(self.port, timeout_s, self.proc, what="Kafka broker")

    def launch(self) -> None:
        """Format the log directory once, then start the JVM (without waiting for it)."""
        libs = fetch_jars()
        config = self._write_config()
        if not (self.data_dir / "log" / "meta.properties").exists():
            cluster_id = self.cluster_id or uuid.uuid4().hex[:22]
            subprocess.run(
                self._java(libs, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)),
                check=True,
                capture_output=True,
            )
        self.proc = procs.start(self._java(libs, "kafka.Kafka", str(config)), log_path=self.data_dir / "stdout.log")

    def stop(self) -> None:
        procs.stop(self.proc, timeout_s=30)

    def kill(self) -> None:
        procs.kill(self.proc)


@dataclass
class LocalKafkaCluster:
    """Three (or more) KRaft nodes, each broker and controller, for replication fault tests."""

    base_dir: Path
    size: int = 3
    heap: str = "384m"
    nodes: list[LocalKafka] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = [(procs.free_port(), procs.free_port()) for _ in range(self.size)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
        cluster_id = uuid.uuid4().hex[:22]
        self.nodes = [
            LocalKafka(
                self.base_dir / f"node{i + 1}",
                port,
                controller,
                heap=self.heap,
                node_id=i + 1,
                voters=voters,
                cluster_id=cluster_id,
                replication=min(self.size, 3),
            )
            for i, (port, controller) in enumerate(ports)
        ]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes)

    def start(self, timeout_s: float = 120.0) -> None:
        for node in self.nodes:  # all at once: the controllers need each other to elect a leader
            node.launch()
        for node in self.nodes:
            procs.wait_for_port(node.port, timeout_s, node.proc, what=f"Kafka node {node.node_id}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
