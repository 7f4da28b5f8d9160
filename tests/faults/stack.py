"""A private stack for the fault tests: their own Postgres, Kafka, schema registry and S3,
on their own ports with their own data under a temporary directory, started from the same
binaries and jars `infra/local/stack.sh` installs. The fault tests kill and restart these
freely; the shared stack other tests (and other people) use is never touched. stripe-mock is
stateless and never killed, so the shared one is used.

S3: moto keeps everything in memory, so a restarted moto would come back empty, unlike real
S3. "S3 down" is therefore a TCP forwarder in front of a private moto going away and coming
back (the port refuses connections meanwhile), with the objects kept behind it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.support.stack import REPO, dev_env, free_port, run_cli

PG_BIN = Path("/usr/lib/postgresql/15/bin")
LOCAL = REPO / ".local"
KAFKA_LIBS = LOCAL / "kafka" / "libs"
APICURIO_JAR = LOCAL / "apicurio" / "apicurio-registry-app-3.0.9-runner.jar"
MOTO = REPO / ".venv" / "bin" / "moto_server"
HOST = "127.0.0.1"
IS_ROOT = os.geteuid() == 0


def _wait(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited ({proc.returncode})")
        time.sleep(0.2)
    raise RuntimeError(f"{what} not healthy after {timeout}s")


def _port_open(port: int) -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        return True
    return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (local test URL)
            return resp.status == 200
    except Exception:
        return False


class TcpForwarder:
    """127.0.0.1:<port> -> target, in a thread; ``stop()`` closes the port and every connection."""

    def __init__(self, port: int, target_port: int) -> None:
        self.port = port
        self.target_port = target_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def serve() -> None:
                self._server = await asyncio.start_server(self._handle, HOST, self.port, reuse_address=True)
                ready.set()

            loop.run_until_complete(serve())
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"forward-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.close()
            self._writers.clear()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None


class PrivateStack:
    """Postgres, Kafka, Apicurio and moto of our own; ``env`` is a dev env pointing at them."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sm-faults-", dir="/tmp"))
        self.root.chmod(0o755)
        self.logs = self.root / "logs"
        self.logs.mkdir()
        self.pg_port, self.kafka_port, self.controller_port = free_port(), free_port(), free_port()
        self.registry_port, self.moto_port, self.s3_port = free_port(), free_port(), free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.s3 = TcpForwarder(self.s3_port, self.moto_port)
        self.env: dict[str, str] = {}

    # ---- processes -------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], cwd: Path | None = None, user: str | None = None) -> None:
        if user and IS_ROOT:
            argv = ["runuser", "-u", user, "--", *argv]
        log = (self.logs / f"{name}.log").open("a")
        self.procs[name] = subprocess.Popen(
            argv, cwd=cwd or self.root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def _kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    # ---- postgres --------------------------------------------------------------------------
    @property
    def pgdata(self) -> Path:
        return self.root / "pg"

    def _pg(self, *args: str) -> subprocess.CompletedProcess:
        argv = [str(PG_BIN / args[0]), *args[1:]]
        if IS_ROOT:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)

    def start_pg(self) -> None:
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir(mode=0o700)
            run = self.root / "run"
            run.mkdir()
            if IS_ROOT:
                shutil.chown(self.pgdata, "postgres", "postgres")
                shutil.chown(run, "postgres", "postgres")
            self._pg(
                "initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"
            )
            conf = (
                f"listen_addresses = '{HOST}'\nport = {self.pg_port}\nunix_socket_directories = '{run}'\n"
                "max_connections = 100\nfsync = off\nshared_buffers = 32MB\n"
            )
            with (self.pgdata / "postgresql.conf").open("a") as f:
                f.write(conf)
        self._pg(
            "pg_ctl", "start", "-D", str(self.pgdata), "-l", str(self.pgdata / "server.log"), "-w", "-t", "60", "-s"
        )

    def stop_pg(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "stop", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "-s")

    def restart_pg(self) -> None:
        self.stop_pg()
        self.start_pg()

    def _psql(self, sql: str, db: str = "postgres") -> None:
        subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(self.pg_port),
             "-U", "postgres", "-d", db, "-c", sql],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    # ---- kafka -----------------------------------------------------------------------------
    def _kafka_props(self) -> Path:
        data = self.root / "kafka"
        props = data / "server.properties"
        if not props.exists():
            (data / "logs").mkdir(parents=True)
            props.write_text(
                "process.roles=broker,controller\nnode.id=1\n"
                f"controller.quorum.voters=1@{HOST}:{self.controller_port}\n"
                f"listeners=PLAINTEXT://{HOST}:{self.kafka_port},CONTROLLER://{HOST}:{self.controller_port}\n"
                f"advertised.listeners=PLAINTEXT://{HOST}:{self.kafka_port}\n"
                "controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n"
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
                f"log.dirs={data / 'logs'}\nnum.partitions=3\ndefault.replication.factor=1\n"
                "offsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\n"
                "transaction.state.log.min.isr=1\nmin.insync.replicas=1\ngroup.initial.rebalance.delay.ms=0\n"
                "auto.create.topics.enable=false\noffsets.topic.num.partitions=3\n"
            )
            cluster_id = "-"
            while cluster_id.startswith("-"):  # a leading '-' would read as an option
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            subprocess.run(
                ["java", "-Xmx128m", f"-Dlog4j.configuration=file:{REPO / 'infra/local/log4j.properties'}",
                 "-cp", f"{KAFKA_LIBS}/*", "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
        return props

    def start_kafka(self) -> None:
        props = self._kafka_props()
        self._spawn(
            "kafka",
            ["java", "-Xmx384m", "-Xms128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
             f"-Dkafka.logs.dir={self.logs}", f"-Dlog4j.configuration=file:{REPO / 'infra/local/log4j.properties'}",
             "-cp", f"{KAFKA_LIBS}/*", "kafka.Kafka", str(props)],
        )  # fmt: skip
        _wait(self._kafka_healthy, 90, "private kafka", self.procs["kafka"])

    def _kafka_healthy(self) -> bool:
        if not _port_open(self.kafka_port):
            return False

        async def probe() -> bool:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=f"{HOST}:{self.kafka_port}", request_timeout_ms=3000)
            try:
                await asyncio.wait_for(admin.start(), 5)
                await asyncio.wait_for(admin.list_topics(), 5)
                return True
            except Exception:
                return False
            finally:
                with contextlib.suppress(Exception):
                    await admin.close()

        return asyncio.run(probe())

    def kill_kafka(self) -> None:
        self._kill("kafka", signal.SIGKILL)

    # ---- registry --------------------------------------------------------------------------
    def start_registry(self) -> None:
        tmp = self.root / "registry"
        tmp.mkdir(exist_ok=True)
        self._spawn(
            "registry",
            ["java", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", f"-Djava.io.tmpdir={tmp}",
             f"-Dquarkus.http.host={HOST}", f"-Dquarkus.http.port={self.registry_port}",
             "-Dapicurio.storage.kind=sql", "-Dapicurio.storage.sql.kind=postgresql",
             f"-Dapicurio.datasource.url=jdbc:postgresql://{HOST}:{self.pg_port}/registry",
             "-Dapicurio.datasource.username=spacemusic", "-Dapicurio.datasource.password=spacemusic",
             "-Dapicurio.datasource.jdbc.initial-size=1", "-Dapicurio.datasource.jdbc.min-size=1",
             "-Dapicurio.datasource.jdbc.max-size=5", "-Dapicurio.ccompat.use-canonical-hash=true",
             "-Dapicurio.ccompat.max-subjects=100000", "-Dapicurio.rest.deletion.artifact.enabled=true",
             "-Dapicurio.rest.deletion.artifact-version.enabled=true", "-Dapicurio.rest.deletion.group.enabled=true",
             f"-Dapicurio.import.work-dir={tmp}", f"-Dapicurio.storage.snapshot.location={tmp}",
             "-Dquarkus.http.access-log.enabled=false", "-jar", str(APICURIO_JAR)],
            cwd=tmp,
        )  # fmt: skip
        _wait(
            lambda: _http_ok(f"http://{HOST}:{self.registry_port}/apis/ccompat/v7/subjects"),
            120,
            "private registry",
            self.procs["registry"],
        )

    def stop_registry(self) -> None:
        self._kill("registry", signal.SIGKILL)

    # ---- s3 --------------------------------------------------------------------------------
    def start_moto(self) -> None:
        self._spawn("moto", [str(MOTO), "-H", HOST, "-p", str(self.moto_port)])
        _wait(lambda: _port_open(self.moto_port), 30, "private moto", self.procs["moto"])
        self.s3.start()

    def s3_down(self) -> None:
        self.s3.stop()

    def s3_up(self) -> None:
        self.s3 = TcpForwarder(self.s3_port, self.moto_port)
        self.s3.start()

    # ---- all -------------------------------------------------------------------------------
    def start(self) -> dict[str, str]:
        self.start_pg()
        self._psql("CREATE ROLE spacemusic LOGIN CREATEDB PASSWORD 'spacemusic'")
        self._psql("CREATE DATABASE spacemusic OWNER spacemusic")
        self._psql("CREATE DATABASE registry OWNER spacemusic")
        self.start_moto()
        # The two JVMs start together (each takes seconds); Kafka's format runs first.
        self._kafka_props()
        registry = threading.Thread(target=self.start_registry)
        registry.start()
        self.start_kafka()
        registry.join()
        base = dev_env()
        self.env = {
            **os.environ,
            **base,
            "KAFKA_BOOTSTRAP_SERVERS": f"{HOST}:{self.kafka_port}",
            "SCHEMA_REGISTRY_URL": f"http://{HOST}:{self.registry_port}/apis/ccompat/v7",
            "DATABASE_URL": f"postgresql://spacemusic:spacemusic@{HOST}:{self.pg_port}/spacemusic",
            "S3_ENDPOINT_URL": f"http://{HOST}:{self.s3_port}",
            "S3_BUCKET": "sm-faults",
            "TOPIC_NAMESPACE": "",
            "CONSUMER_GROUP_PREFIX": "faults",
            "METRICS_PORT": "0",
            "LOG_LEVEL": "INFO",
            "STARTUP_RETRY_SECONDS": "120",
        }
        run_cli(self.env, "migrate")
        run_cli(self.env, "schemas", "register")
        run_cli(self.env, "topics", "create")
        return self.env

    def stop(self) -> None:
        self.s3.stop()
        for name in ("registry", "kafka", "moto"):
            self._kill(name, signal.SIGTERM, timeout=15)
        with contextlib.suppress(Exception):
            self.stop_pg("immediate")
        keep = os.environ.get("FAULTS_KEEP_DATA")
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)
