"""CLI command ``dashboard``: optuna-dashboard on a sweep's storage, served on loopback.

The dashboard has no login and lets whoever reaches it edit and delete trials, so it listens on
this machine's loopback and the browser reaches it through an SSH tunnel; the command prints the
tunnel that fits where it runs. ``--allow-remote`` serves another address, with a warning.

The server is bound, serving and has answered a request before "serving" is printed; it runs
quietly (no banner, no access log) until Ctrl-C.
"""
from __future__ import annotations

import errno
import http.client
import ipaddress
import os
import socket
import sys
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import click

from steelseg_hpc import launch, sweeps
from steelseg_hpc.cli._app import console, err_console, main
from steelseg_hpc.cli._options import index_option, storage_option
from steelseg_hpc.core.errors import ConfigError

#: Set by slurmd in a job's steps and batch script, never on a login node (an ``salloc`` shell
#: there has SLURM_JOB_ID only): the dashboard runs on a compute node.
NODE_VARIABLE = "SLURMD_NODENAME"
#: How long the started server may take to answer its first request.
ANSWER_TIMEOUT_S = 30.0

class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a browser tab closed mid-answer is not news
            super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per request: the console keeps the address and the tunnel in view."""

    def log_message(self, format, *args) -> None:  # noqa: A002  (the name http.server gives it)
        pass


def _resolve(host: str, port: int) -> tuple[int, tuple]:
    """The address family and socket address ``--host`` binds (a name resolved, IPv4 first)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"--host {host}: cannot be resolved ({exc}); expected an address of this machine, "
                          "e.g. the default 127.0.0.1") from None
    family, _, _, _, sockaddr = min(found, key=lambda info: info[0] != socket.AF_INET)
    return family, sockaddr


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(address.partition("%")[0])


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP, as resolved) is this machine's loopback: 127.0.0.0/8 or ::1."""
    ip = _ip(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def _bind(host: str, port: int, family: int, sockaddr: tuple) -> _Server:
    """The server, bound and listening: a port another server holds, or an address not on this
    machine, is one line."""
    try:
        return (_Server6 if family == socket.AF_INET6 else _Server)(sockaddr, _QuietHandler)
    except OSError as exc:
        why = "is in use (another dashboard?); choose another --port" if exc.errno == errno.EADDRINUSE else \
            f"cannot be served here ({exc.strerror})"
        raise ConfigError(f"--host {host} --port {port}: {host}:{port} {why}") from None


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _check_answers(address: str, family: int, port: int, shown: str) -> None:
    """Ask the started server for its studies, over loopback (or the one address it is bound to)."""
    if _ip(address).is_unspecified:
        address = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    connection = http.client.HTTPConnection(address, port, timeout=ANSWER_TIMEOUT_S)  # no proxy, unlike urllib
    try:
        connection.request("GET", "/api/studies")
        answer = connection.getresponse()
        answer.read()
    except OSError as exc:
        raise ConfigError(f"optuna-dashboard on {shown}: no answer from {_bracketed(address)}:{port} ({exc})") from None
    finally:
        connection.close()
    if answer.status != 200:
        raise ConfigError(f"optuna-dashboard on {shown}: it answered HTTP {answer.status} {answer.reason} "
                          "(see the lines above)")


def tunnel_hint(address: str, port: int, environ=os.environ) -> str:
    """The SSH command that brings the dashboard to a laptop, which reaches the cluster through a
    login node.

    On the login node (or a workstation) the tunnel ends at this machine. In a job on a compute
    node, the login node cannot reach the node's loopback: the tunnel jumps through the login
    node to the node itself (``ssh -J``); serving a network address, the login node connects to
    it. ``address`` is the one bound (wildcard: every address of this machine).
    """
    here, on_node = socket.gethostname(), bool(environ.get(NODE_VARIABLE))
    wildcard = _ip(address).is_unspecified
    if is_loopback(address):
        target, via = address, f"-J YOUR_LOGIN_NODE {here}" if on_node else here
    elif wildcard:
        target = here if on_node else ("::1" if ":" in address else "127.0.0.1")
        via = "YOUR_LOGIN_NODE" if on_node else here
    else:
        target, via = address, "YOUR_LOGIN_NODE" if on_node else here
    why = (f"through the login node to this compute node, {here}" if is_loopback(address) else
           f"the login node reaches {here}") if on_node else f"{here} is this machine, as you ssh to it"
    return (f"from your laptop: ssh -N -L {port}:{_bracketed(target)}:{port} {via}  ({why}), "
            f"then open http://localhost:{port}/dashboard/")


@main.command()
@click.argument("name", required=False)
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on: loopback (127.0.0.0/8, ::1, localhost) unless --allow-remote.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--allow-remote", is_flag=True,
              help="Serve a --host beyond loopback: anyone who reaches it can edit and delete trials (no login).")
@index_option
def dashboard(name, storage, host, port, allow_remote, index_path) -> None:
    """Serve optuna-dashboard on a sweep's storage (default: the most recent sweep's), on loopback.

    Open it from your laptop through the SSH tunnel it prints. Ctrl-C stops it.
    """
    import optuna_dashboard

    host = host.strip() or "0.0.0.0"  # as bind() reads an empty address
    family, sockaddr = _resolve(host, port)
    address = sockaddr[0]
    remote = not is_loopback(address)
    if remote and not allow_remote:
        raise ConfigError(f"--host {host}: {address} is not loopback, so anyone on the network could edit and "
                          "delete trials (the dashboard has no login); keep the default --host 127.0.0.1 and use "
                          f"the SSH tunnel it prints, or pass --allow-remote to serve {address} anyway")
    storage = storage or sweeps.locate_study(name, None, launch.ExperimentIndex(index_path)).storage
    shown = sweeps.display_url(storage)
    server = _bind(host, port, family, sockaddr)
    thread = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
    try:
        server.set_app(optuna_dashboard.wsgi(sweeps.open_storage(storage)))
        thread.start()
        _check_answers(address, family, port, shown)
        if remote:
            err_console.print(f"[bold yellow]warning:[/] --allow-remote: serving {_bracketed(address)}:{port} "
                              "beyond loopback; anyone who reaches it can edit and delete trials (no login)",
                              highlight=False)
        url_host = socket.gethostname() if _ip(address).is_unspecified else _bracketed(address)
        console.print(f"optuna-dashboard on {shown}: serving http://{url_host}:{port}/dashboard/  (Ctrl-C stops it)",
                      highlight=False)
        console.print(tunnel_hint(address, port), highlight=False)
        thread.join()  # until Ctrl-C
    except KeyboardInterrupt:
        console.print("dashboard stopped", highlight=False)
    finally:
        if thread.is_alive():
            server.shutdown()
        server.server_close()
