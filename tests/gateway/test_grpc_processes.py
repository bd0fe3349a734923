"""`manage.py grpcserve` with GRPC_PROCESSES > 1 (the deployed default): a supervisor and its server
processes on one port, seen from outside: which process served a call (each writes its own metrics
files, named after its pid), the supervisor's exit code, the port.

The drain on SIGTERM is tested for both configurations in test_grpc_server.py."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from modeloman_client import Client, ModeloManError
from prometheus_client.multiprocess import MultiProcessCollector

from apps.keys import services
from tests.factories import TEST_ACTOR, issue_key
from tests.processes import BASE_DIR, grpcserve, grpcserve_env

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 16  # connections; the kernel puts each on one of 2 processes: all on one by chance is 2^-15


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            after_name = stat.read_text().rpartition(")")[2].split()  # state, ppid, ...
        except OSError:  # ended meanwhile
            continue
        if int(after_name[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def requests_by_process(directory: Path) -> dict[int, float]:
    """gRPC calls counted per server process, from its own counter file (`counter_grpc-<pid>.db`)."""
    served = {}
    for path in glob.glob(str(directory / "counter_grpc-*.db")):
        total = sum(sample.value for metric in MultiProcessCollector.merge([path], accumulate=False)
                    for sample in metric.samples if sample.name == "modeloman_requests_total")
        if total:
            served[int(path.rpartition("-")[2].removesuffix(".db"))] = total
    return served


def live_gauge_processes(directory: Path) -> set[int]:
    return {int(path.rpartition("-")[2].removesuffix(".db"))
            for path in glob.glob(str(directory / "gauge_livesum_grpc-*.db"))}


def whoami_over_separate_connections(address: str, token: str) -> list[Client]:
    clients = [Client.grpc(address, token, max_attempts=1) for _ in range(CLIENTS)]
    for client in clients:
        client.whoami()
    return clients


def test_calls_over_separate_connections_are_served_by_every_process_and_a_revocation_reaches_all(tmp_path):
    issued = issue_key()
    env = {"GRPC_PROCESSES": "2", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with grpcserve(env=env) as (process, address):
        servers = children(process.pid)
        assert len(servers) == 2
        clients = whoami_over_separate_connections(address, issued.token)  # each process caches the key
        try:
            served = requests_by_process(tmp_path)
            assert set(served) == servers, served  # both processes, and nothing served by the supervisor
            assert sum(served.values()) == CLIENTS

            services.api_key_revoke(actor=TEST_ACTOR, api_key=issued.api_key, reason="leaked")
            start = time.monotonic()
            for client in clients:
                while True:
                    try:
                        client.whoami()
                    except ModeloManError as error:
                        assert (error.status, error.code) == ("UNAUTHENTICATED", "key_revoked")
                        break
                    assert time.monotonic() - start < 1.0, "a server process still accepted the key after 1 s"
                    time.sleep(0.02)
        finally:
            for client in clients:
                client.close()


@pytest.mark.parametrize(("first", "second"), [("1", "1"), ("2", "2"), ("2", "1"), ("1", "2")])
def test_a_second_grpcserve_on_a_busy_port_fails_and_the_first_serves_on(tmp_path, first, second):
    metrics = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with grpcserve(env={"GRPC_PROCESSES": first, **metrics}) as (_, address):
        files = set(glob.glob(str(tmp_path / "*_grpc-*.db")))
        assert files
        result = subprocess.run([sys.executable, "manage.py", "grpcserve"], cwd=BASE_DIR, capture_output=True,
                                text=True, timeout=60, check=False,
                                env=grpcserve_env({"GRPC_ADDR": address, "GRPC_PROCESSES": second, **metrics}))
        assert result.returncode != 0
        assert f"gRPC cannot listen on {address}" in result.stderr, result.stderr[-2000:]
        assert "grpcserve listening" not in result.stdout
        assert files <= set(glob.glob(str(tmp_path / "*_grpc-*.db")))  # the running server's counts are kept
        for _ in range(4):  # fresh connections: all reach the first server
            with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING


def test_a_server_process_that_dies_stops_the_other_and_the_supervisor_exits_non_zero(tmp_path):
    issued = issue_key()
    env = {"GRPC_PROCESSES": "2", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with grpcserve(env=env, stop=False) as (process, address):
        servers = children(process.pid)
        for client in whoami_over_separate_connections(address, issued.token):
            client.close()
        assert live_gauge_processes(tmp_path) == servers  # requests in progress: 0 in each, but recorded

        victim, survivor = sorted(servers)
        os.kill(victim, signal.SIGKILL)
        assert process.wait(timeout=30) == 1
        assert not Path(f"/proc/{survivor}").exists(), "the other server process was left running"
    # The supervisor marked both dead: no stale "in progress" gauge is left for /metrics to sum.
    assert live_gauge_processes(tmp_path) == set()
