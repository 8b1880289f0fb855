"""Mosquitto bridges between the brokers of a ground network (docs/broker.md, "Several brokers").

A ground network has a broker per site (the space segment's, each station's, the control
centre's); each site's daemons use their own broker, and each broker forwards the mission's
topics to and from one upstream broker over a bridge: a client connection the broker itself
makes, over TLS with a client certificate of its own (CN `bridge-<name>`), carrying
`satqkd/<mission>/#` both ways at QoS 1 with a persistent session, so what is published while
the bridge is down is delivered once it is back. Brokers joined this way form a tree (a chain or
a star): each has at most one upstream; Mosquitto's bridge detection (`try_private`) keeps a
message from being sent back the way it came.

`bridge_identity`, `check_bridge_name` and `parse_bridge_address` check what the command line
gives; `render_bridge` is the `connection` section of mosquitto.conf.
"""

from __future__ import annotations

import ipaddress
import re

BRIDGE_PREFIX = "bridge-"
# the bridge's keep-alive: how soon a broker notices its upstream is gone (Mosquitto's minimum
# is 5 s); the daemons' own keep-alive is 15 s
KEEPALIVE_S = 15
# after a failed connection the bridge tries again after 1 s, doubling up to 10 s
RESTART_BASE_S, RESTART_CAP_S = 1, 10
_BRIDGE_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def check_bridge_name(name: str, option: str = "--bridge") -> str:
    """Get: a bridge's name, checked (lower-case letters, digits, inner dashes, at most 32);
    ValueError (one line naming the option) otherwise."""
    if not isinstance(name, str) or _BRIDGE_NAME.fullmatch(name) is None:
        raise ValueError(
            f"{option}: a bridge name is 1 to 32 lower-case letters, digits and inner dashes, "
            f"got {name!r}"
        )
    return name


def bridge_identity(name: str, option: str = "--bridge") -> str:
    """Get: the identity (certificate CN, ACL user, client id) of bridge `name`."""
    return BRIDGE_PREFIX + check_bridge_name(name, option)


def parse_bridge_address(text: str, option: str = "--bridge-to") -> tuple[str, int]:
    """Get: (host, port) of `HOST:PORT` (an IPv6 address in brackets); ValueError (one line)
    if it is not one."""
    host, sep, port_text = str(text).rpartition(":")
    if not sep or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{option}: expected HOST:PORT with a port in 1..65535, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{option}: not an IPv6 address in brackets: {text!r}") from None
    else:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if _HOST_NAME.fullmatch(host) is None:
                raise ValueError(f"{option}: not a host name or address: {text!r}") from None
    return host, int(port_text)


def render_bridge(mission: str, name: str, address: tuple[str, int], certs: str) -> list[str]:
    """Get: the lines of mosquitto.conf's `connection` section that bridges this broker to the
    broker at `address` as bridge `name` (certificates in the directory `certs`)."""
    identity = bridge_identity(name, "--bridge-as")
    host, port = address
    shown = f"[{host}]" if ":" in host else host
    return [
        "",
        f"# the bridge to the upstream broker {shown}:{port}: this broker connects to it as",
        f"# {identity} (TLS, its own certificate) and forwards the mission's topics both ways",
        f"connection {identity}",
        f"address {shown}:{port}",
        "bridge_protocol_version mqttv311",
        f"remote_clientid {identity}",
        f"local_clientid {identity}.local",
        f"local_username {identity}",
        f"bridge_cafile {certs}/ca.crt",
        f"bridge_certfile {certs}/{identity}.crt",
        f"bridge_keyfile {certs}/{identity}.key",
        "bridge_tls_version tlsv1.2",
        "bridge_insecure false",
        "# a persistent session: what is published while the bridge is down goes when it is back",
        "cleansession false",
        "try_private true",
        "notifications false",
        f"keepalive_interval {KEEPALIVE_S}",
        f"restart_timeout {RESTART_BASE_S} {RESTART_CAP_S}",
        "start_type automatic",
        f"topic satqkd/{mission}/# both 1",
    ]
