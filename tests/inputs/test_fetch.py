from __future__ import annotations

import asyncio
import ipaddress
import shutil
import ssl
import time
from pathlib import Path

import pytest

from tests.helpers import png_bytes
from tests.inputs.input_samples import (
    LocalServer,
    self_signed_certificate,
    start_local_server,
)
from uniembed.errors import FetchError, InputTooLarge, InvalidInput
from uniembed.inputs.fetch import IPAddress, SafeFetcher, blocked_reason, parse_url
from uniembed.inputs.limits import InputLimits
from uniembed.server.errors import status_of

LOOPBACK = ipaddress.ip_address("127.0.0.1")


class LoopbackIsPublic(SafeFetcher):
    """Treats exactly 127.0.0.1 as a public address, so a local server can play a public one while
    every other non-public address stays refused."""

    def is_allowed(self, address: IPAddress) -> bool:
        return address == LOOPBACK or super().is_allowed(address)


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"unexpected DNS lookup of {host}")


# --------------------------------------------------------------------- address classification
@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.0.0.1", "private (RFC 1918)"),
        ("172.16.5.4", "private (RFC 1918)"),
        ("172.31.255.255", "private (RFC 1918)"),
        ("192.168.1.1", "private (RFC 1918)"),
        ("169.254.169.254", "link-local (includes cloud metadata 169.254.169.254)"),
        ("100.64.0.1", "shared carrier-grade NAT (RFC 6598)"),
        ("100.127.255.255", "shared carrier-grade NAT (RFC 6598)"),
        ("0.0.0.0", "unspecified ('this network')"),
        ("224.0.0.251", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "reserved (includes broadcast)"),
        ("240.0.0.1", "reserved (includes broadcast)"),
        ("192.0.2.10", "reserved (documentation)"),
        ("198.18.0.1", "reserved (benchmarking)"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fd12:3456::1", "private (unique local address)"),
        ("fc00::1", "private (unique local address)"),
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local (deprecated)"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.1.2.3", "private (RFC 1918)"),
        ("::ffff:169.254.169.254", "link-local (includes cloud metadata 169.254.169.254)"),
        ("64:ff9b::a00:1", "private (RFC 1918)"),  # NAT64 of 10.0.0.1
        ("2002:c0a8:0101::1", "private (RFC 1918)"),  # 6to4 of 192.168.1.1
        ("2001:db8::1", "reserved (documentation)"),
        ("2001:0:4136:e378::1", "reserved (IETF protocol assignments, Teredo)"),
        ("::7f00:1", "reserved (not global unicast)"),  # IPv4-compatible ::127.0.0.1
        ("100::1", "reserved (not global unicast)"),
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("100.63.255.255", None),
        ("100.128.0.0", None),
        ("172.15.255.255", None),
        ("172.32.0.0", None),
        ("93.184.216.34", None),
        ("2606:4700:4700::1111", None),
        ("2a00:1450:4001:80b::200e", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),  # NAT64 of 8.8.8.8
    ],
)
def test_blocked_reason_classifies_addresses(address: str, reason: str | None) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


# --------------------------------------------------------------------- per-hop check
@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "gopher://example.com/",
        "javascript:alert(1)",
        "data:,x",
    ],
)
def test_only_http_and_https_schemes(url: str) -> None:
    with pytest.raises(FetchError, match="is not allowed; use http or https"):
        SafeFetcher(resolver=no_dns).fetch(url)


def test_invalid_url_and_missing_host() -> None:
    with pytest.raises(FetchError, match="not a valid URL"):
        parse_url("http://[::1/")
    with pytest.raises(FetchError, match="not a valid host name"):
        parse_url("http://exa mple.com/")
    with pytest.raises(FetchError, match="port 99999999 is out of range"):
        parse_url("http://example.com:99999999/")
    with pytest.raises(FetchError, match="URL has no host"):
        parse_url("http:///path")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://[::1]:8080/",
        "http://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/x.png",
        "http://[::ffff:192.168.0.1]/",
        "http://0.0.0.0:80/",
    ],
)
def test_private_ip_literals_are_refused_without_dns(url: str) -> None:
    with pytest.raises(FetchError, match="only public addresses are allowed") as info:
        SafeFetcher(resolver=no_dns).check(url)
    assert status_of(info.value) == 400


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST.", "api.localhost", "localhost.localdomain"]
)
def test_localhost_names_are_refused_before_resolution(host: str) -> None:
    with pytest.raises(FetchError, match="is local"):
        SafeFetcher(resolver=no_dns).check(f"http://{host}/a.png")


