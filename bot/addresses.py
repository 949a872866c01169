"""Which URLs and network addresses a feed added from Slack may reach, pure: http(s) with a host and no
credentials, and public addresses only, so that whoever can type `/feeds add-feed` cannot make the bot fetch
from the network it runs in (SSRF). Resolving names and connecting are bot.fetch's; this module only judges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from urllib.parse import urlsplit

IPAddress = IPv4Address | IPv6Address

WEB_SCHEMES = ("http", "https")
CLOUD_METADATA = "cloud metadata"

# Checked in order, so the first match names the refusal: the metadata addresses come before the ranges
# that hold them, so a refusal says what they are.
_REFUSED_V4: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(network), kind)
    for network, kind in (
        ("169.254.169.254/32", CLOUD_METADATA),  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        ("100.100.100.200/32", CLOUD_METADATA),  # Alibaba Cloud
        ("0.0.0.0/8", "unspecified"),  # connecting to 0.0.0.0 reaches this very host
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("169.254.0.0/16", "link-local"),
        ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
        ("192.0.2.0/24", "reserved (documentation)"),
        ("198.51.100.0/24", "reserved (documentation)"),
        ("203.0.113.0/24", "reserved (documentation)"),
        ("198.18.0.0/15", "reserved (benchmarking)"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    )
)
_REFUSED_V6: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(network), kind)
    for network, kind in (
        ("fd00:ec2::254/128", CLOUD_METADATA),  # AWS's IPv6 instance metadata
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "reserved (IPv4-compatible, deprecated)"),
        ("fc00::/7", "unique-local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
        ("100::/64", "reserved (discard-only)"),
        ("2001::/32", "reserved (Teredo)"),
        ("2001:db8::/32", "reserved (documentation)"),
    )
)
# IPv6 addresses that carry an IPv4 address and reach it: a dual-stack socket connects to ::ffff:a.b.c.d
# as a.b.c.d, and NAT64 gateways translate 64:ff9b::a.b.c.d to it (DNS64 networks hand those out for every
# IPv4-only site, so the public ones must pass). Each is judged by the IPv4 address it carries.
_IPV4_MAPPED = IPv6Network("::ffff:0:0/96")
# ::ffff:0:a.b.c.d (RFC 2765's IPv4-translated form; "[::ffff:0:127.0.0.1]" is 127.0.0.1 written so): an
# SIIT translator delivers it to a.b.c.d. ipaddress neither decodes it nor calls it anything but global.
_IPV4_TRANSLATED = IPv6Network("::ffff:0:0:0/96")
_NAT64 = (IPv6Network("64:ff9b::/96"), IPv6Network("64:ff9b:1::/48"))


@dataclass(frozen=True)
class Refusal:
    """Why an address is not for feeds added from Slack: its `kind` ("loopback", "private", ...), and for
    an IPv6 form of an IPv4 address, which form (`via`)."""

    address: IPAddress
    kind: str
    via: str = ""

    @property
    def description(self) -> str:
        """Like "a loopback address", or "a cloud metadata address (the IPv4-mapped form of ...)"."""
        article = "an" if self.kind[0] in "aeiou" else "a"
        text = f"{article} {self.kind} address"
        return f"{text} ({self.via})" if self.via else text

    def __str__(self) -> str:
        return f"{self.address} is {self.description}"


def embedded_ipv4(address: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address an IPv6 address stands for, with the name of the form, or None."""
    if address in _IPV4_MAPPED:
        embedded = IPv4Address(int(address) & 0xFFFFFFFF)
        return "the IPv4-mapped form of " + str(embedded), embedded
    if address in _IPV4_TRANSLATED:
        embedded = IPv4Address(int(address) & 0xFFFFFFFF)
        return "the IPv4-translated form of " + str(embedded), embedded
    if address.sixtofour is not None:
        return "the 6to4 form of " + str(address.sixtofour), address.sixtofour
    if any(address in network for network in _NAT64):
        embedded = IPv4Address(int(address) & 0xFFFFFFFF)
        return "the NAT64 form of " + str(embedded), embedded
    return None


