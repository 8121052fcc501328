"""The release proxy's configuration (HAProxy) and what its runtime API answers.

One host: the backend has two servers, `blue` and `green`, one per release container, each
known by its container's name and re-resolved in Docker's DNS (a container restarted with
another address is followed); a deploy points the idle one at the new release, enables it,
drains the other and puts it in maintenance through the runtime API (no reload: the listening
socket and every client connection stay). The file rendered here is what the proxy starts with
after a restart: the serving release enabled, the other server disabled.

Swarm: the servers come from the service's task addresses in Docker's DNS (`tasks.<service>`),
checked on the app's health path; a task that stops is retried elsewhere.

Either way a request whose connection to a server fails is retried on another server
(`retry-on conn-failure`, `option redispatch`): a stopped or stopping release never makes a
client see an error. Idempotent requests are also retried on an empty answer.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass

from tasks.core.errors import FormatError

BACKEND = "app"
SOCKET = "/run/haproxy/admin.sock"
PORT = 8080  # the proxy listens here in its container; the app listens on the same port
PLACEHOLDER = f"192.0.2.1:{PORT}"  # a server with no release yet (TEST-NET-1: nothing answers)
_ADDRESS = re.compile(r"[A-Za-z0-9_.-]+\Z")
_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*\Z")

_COMMON = f"""\
global
    stats socket {SOCKET} mode 600 level admin
    stats timeout 10s
    log stdout format raw local0 notice

defaults
    mode http
    log global
    option httplog
    # only what went wrong (a retry, an error, a timeout) reaches the proxy's log
    option dontlog-normal
    timeout connect 2s
    timeout client 60s
    timeout server 300s
    timeout http-request 30s
    timeout http-keep-alive 10s
    timeout queue 30s
    # a server that refuses (stopped, stopping) costs a retry on another, never an error
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response

frontend web
    bind :{PORT}
    option forwardfor
    default_backend {BACKEND}

resolvers docker
    nameserver dns 127.0.0.11:53
    resolve_retries 3
    timeout resolve 1s
    timeout retry 1s
    hold valid 1s
"""
# an answer lost half-way is retried only for requests that change nothing
NO_UNSAFE_RETRY = "    http-request disable-l7-retry unless METH_GET || METH_HEAD"


def _checked(address: str) -> str:
    if not _ADDRESS.match(address):
        raise FormatError(f"proxy: {address!r} is not a container name or address")
    return address


def render(servers: Mapping[str, str], enabled: str) -> str:
    """The one-host configuration: `servers` maps blue/green to a container name (or ""), the
    `enabled` one takes traffic after a restart (TCP checks: the deploy asked its health path
    before it was enabled; the check only has to notice a server that died)."""
    lines = [
        _COMMON,
        f"backend {BACKEND}",
        "    balance roundrobin",
        NO_UNSAFE_RETRY,
        "    default-server check inter 1s fall 2 rise 1 resolvers docker init-addr last,libc,none",
    ]
    for slot in ("blue", "green"):
        address = servers.get(slot, "")
        target = f"{_checked(address)}:{PORT}" if address else PLACEHOLDER
        state = "" if slot == enabled and address else " disabled"
        lines.append(f"    server {slot} {target}{state}")
    return "\n".join(lines) + "\n"


def render_swarm(service: str, health_path: str, slots: int) -> str:
    """The Swarm configuration: up to `slots` servers from `tasks.<service>`, each checked on
    the app's health path; a task gone from the DNS answer is dropped after a second."""
    if not _PATH.match(health_path):
        raise FormatError(f"proxy: health path {health_path!r} is not a URL path")
    lines = [
        _COMMON + "    hold obsolete 1s\n",
        f"backend {BACKEND}",
        "    balance roundrobin",
        NO_UNSAFE_RETRY,
        f"    option httpchk GET {health_path}",
        "    http-check expect status 200",
        "    default-server check inter 1s fall 2 rise 2 resolvers docker init-addr none",
        f"    server-template task {slots} tasks.{_checked(service)}:{PORT}",
    ]
    return "\n".join(lines) + "\n"


# --- the runtime API ----------------------------------------------------------------------------


def point(slot: str, container: str, ip: str) -> str:
    """Commands that aim an idle server at a release's container and let it take traffic: its
    name, for Docker's DNS to follow from then on, and its address now (a name is resolved a
    moment later, and a server enabled before that would take requests it cannot serve)."""
    if not re.fullmatch(r"[0-9a-fA-F.:]+", ip):
        raise FormatError(f"proxy: {ip!r} is not an IP address")
    server = f"{BACKEND}/{slot}"
    return (
        f"set server {server} fqdn {_checked(container)}; "
        f"set server {server} addr {ip} port {PORT}; set server {server} state ready"
    )


def drain(slot: str) -> str:
    return f"set server {BACKEND}/{slot} state drain"


def retire(slot: str) -> str:
    return f"set server {BACKEND}/{slot} state maint"


@dataclass(frozen=True)
class ServerStat:
    status: str  # UP, UP 1/2 (changing), DOWN, DRAIN, MAINT, no check, …
    sessions: int  # requests being served now (scur)
    queued: int  # requests waiting for it (qcur)
    check: str = ""  # the last check's result: L4OK, L7OK, L4CON, … ; INI: none yet

    @property
    def up(self) -> bool:
        """Up by a check that ran since it was enabled (a server just enabled says UP at once,
        with no check yet: INI)."""
        return self.status.split()[0] == "UP" and self.check.endswith("OK")


def parse_stat(text: str) -> dict[str, ServerStat]:
    """`show stat` (CSV) -> the backend's servers by name."""
    rows = list(csv.reader(io.StringIO(text.lstrip("# "))))
    if not rows or "svname" not in rows[0]:
        raise FormatError(f"proxy: `show stat` answered {text.strip()[:200]!r}")
    header = rows[0]
    names = ("pxname", "svname", "scur", "qcur", "status", "check_status")
    index = {name: header.index(name) for name in names if name in header}
    found = {}
    for row in rows[1:]:
        if len(row) < len(header) or row[index["pxname"]] != BACKEND:
            continue
        name = row[index["svname"]]
        if name in ("FRONTEND", "BACKEND"):
            continue
        check = row[index["check_status"]] if "check_status" in index else ""
        found[name] = ServerStat(
            row[index["status"]],
            int(row[index["scur"]] or 0),
            int(row[index["qcur"]] or 0),
            check.lstrip("* "),
        )
    return found
