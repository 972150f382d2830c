"""Download images and PDFs from user-given URLs without letting users reach internal services.

Every hop of a fetch goes through :meth:`SafeFetcher.check`:

1. only ``http`` and ``https`` URLs; ``localhost`` and ``*.localhost`` are refused by name;
2. the host is resolved once, and **every** resolved address must be public (see
   :func:`blocked_reason`), so a name with one private record is refused;
3. the connection goes to a checked address (the URL's host is swapped for it, the ``Host`` header
   and TLS SNI/certificate check keep the name), so DNS cannot answer differently between the check
   and the connect (DNS rebinding);
4. redirects are followed by hand, each new URL checked again, at most ``max_redirects`` times;
5. the body is streamed and the download stops as soon as it passes the byte cap; the whole fetch
   has one deadline (``fetch_timeout``).

Environment proxies are ignored on purpose: a proxy would resolve names itself, after our check.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio
import httpx

from uniembed.errors import FetchError, InputTooLarge
from uniembed.inputs.limits import InputLimits

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

ALLOWED_SCHEMES = ("http", "https")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
LOCAL_HOSTNAMES = ("localhost", "localhost.localdomain")
CHUNK_BYTES = 64 * 1024
USER_AGENT = "uniembed-fetch/1"
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?")

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Ranges a server must not be made to call, with the reason shown to the user (RFC 6890 et al.).
BLOCKED_IPV4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified ('this network')"),
    (_V4("10.0.0.0/8"), "private (RFC 1918)"),
    (_V4("100.64.0.0/10"), "shared carrier-grade NAT (RFC 6598)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local (includes cloud metadata 169.254.169.254)"),
    (_V4("172.16.0.0/12"), "private (RFC 1918)"),
    (_V4("192.0.0.0/24"), "reserved (IETF protocol assignments)"),
    (_V4("192.0.2.0/24"), "reserved (documentation)"),
    (_V4("192.88.99.0/24"), "reserved (6to4 relay anycast)"),
    (_V4("192.168.0.0/16"), "private (RFC 1918)"),
    (_V4("198.18.0.0/15"), "reserved (benchmarking)"),
    (_V4("198.51.100.0/24"), "reserved (documentation)"),
    (_V4("203.0.113.0/24"), "reserved (documentation)"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved (includes broadcast)"),
)

# IPv6 is checked as an allow-list: only global unicast (2000::/3), minus these ranges.
GLOBAL_UNICAST_V6 = _V6("2000::/3")
BLOCKED_IPV6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("2001::/23"), "reserved (IETF protocol assignments, Teredo)"),
    (_V6("2001:db8::/32"), "reserved (documentation)"),
    (_V6("3fff::/20"), "reserved (documentation)"),
)
IPV6_OUTSIDE_GLOBAL: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("fc00::/7"), "private (unique local address)"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local (deprecated)"),
    (_V6("ff00::/8"), "multicast"),
)
NAT64_V6 = _V6("64:ff9b::/96")


def blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address, or ``None`` when it is.

    IPv6 forms that carry an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by that address.

    >>> blocked_reason(ipaddress.ip_address("8.8.8.8")) is None
    True
    >>> blocked_reason(ipaddress.ip_address("::ffff:10.0.0.1"))
    'private (RFC 1918)'
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return blocked_reason(embedded)
        return _ipv6_blocked_reason(address)
    return next((why for net, why in BLOCKED_IPV4 if address in net), None)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_V6:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _ipv6_blocked_reason(address: ipaddress.IPv6Address) -> str | None:
    if address not in GLOBAL_UNICAST_V6:
        why = next((why for net, why in IPV6_OUTSIDE_GLOBAL if address in net), None)
        return why or "reserved (not global unicast)"
    return next((why for net, why in BLOCKED_IPV6 if address in net), None)


def resolve_host(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to (TCP), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Target:
    """One checked hop: the URL as given and the addresses it may be fetched from."""

    url: httpx.URL
    addresses: tuple[IPAddress, ...]

    def request_for(self, address: IPAddress) -> httpx.Request:
        """A GET to ``address`` that still names the original host (``Host`` header, TLS SNI)."""
        pinned = self.url.copy_with(host=str(address), fragment=None)
        headers = {
            "Host": self.url.netloc.decode("ascii"),
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "identity",
            "Accept": "*/*",
        }
        extensions = {"sni_hostname": ascii_host(self.url)} if self.url.scheme == "https" else {}
        return httpx.Request("GET", pinned, headers=headers, extensions=extensions)


class SafeFetcher:
    """Fetch URLs under :class:`InputLimits`; see the module docstring for the rules.

    ``resolver`` maps ``(host, port)`` to address strings (default: the system resolver); tests
    use it to give names fixed addresses. ``verify`` is httpx's TLS setting (``True``: the
    certifi CA bundle; or an :class:`ssl.SSLContext`, e.g. with a private CA). Subclasses may
    override :meth:`is_allowed`.
    """

    def __init__(
        self,
        limits: InputLimits | None = None,
        *,
        resolver: Resolver | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.limits = limits or InputLimits()
        self.resolver = resolver or resolve_host
        self.verify = verify

    # ----------------------------------------------------------------- per-hop check
    def is_allowed(self, address: IPAddress) -> bool:
        """Whether a connection to ``address`` is allowed."""
        return self.limits.allow_private_urls or blocked_reason(address) is None

    def check(self, url: str | httpx.URL) -> Target:
        """Validate one URL and resolve its host to addresses that may be contacted."""
        parsed = parse_url(url)
        host = parsed.host
        literal = _ip_literal(host)
        if literal is not None:
            self._check_address(parsed, literal, host_is_literal=True)
            return Target(parsed, (literal,))
        self._check_hostname(parsed)
        addresses = self._resolve(parsed)
        for address in addresses:
            self._check_address(parsed, address, host_is_literal=False)
        return Target(parsed, addresses)

    def _check_hostname(self, url: httpx.URL) -> None:
        host = url.host.rstrip(".").lower()
        if self.limits.allow_private_urls:
            return
        if host in LOCAL_HOSTNAMES or host.endswith(".localhost"):
            raise FetchError(
                f"{_show(url)}: host {host!r} is local; only public addresses are allowed"
            )

    def _resolve(self, url: httpx.URL) -> tuple[IPAddress, ...]:
        try:
            found = self.resolver(ascii_host(url), _port(url))
        except (OSError, UnicodeError) as exc:
            raise FetchError(f"{_show(url)}: could not resolve host {url.host!r} ({exc})") from exc
        addresses = tuple(_parse_resolved(a) for a in found)
        if not addresses:
            raise FetchError(f"{_show(url)}: host {url.host!r} has no addresses")
        return addresses

    def _check_address(self, url: httpx.URL, address: IPAddress, *, host_is_literal: bool) -> None:
        if self.is_allowed(address):
            return
        why = blocked_reason(address) or "not allowed"
        # For names, say what kind of address without revealing internal DNS records.
        what = (
            f"address {address}"
            if host_is_literal
            else f"host {url.host!r} resolves to an address that"
        )
        raise FetchError(f"{_show(url)}: {what} is {why}; only public addresses are allowed")

    # ----------------------------------------------------------------- sync
    def fetch(self, url: str, *, max_bytes: int | None = None) -> bytes:
        """Download ``url`` and return its body; at most ``max_bytes`` (default: the larger of the
        image and PDF byte limits). Raises :class:`FetchError` or :class:`InputTooLarge`."""
        cap = max_bytes or self.limits.max_download_bytes
        deadline = time.monotonic() + self.limits.fetch_timeout
        current = parse_url(url)
        with _translate_errors(url, self.limits.fetch_timeout), self._client() as client:
            for _ in range(self.limits.max_redirects + 1):
                target = self.check(current)
                response = self._send(client, target, deadline)
                try:
                    following = _redirect_location(target, response)
                    if following is None:
                        _check_response(target, response, cap)
                        return _read_capped(target, response.iter_raw(CHUNK_BYTES), cap, deadline)
                finally:
                    response.close()
                current = following
        raise _too_many_redirects(url, self.limits.max_redirects)

    def _client(self) -> httpx.Client:
        return httpx.Client(
            trust_env=False,
            follow_redirects=False,
            timeout=self.limits.fetch_timeout,
            verify=self.verify,
        )

    def _send(self, client: httpx.Client, target: Target, deadline: float) -> httpx.Response:
        """Send to the first checked address that accepts a connection."""
        error: httpx.ConnectError | None = None
        for address in target.addresses:
            request = target.request_for(address)
            _set_timeout(request, deadline)
            try:
                return client.send(request, stream=True)
            except httpx.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    # ----------------------------------------------------------------- async
    async def afetch(self, url: str, *, max_bytes: int | None = None) -> bytes:
        """Async twin of :meth:`fetch`: same checks; name resolution runs in a worker thread and
        the whole fetch is cancelled at the deadline."""
        cap = max_bytes or self.limits.max_download_bytes
        timeout = self.limits.fetch_timeout
        deadline = time.monotonic() + timeout
        current = parse_url(url)
        with _translate_errors(url, timeout):
            try:
                with anyio.fail_after(timeout):
                    async with self._async_client() as client:
                        for _ in range(self.limits.max_redirects + 1):
                            target = await anyio.to_thread.run_sync(
                                self.check, current, abandon_on_cancel=True
                            )
                            response = await self._asend(client, target, deadline)
                            try:
                                following = _redirect_location(target, response)
                                if following is None:
                                    _check_response(target, response, cap)
                                    return await _aread_capped(target, response, cap)
                            finally:
                                await response.aclose()
                            current = following
            except TimeoutError as exc:
                raise FetchError(f"{_show(url)}: timed out after {timeout:g} s") from exc
        raise _too_many_redirects(url, self.limits.max_redirects)

    def _async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            trust_env=False,
            follow_redirects=False,
            timeout=self.limits.fetch_timeout,
            verify=self.verify,
        )

    async def _asend(
        self, client: httpx.AsyncClient, target: Target, deadline: float
    ) -> httpx.Response:
        error: httpx.ConnectError | None = None
        for address in target.addresses:
            request = target.request_for(address)
            _set_timeout(request, deadline)
            try:
                return await client.send(request, stream=True)
            except httpx.ConnectError as exc:
                error = exc
        assert error is not None
        raise error


# --------------------------------------------------------------------- helpers
def parse_url(url: str | httpx.URL) -> httpx.URL:
    """Parse and check the scheme and host of ``url``."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise FetchError(f"{_show(url)}: not a valid URL ({exc})") from exc
    if parsed.scheme not in ALLOWED_SCHEMES:
        scheme = parsed.scheme or "none"
        raise FetchError(f"{_show(url)}: URL scheme {scheme!r} is not allowed; use http or https")
    if not parsed.host:
        raise FetchError(f"{_show(url)}: URL has no host")
    if _ip_literal(parsed.host) is None and not _HOSTNAME.fullmatch(ascii_host(parsed)):
        raise FetchError(f"{_show(url)}: {parsed.host!r} is not a valid host name")
    if not 0 < _port(parsed) < 65536:
        raise FetchError(f"{_show(url)}: port {parsed.port} is out of range")
    return parsed


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _parse_resolved(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")


def ascii_host(url: httpx.URL) -> str:
    """The host as sent on the wire (IDNA-encoded), e.g. for DNS and TLS SNI."""
    return url.raw_host.decode("ascii")


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _show(url: object, limit: int = 200) -> str:
    """The URL for an error message, shortened."""
    text = str(url)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _set_timeout(request: httpx.Request, deadline: float) -> None:
    """Bound connect/read/write of this hop by the time left on the fetch."""
    left = max(deadline - time.monotonic(), 0.001)
    request.extensions["timeout"] = httpx.Timeout(left).as_dict()


def _redirect_location(target: Target, response: httpx.Response) -> httpx.URL | None:
    """The next URL when ``response`` is a redirect, resolved against the original (named) URL."""
    if response.status_code not in REDIRECT_STATUSES:
        return None
    location = response.headers.get("Location")
    if not location:
        raise FetchError(
            f"{_show(target.url)}: redirect (HTTP {response.status_code}) without a Location"
        )
    try:
        return target.url.join(location)
    except httpx.InvalidURL as exc:
        raise FetchError(f"{_show(target.url)}: redirect to an invalid URL ({exc})") from exc


def _check_response(target: Target, response: httpx.Response, cap: int) -> None:
    """Status, content encoding and announced length, before any body byte is read."""
    if not response.is_success:
        raise FetchError(f"{_show(target.url)}: server answered HTTP {response.status_code}")
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchError(f"{_show(target.url)}: compressed responses ({encoding}) are not accepted")
    announced = response.headers.get("Content-Length")
    if announced is not None and announced.isdigit() and int(announced) > cap:
        raise _too_large(target.url, cap)


def _read_capped(target: Target, chunks: Iterator[bytes], cap: int, deadline: float) -> bytes:
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > cap:
            raise _too_large(target.url, cap)
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("fetch deadline passed while reading the body")
    return bytes(body)


async def _aread_capped(target: Target, response: httpx.Response, cap: int) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_raw(CHUNK_BYTES):
        body += chunk
        if len(body) > cap:
            raise _too_large(target.url, cap)
    return bytes(body)


def _too_large(url: httpx.URL, cap: int) -> InputTooLarge:
    return InputTooLarge(f"{_show(url)}: the response is larger than the limit of {cap} bytes")


def _too_many_redirects(url: str, limit: int) -> FetchError:
    return FetchError(f"{_show(url)}: more than {limit} redirects")


@contextmanager
def _translate_errors(url: str, timeout: float) -> Iterator[None]:
    """Turn transport failures into :class:`FetchError`; our own errors pass through."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise FetchError(f"{_show(url)}: timed out after {timeout:g} s") from exc
    except httpx.HTTPError as exc:
        raise FetchError(f"{_show(url)}: could not fetch ({type(exc).__name__}: {exc})") from exc