def test_every_resolved_address_must_be_public() -> None:
    records = {"mixed.test": ["93.184.216.34", "10.0.0.7"], "internal.test": ["fd00::5"]}
    fetcher = SafeFetcher(resolver=lambda host, port: records[host])
    for host in records:
        with pytest.raises(FetchError) as info:
            fetcher.check(f"https://{host}/doc.pdf")
        assert "resolves to an address that is private" in info.value.message
        assert "10.0.0.7" not in info.value.message  # internal DNS records are not revealed


def test_check_pins_public_addresses_and_keeps_the_name() -> None:
    fetcher = SafeFetcher(resolver=lambda host, port: ["93.184.216.34", "2606:2800:220:1::1"])
    target = fetcher.check("https://images.example:8443/a.png?x=1#frag")
    assert target.addresses == (
        ipaddress.ip_address("93.184.216.34"),
        ipaddress.ip_address("2606:2800:220:1::1"),
    )
    request = target.request_for(target.addresses[1])
    assert str(request.url) == "https://[2606:2800:220:1::1]:8443/a.png?x=1"
    assert request.headers["Host"] == "images.example:8443"
    assert request.extensions["sni_hostname"] == "images.example"
    assert request.headers["Accept-Encoding"] == "identity"


def test_unresolvable_and_empty_hosts() -> None:
    def fail(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(FetchError, match="could not resolve host 'nowhere.test'"):
        SafeFetcher(resolver=fail).check("http://nowhere.test/")
    with pytest.raises(FetchError, match="has no addresses"):
        SafeFetcher(resolver=lambda h, p: []).check("http://empty.test/")


def test_allow_private_urls_allows_private_targets() -> None:
    fetcher = SafeFetcher(InputLimits(allow_private_urls=True), resolver=lambda h, p: ["10.0.0.7"])
    assert fetcher.check("http://localhost:9/x").addresses == (ipaddress.ip_address("10.0.0.7"),)
    assert fetcher.check("http://169.254.169.254/").addresses == (
        ipaddress.ip_address("169.254.169.254"),
    )


# --------------------------------------------------------------------- against a local server
def test_local_server_is_refused_by_default(local_server: LocalServer) -> None:
    local_server.state.routes["/a.png"] = png_bytes()
    with pytest.raises(FetchError, match="address 127.0.0.1 is loopback"):
        SafeFetcher().fetch(local_server.url("/a.png"))
    assert local_server.state.paths == []  # refused before connecting


def test_local_server_is_served_when_private_urls_are_allowed(local_server: LocalServer) -> None:
    body = png_bytes()
    local_server.state.routes["/a.png"] = body
    fetcher = SafeFetcher(InputLimits(allow_private_urls=True))
    assert fetcher.fetch(local_server.url("/a.png")) == body
    assert asyncio.run(fetcher.afetch(local_server.url("/a.png"))) == body


def test_connection_goes_to_the_checked_address(local_server: LocalServer) -> None:
    """DNS rebinding: the name is resolved once per hop and the request goes to that address."""
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    local_server.state.routes["/a.png"] = b"pinned"
    fetcher = LoopbackIsPublic(resolver=rebinding)
    assert fetcher.fetch(local_server.url("/a.png", host="images.test")) == b"pinned"
    assert calls == ["images.test"]
    assert local_server.state.hosts == [f"images.test:{local_server.port}"]


def test_redirects_are_followed_and_rechecked(local_server: LocalServer) -> None:
    local_server.state.routes["/final.png"] = b"final"
    fetcher = LoopbackIsPublic()
    url = local_server.url("/redirect?code=307&to=/final.png")
    assert fetcher.fetch(url) == b"final"
    assert asyncio.run(fetcher.afetch(url)) == b"final"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.1/", "private"),
        ("http://[::1]:80/", "loopback"),
        ("http://localhost/", "is local"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ],
)
def test_redirect_to_a_private_address_is_refused(
    local_server: LocalServer, target: str, message: str
) -> None:
    fetcher = LoopbackIsPublic(resolver=no_dns)
    url = local_server.url(f"/redirect?to={target}")
    with pytest.raises(FetchError, match=message):
        fetcher.fetch(url)
    with pytest.raises(FetchError, match=message):
        asyncio.run(fetcher.afetch(url))
    assert all(path.startswith("/redirect") for path in local_server.state.paths)


def test_too_many_redirects(local_server: LocalServer) -> None:
    fetcher = LoopbackIsPublic(InputLimits(max_redirects=3))
    with pytest.raises(FetchError, match="more than 3 redirects"):
        fetcher.fetch(local_server.url("/loop"))
    assert len(local_server.state.paths) == 4
    with pytest.raises(FetchError, match="more than 3 redirects"):
        asyncio.run(fetcher.afetch(local_server.url("/loop")))


def test_redirect_without_location(local_server: LocalServer) -> None:
    with pytest.raises(FetchError, match="without a Location"):
        LoopbackIsPublic().fetch(local_server.url("/no-location"))


def test_http_error_status(local_server: LocalServer) -> None:
    with pytest.raises(FetchError, match="server answered HTTP 404"):
        LoopbackIsPublic().fetch(local_server.url("/missing"))
    with pytest.raises(FetchError, match="server answered HTTP 404"):
        asyncio.run(LoopbackIsPublic().afetch(local_server.url("/missing")))


def test_compressed_responses_are_refused(local_server: LocalServer) -> None:
    with pytest.raises(FetchError, match=r"compressed responses \(gzip\)"):
        LoopbackIsPublic().fetch(local_server.url("/gzip"))


def test_size_cap_stops_a_streamed_body_early(local_server: LocalServer) -> None:
    cap = 1024 * 1024
    with pytest.raises(InputTooLarge, match=f"larger than the limit of {cap} bytes") as info:
        LoopbackIsPublic().fetch(local_server.url("/endless"), max_bytes=cap)
    assert status_of(info.value) == 413
    assert local_server.state.stream_done.wait(10)
    # The server could send up to 256 MiB; it stopped after the cap plus socket buffers.
    assert local_server.state.streamed_bytes < 64 * 1024 * 1024


def test_async_size_cap_stops_a_streamed_body_early(local_server: LocalServer) -> None:
    with pytest.raises(InputTooLarge):
        asyncio.run(LoopbackIsPublic().afetch(local_server.url("/endless"), max_bytes=1024 * 1024))
    assert local_server.state.stream_done.wait(10)
    assert local_server.state.streamed_bytes < 64 * 1024 * 1024


def test_announced_length_over_the_cap_is_refused_before_reading(local_server: LocalServer) -> None:
    fetcher = LoopbackIsPublic(InputLimits(max_image_bytes=1000, max_pdf_bytes=2000))
    with pytest.raises(InputTooLarge, match="limit of 2000 bytes"):
        fetcher.fetch(local_server.url("/announced-huge"))


def test_timeout(local_server: LocalServer) -> None:
    fetcher = LoopbackIsPublic(InputLimits(fetch_timeout=0.3))
    start = time.monotonic()
    with pytest.raises(FetchError, match="timed out after 0.3 s"):
        fetcher.fetch(local_server.url("/slow?seconds=2"))
    with pytest.raises(FetchError, match="timed out after 0.3 s"):
        asyncio.run(fetcher.afetch(local_server.url("/slow?seconds=2")))
    assert time.monotonic() - start < 1.8


def test_connection_refused_is_a_fetch_error(local_server: LocalServer) -> None:
    port = local_server.port
    local_server.stop()
    with pytest.raises(FetchError, match="could not fetch"):
        LoopbackIsPublic().fetch(f"http://127.0.0.1:{port}/a.png")


def test_fetch_errors_are_invalid_input() -> None:
    assert issubclass(FetchError, InvalidInput) and status_of(FetchError("x")) == 400


@pytest.mark.parametrize(
    "url", ["http://2130706433/", "http://0x7f.1/", "http://127.1/", "http://017700000001/"]
)
def test_numeric_host_tricks_are_caught_after_resolution(url: str) -> None:
    # The system resolver parses these numeric forms locally (inet_aton); no DNS query is sent.
    with pytest.raises(FetchError, match="resolves to an address that is loopback"):
        SafeFetcher().check(url)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize(("cert_name", "works"), [("images.test", True), ("other.test", False)])
def test_https_is_pinned_but_verified_against_the_name(
    tmp_path: Path, cert_name: str, works: bool
) -> None:
    """The TCP connection goes to the checked address, while SNI and the certificate check use the
    URL's host name: a certificate for another name is refused."""
    cert, key = self_signed_certificate(tmp_path, cert_name)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    server = start_local_server(server_tls)
    try:
        server.state.routes["/a.png"] = b"over tls"
        fetcher = LoopbackIsPublic(
            resolver=lambda host, port: ["127.0.0.1"],
            verify=ssl.create_default_context(cafile=str(cert)),
        )
        url = f"https://images.test:{server.port}/a.png"
        if works:
            assert fetcher.fetch(url) == b"over tls"
            assert asyncio.run(fetcher.afetch(url)) == b"over tls"
            assert server.state.hosts == [f"images.test:{server.port}"] * 2
        else:
            with pytest.raises(FetchError, match="could not fetch .*CERTIFICATE_VERIFY_FAILED"):
                fetcher.fetch(url)
    finally:
        server.stop()