def address_refusal(address: IPAddress) -> Refusal | None:
    """None for a public address; otherwise why a feed added from Slack may not connect to it."""
    if isinstance(address, IPv6Address):
        if address.scope_id:  # fe80::1%eth0: only ever link-local
            return Refusal(address, "link-local")
        embedded = embedded_ipv4(address)
        if embedded is not None:
            via, ipv4 = embedded
            inner = address_refusal(ipv4)
            return None if inner is None else Refusal(address, inner.kind, via)
        for network6, kind in _REFUSED_V6:
            if address in network6:
                return Refusal(address, kind)
    else:
        for network4, kind in _REFUSED_V4:
            if address in network4:
                return Refusal(address, kind)
    # Whatever else the IANA registries set aside (ipaddress keeps that list up to date).
    if not address.is_global:
        return Refusal(address, "reserved")
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a feed added from Slack may connect to. `allow_private` (settings.allow_private_feeds)
    is for an operator whose feeds live on the private network; cloud metadata addresses stay refused even
    then: no feed lives there, and they hand out the host's cloud credentials."""

    allow_private: bool = False

    def refusal(self, address: IPAddress) -> Refusal | None:
        refusal = address_refusal(address)
        if refusal is not None and self.allow_private and refusal.kind != CLOUD_METADATA:
            return None
        return refusal


_LEGACY_IPV4_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


def ip_literal(host: str) -> IPAddress | None:
    """The address a URL's host names without DNS: an IP address (IPv6 with or without brackets), or one
    of the legacy IPv4 spellings that browsers and the C library still accept ("127.1", "2130706433",
    "0x7f.0.0.1", "0177.0.0.1"), which would otherwise reach a resolver as if they were names."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ip_address(text)
    except ValueError:
        pass
    return _legacy_ipv4(text)


def _legacy_ipv4(text: str) -> IPv4Address | None:
    """The WHATWG URL standard's IPv4 parser: 1 to 4 dot-separated parts, each decimal, octal (a leading 0)
    or hexadecimal (0x); the last part fills the remaining bytes."""
    parts = text.split(".")
    if len(parts) > 1 and parts[-1] == "":  # a trailing dot: "127.0.0.1."
        parts.pop()
    if not 1 <= len(parts) <= 4 or not all(_LEGACY_IPV4_PART.fullmatch(part) for part in parts):
        return None
    numbers = [_legacy_number(part) for part in parts]
    *leading, last = numbers
    if any(number > 255 for number in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return IPv4Address(value)


def _legacy_number(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part[1:], 8)
    return int(part)


def url_problem(scheme: str, host: str, has_credentials: bool) -> str | None:
    """Why a URL is not one a feed added from Slack may use, from its parts (None: it may). Callers parse
    with the parser that will be used to fetch, so both agree on what the parts are."""
    if not scheme:
        return "give a whole http or https URL, like https://example.com/feed.xml"
    if scheme.lower() not in WEB_SCHEMES:
        if scheme.lower() == "file" or len(scheme) == 1:  # C:\feeds is a path, not a URL with scheme c
            return "file paths are for rules.yaml; from Slack, give an http or https URL"
        return f"only http and https URLs can be fetched, not {scheme.lower()}:"
    if not host:
        return "the URL has no host"
    if has_credentials:
        # Never stored: the URL is shown in `list` and `export`, and logged.
        return "URLs with a user name or password are refused (they would be stored and shown)"
    return None


class RefusedURL(ValueError):
    """A URL a feed added from Slack may not use; the message is one line and never repeats the URL, which
    may carry a secret (a token in its query)."""


def check_feed_url(url: str) -> str:
    """The URL, stripped, when a feed added from Slack may use it; raises RefusedURL otherwise. Addresses
    are checked when the bot connects (they may change between now and then)."""
    text = url.strip()
    if not text:
        raise RefusedURL("the URL is empty")
    if any(char.isspace() for char in text):
        raise RefusedURL("the URL contains spaces; write them as %20")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - urlsplit only validates the port when it is read
    except ValueError as e:
        raise RefusedURL(f"the URL is not valid ({e})") from e
    has_credentials = parts.username is not None or parts.password is not None
    problem = url_problem(parts.scheme, parts.hostname or "", has_credentials)
    if problem is not None:
        raise RefusedURL(problem)
    return text
