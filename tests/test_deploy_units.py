"""deploy/systemd: the units as systemd loads them, and the commands they start, run from this
checkout against the test database (README, "Deployment")."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.processes import BASE_DIR, database_url, free_port

UNITS = BASE_DIR / "deploy" / "systemd"
SERVICES = ["modeloman-web.service", "modeloman-grpc.service", "modeloman-maintenance.service"]
INSTALLED_AT, SETTINGS_FILE = "/opt/modeloman", "/etc/modeloman/modeloman.env"

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")


def install(tmp_path: Path) -> Path:
    """The units as they would be installed for this checkout, with an empty settings file."""
    units = tmp_path / "units"
    shutil.copytree(UNITS, units)
    (tmp_path / "modeloman.env").write_text("")
    for path in units.rglob("*"):
        if path.is_file():
            path.write_text(path.read_text().replace(INSTALLED_AT, str(BASE_DIR))
                            .replace(SETTINGS_FILE, str(tmp_path / "modeloman.env")))
    return units


def verify(units: Path, *names: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(units / name) for name in names)],
                          env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"}, capture_output=True, text=True,
                          timeout=60, check=False)


def test_systemd_loads_every_unit_without_a_complaint(tmp_path):
    units = install(tmp_path)
    loaded = verify(units, *SERVICES, "modeloman-maintenance.timer")
    assert (loaded.returncode, loaded.stderr, loaded.stdout) == (0, "", "")


def test_every_service_takes_the_shared_settings(tmp_path):
    """User, working directory, settings file and sandbox come from one prefix drop-in: a line
    systemd does not know there is reported for each service, so each one reads it."""
    units = install(tmp_path)
    with (units / "modeloman-.service.d" / "common.conf").open("a") as common:
        common.write("NotASetting=1\n")
    for service in SERVICES:
        complaint = verify(units, service).stderr
        assert "common.conf:" in complaint and "NotASetting" in complaint


def exec_start(service: str) -> list[str]:
    """The command a unit starts, as this checkout would run it."""
    [line] = [line for line in (UNITS / service).read_text().splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart=").replace(INSTALLED_AT, str(BASE_DIR)))


@pytest.fixture
def unit_env(transactional_db) -> dict[str, str]:
    """The test database and settings in place of /etc/modeloman/modeloman.env."""
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "modeloman.settings.test", "DATABASE_URL": database_url(),
            "GRPC_PROCESSES": "1"}


def run_until(process: subprocess.Popen, ready, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        if ready():
            return
        time.sleep(0.1)
    raise AssertionError("the service did not come up")


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)  # what systemd sends first (KillMode=mixed: the main process)
    return process.wait(timeout=30)


def test_the_web_service_serves_on_http_addr(unit_env):
    address = f"127.0.0.1:{free_port()}"
    web = subprocess.Popen(exec_start("modeloman-web.service"), cwd=BASE_DIR, env={**unit_env, "HTTP_ADDR": address},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://{address}/healthz", timeout=2) as response:  # noqa: S310  # loopback
                return response.status == 200
        except OSError:
            return False

    try:
        run_until(web, healthy)
    finally:
        assert stop(web) == 0


def test_the_grpc_service_serves_on_grpc_addr_and_drains_on_sigterm(unit_env):
    address = f"127.0.0.1:{free_port()}"
    server = subprocess.Popen(exec_start("modeloman-grpc.service"), cwd=BASE_DIR,
                              env={**unit_env, "GRPC_ADDR": address}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)

    def serving() -> bool:
        with grpc.insecure_channel(address) as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            except grpc.RpcError:
                return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING

    try:
        run_until(server, serving)
    finally:
        assert stop(server) == 0


def test_the_maintenance_service_runs_to_completion(unit_env):
    done = subprocess.run(exec_start("modeloman-maintenance.service"), cwd=BASE_DIR, env=unit_env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
