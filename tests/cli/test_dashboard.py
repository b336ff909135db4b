"""``steelseg-hpc dashboard`` as a user runs it: a real process, talked to on loopback.

It serves loopback only unless told (--allow-remote), prints a tunnel that works from a laptop
through the login node, says "serving" only once it answers, never prints a password, and never
creates a storage it was pointed at by mistake.
"""
from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend

from steelseg_hpc.cli.dashboard import tunnel_hint
from steelseg_hpc.training.distributed import free_port
from tests.launch.conftest import slurm_cluster  # noqa: F401  (a pytest fixture, used by name)

SECRET = "Xq7Zr9wPk2"
BANNER = ("Bottle v", "Listening on", "Hit Ctrl-C", "GET /api")
DEADLINE_S = 60


@pytest.fixture()
def journal(tmp_path) -> Path:
    """A journal holding one study, written by Optuna itself."""
    path = tmp_path / "study.journal"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="s", storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))))
    return path


def dashboard(*args, timeout: float = 30) -> subprocess.CompletedProcess:
    """A dashboard that should refuse: it must end by itself (one that serves instead times out)."""
    return subprocess.run([sys.executable, "-m", "steelseg_hpc", "dashboard", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


@contextlib.contextmanager
def serving(tmp_path: Path, *args, launcher: tuple[str, ...] = ()):
    """A dashboard process, once it has printed its tunnel; yields a reader of its (stdout, stderr)."""
    out, err = tmp_path / "dashboard.out", tmp_path / "dashboard.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen([*launcher, sys.executable, "-m", "steelseg_hpc", "dashboard", *map(str, args)],
                                   stdout=stdout, stderr=stderr, text=True, env=dict(os.environ))
    read = lambda: (out.read_text(), err.read_text())  # noqa: E731
    try:
        deadline = time.monotonic() + DEADLINE_S
        while "then open" not in read()[0]:
            assert process.poll() is None and time.monotonic() < deadline, read()
            time.sleep(0.2)
        yield process, read
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def get(address: str, port: int, path: str = "/api/studies") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(address, port, timeout=10)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def own_address() -> str:
    """A non-loopback IPv4 address of this machine (the node's own address)."""
    found = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    for address in found:
        ip = ipaddress.ip_address(address)
        if ip.version == 4 and not ip.is_loopback:
            return address
    pytest.skip("this machine has no non-loopback IPv4 address")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "0", "own"])
def test_a_host_beyond_loopback_is_refused_in_one_line_naming_the_flag_and_the_tunnel(journal, host):
    host = own_address() if host == "own" else host
    result = dashboard("--storage", journal, "--host", host, "--port", free_port())
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result
    assert len(lines) == 1 and lines[0].startswith(f"error: --host {host or '0.0.0.0'}: "), result.stderr
    assert "is not loopback" in lines[0] and "--allow-remote" in lines[0] and "SSH tunnel" in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("host, target", [("127.0.0.1", "127.0.0.1"), ("localhost", "127.0.0.1"),
                                          ("::1", "[::1]")])
def test_loopback_is_served_quietly_with_a_tunnel_to_this_machine_and_stops_on_ctrl_c(journal, tmp_path, host,
                                                                                         target):
    port = free_port()
    with serving(tmp_path, "--storage", journal, "--host", host, "--port", port) as (process, read):
        assert get(target.strip("[]"), port)[0] == 200  # answers as soon as it says so: no retry
        assert b'"s"' in get(target.strip("[]"), port)[1]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        stdout, stderr = read()
    serving_line, hint, stopped = stdout.strip().splitlines()
    assert serving_line == (f"optuna-dashboard on {journal}: serving http://{target}:{port}/dashboard/  "
                            "(Ctrl-C stops it)")
    assert hint.startswith(f"from your laptop: ssh -N -L {port}:{target}:{port} {socket.gethostname()}  (")
    assert hint.endswith(f"then open http://localhost:{port}/dashboard/") and stopped == "dashboard stopped"
    assert stderr == "" and not any(word in stdout for word in BANNER), stdout


def test_allow_remote_serves_the_nodes_own_address_with_a_warning(journal, tmp_path):
    address, port = own_address(), free_port()
    with serving(tmp_path, "--storage", journal, "--host", address, "--port", port, "--allow-remote") as (_, read):
        assert get(address, port)[0] == 200
        stdout, stderr = read()
    assert stderr.strip() == (f"warning: --allow-remote: serving {address}:{port} beyond loopback; anyone who "
                              "reaches it can edit and delete trials (no login)")
    assert f"ssh -N -L {port}:{address}:{port} {socket.gethostname()}  (" in stdout


