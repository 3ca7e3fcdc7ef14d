"""A single-node Apache Kafka 3.9 broker in KRaft mode, jars from Maven Central, on loopback."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from infra.process import InfraError, free_port, spawn, stop_group, wait_until

KAFKA_VERSION = "3.9.1"
POM = Path(__file__).resolve().parent / "pom.xml"


def cache_dir() -> Path:
    base = os.environ.get("STOREPULSE_CACHE") or os.path.expanduser("~/.cache/storepulse")
    return Path(base) / f"kafka-{KAFKA_VERSION}"


def ensure_jars() -> Path:
    """Resolve the broker's jars into the cache once (`mvn dependency:copy-dependencies`)."""
    libs = cache_dir() / "libs"
    if (libs / ".complete").exists():
        return libs
    for tool, hint in (
        ("java", "install a Java 17 JDK (apt-get install -y openjdk-17-jre-headless)"),
        ("mvn", "install Maven (apt-get install -y maven)"),
    ):
        if shutil.which(tool) is None:
            raise InfraError(f"`{tool}` not found on PATH: {hint}, or set KAFKA_BOOTSTRAP")
    staging = libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not (staging / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        raise InfraError(
            "Maven could not fetch the Kafka jars (is Maven Central reachable?):\n"
            + (result.stdout + result.stderr)[-2000:]
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (libs / ".complete").write_text(KAFKA_VERSION)
    return libs


_LOG4J = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
"""

_SERVER = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
num.partitions={partitions}
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.cleaner.dedupe.buffer.size=8388608
log.cleaner.threads=1
num.network.threads=2
num.io.threads=4
log.retention.hours=168
"""


_SCRAM = """\
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required \
username="{user}" password="{password}";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:{user};User:ANONYMOUS
allow.everyone.if.no.acl.found=false
# the controller listener (loopback, inside this process) is PLAINTEXT: its principal is ANONYMOUS
"""


@dataclass
class KafkaBroker:
    """One broker+controller process; `start()` returns only when it accepts clients.

    `stop()` then `start()` is a broker restart: same ports, same data, same cluster."""

    workdir: Path
    partitions: int = 4
    heap: str = "768m"
    # (user, password): clients must log in with SASL SCRAM-SHA-512 (the user is a super user;
    # docs/security.md lists the ACLs a deployment grants its principals instead)
    scram: tuple[str, str] | None = None
    port: int = 0
    controller_port: int = 0
    pid: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> str:
        libs = ensure_jars()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.controller_port = controller_port = self.controller_port or free_port()
        log = self.workdir / "kafka.log"
        seen = log.stat().st_size if log.exists() else 0  # a restart appends to the same log
        props = self.workdir / "server.properties"
        server = _SERVER.format(
            port=self.port,
            controller_port=controller_port,
            data=self.workdir / "data",
            partitions=self.partitions,
        )
        if self.scram:
            user, password = self.scram
            server = server.replace("PLAINTEXT://127.0.0.1", "SASL_PLAINTEXT://127.0.0.1")
            server = server.replace(
                "inter.broker.listener.name=PLAINTEXT", "inter.broker.listener.name=SASL_PLAINTEXT"
            ).replace("PLAINTEXT:PLAINTEXT", "SASL_PLAINTEXT:SASL_PLAINTEXT")
            server += _SCRAM.format(user=user, password=password)
        props.write_text(server)
        log4j = self.workdir / "log4j.properties"
        log4j.write_text(_LOG4J.format(log=log))
        java = [
            "java",
            "-Xms256m",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            f"-Dlog4j.configuration=file:{log4j}",
            "-cp",
            f"{libs}/*",
        ]
        if not (self.workdir / "data" / "meta.properties").exists():  # a restart keeps its data
            fmt = subprocess.run(
                [
                    *java,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    _cluster_id(),
                    "-c",
                    str(props),
                    "--ignore-formatted",
                    *(
                        [
                            "--add-scram",
                            f"SCRAM-SHA-512=[name={self.scram[0]},password={self.scram[1]}]",
                        ]
                        if self.scram
                        else []
                    ),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if fmt.returncode != 0:
                raise InfraError(
                    f"formatting Kafka storage failed: {(fmt.stdout + fmt.stderr)[-1500:]}"
                )
        proc = spawn([*java, "kafka.Kafka", str(props)], log=self.workdir / "kafka.out")
        self.pid = proc.pid
        try:
            wait_until(
                lambda: _started(log, seen),
                timeout=timeout,
                what="Kafka broker",
                proc=proc,
                log=log,
            )
        except InfraError:
            self.stop()
            raise
        return self.bootstrap

    def stop(self) -> None:
        if self.pid is not None:
            stop_group(self.pid, grace=30.0)
            self.pid = None


def _started(log: Path, after: int = 0) -> bool:
    try:
        with log.open("rb") as f:
            f.seek(after)
            return b"Kafka Server started" in f.read()
    except OSError:
        return False


def _cluster_id() -> str:
    """Kafka's Uuid format (22 chars of URL-safe base64); saves a JVM start for `random-uuid`."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid
