"""SSRF guard for every URL the server calls on a tenant's behalf (MCP servers, external knowledge).

Only ``http``/``https``; the host is resolved once and every address must be public unless the
host or the address is in the caller's allowlist (a setting); plain ``http`` connects to the
validated address (pinned) so a second DNS answer cannot swap it; callers never follow redirects
(RELIABILITY B8).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Collection
from urllib.parse import urlsplit, urlunsplit

from rixin.errors import InvalidRequest, PermissionDenied

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def forbidden(address: Address) -> bool:
    """Whether ``address`` is loopback, private, link-local or otherwise not public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return forbidden(address.ipv4_mapped)
    return bool(
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


async def check_url(
    url: str, allowed_hosts: Collection[str], *, param: str, name: str = "url"
) -> tuple[str, str]:
    """``(url to connect to, Host header)`` for a permitted URL; 400 if it is not an http(s)
    URL or does not resolve, 403 if it points to a private address not in ``allowed_hosts``.
    ``param`` and ``name`` say which request field the errors are about."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"{name} must be an http(s) URL.", param=param)
    host = parts.hostname.lower()
    allowed = {h.lower() for h in allowed_hosts}
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = await asyncio.to_thread(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"{name} host {host!r} does not resolve.", param=param) from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        if forbidden(address) and host not in allowed and str(address) not in allowed:
            raise PermissionDenied(
                f"{name} points to a private or local address, which is not allowed.",
                param=param,
            )
    netloc = parts.netloc.rpartition("@")[2]
    if parts.scheme == "http":
        pinned = addresses[0]
        literal = f"[{pinned}]" if pinned.version == 6 else str(pinned)
        url = urlunsplit(("http", f"{literal}:{port}", parts.path, parts.query, ""))
    return url, netloc


__all__ = ["check_url", "forbidden"]