@pytest.mark.slurm
def test_in_a_slurm_job_the_tunnel_jumps_through_the_login_node_to_the_compute_node(slurm_cluster, journal,
                                                                                    tmp_path):
    port, name = free_port(), f"dashboard-test-{os.getpid()}"
    launcher = ("srun", "--nodes=1", "--ntasks=1", "--time=5", f"--job-name={name}", "--quiet")
    try:
        with serving(tmp_path, "--storage", journal, "--port", port, launcher=launcher) as (_, read):
            assert get("127.0.0.1", port)[0] == 200  # the node is this machine on the local cluster
            stdout, _ = read()
    finally:
        subprocess.run(["scancel", f"--name={name}"], check=False)
    node = subprocess.run(["srun", "--nodes=1", "--quiet", "hostname"], capture_output=True, text=True,
                          timeout=60).stdout.strip()
    assert f"ssh -N -L {port}:127.0.0.1:{port} -J YOUR_LOGIN_NODE {node}  (" in stdout, stdout


@pytest.mark.parametrize("bound, environ, command", [
    ("127.0.0.1", {}, "ssh -N -L 8080:127.0.0.1:8080 {here}"),
    ("::1", {}, "ssh -N -L 8080:[::1]:8080 {here}"),
    ("0.0.0.0", {}, "ssh -N -L 8080:127.0.0.1:8080 {here}"),
    ("10.1.2.3", {}, "ssh -N -L 8080:10.1.2.3:8080 {here}"),
    ("127.0.0.1", {"SLURMD_NODENAME": "c17"}, "ssh -N -L 8080:127.0.0.1:8080 -J YOUR_LOGIN_NODE {here}"),
    ("0.0.0.0", {"SLURMD_NODENAME": "c17"}, "ssh -N -L 8080:{here}:8080 YOUR_LOGIN_NODE"),
    ("10.1.2.3", {"SLURMD_NODENAME": "c17"}, "ssh -N -L 8080:10.1.2.3:8080 YOUR_LOGIN_NODE"),
], ids=["login-loopback", "login-ipv6", "login-wildcard", "login-address", "node-loopback", "node-wildcard",
        "node-address"])
def test_the_tunnel_ends_where_the_login_node_reaches_the_dashboard(bound, environ, command):
    hint = tunnel_hint(bound, 8080, environ)
    assert f" {command.format(here=socket.gethostname())}  (" in hint
    assert hint.endswith("then open http://localhost:8080/dashboard/")


@pytest.mark.parametrize("credentials, query", [
    (f"steelseg:{SECRET}", ""), ("steelseg", f"?password={SECRET}"), (f"steelseg:{SECRET[:4]}@{SECRET[4:]}", ""),
], ids=["password", "query-password", "unescaped-at"])
def test_a_password_is_never_printed_and_nothing_is_served_when_the_rdb_cannot_be_reached(credentials, query):
    url = f"mysql+pymysql://{credentials}@127.0.0.1:{free_port()}/optuna{query}"  # nothing listens there
    result = dashboard("--storage", url, "--port", free_port())
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert SECRET not in output and SECRET[:4] not in output and SECRET[4:] not in output, output
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, output
    assert result.stderr.startswith("error: --storage mysql+pymysql://steelseg") and "***" in result.stderr


def test_a_journal_that_does_not_exist_is_refused_and_nothing_is_created(tmp_path):
    at_root = Path(f"/steelseg-no-such-sweep-{os.getpid()}")
    try:
        for missing, created in [(tmp_path / "a" / "b" / "study.journal", tmp_path / "a"),
                                 (at_root / "study.journal", at_root)]:
            result = dashboard("--storage", missing, "--port", free_port())
            assert result.returncode == 2, result
            assert result.stderr.strip() == (f"error: --storage {missing}: no such journal file; expected the "
                                             "journal of a sweep that has run (steelseg-hpc status lists them) "
                                             "or an RDB URL")
            assert not created.exists() and result.stdout == ""
        sqlite = tmp_path / "none.db"
        result = dashboard("--storage", f"sqlite:///{sqlite}", "--port", free_port())
        assert result.returncode == 2 and "no such SQLite file" in result.stderr and not sqlite.exists(), result
    finally:
        shutil.rmtree(at_root, ignore_errors=True)  # only there if the refusal failed
