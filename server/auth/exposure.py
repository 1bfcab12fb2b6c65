"""Whether the configured listen address would expose an unauthenticated server to the network."""

from __future__ import annotations

import ipaddress


def is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def exposure_problem(listen: str, auth_enabled: bool, insecure: bool) -> str | None:
    """Why the server must not start as configured, or None."""
    if auth_enabled or insecure or is_loopback(listen):
        return None
    return (
        f"refusing to listen on {listen} without tokens: anyone who can reach it could read and change "
        "every namespace. Set tokens_file (create entries with `python -m server.auth add`), listen on "
        "127.0.0.1, or pass --insecure if the network is trusted"
    )
