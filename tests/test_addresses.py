"""Which URLs and addresses a feed added from Slack may reach: pure tables, no sockets."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from bot.addresses import AddressPolicy, RefusedURL, address_refusal, check_feed_url, ip_literal


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        # IPv4
        ("8.8.8.8", None),
        ("93.184.216.34", None),
        ("1.1.1.1", None),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("172.32.0.1", None),  # just outside 172.16.0.0/12
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("169.254.169.254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "reserved (documentation)"),
        ("198.51.100.7", "reserved (documentation)"),
        ("203.0.113.9", "reserved (documentation)"),
        ("198.18.0.1", "reserved (benchmarking)"),
        ("192.0.0.8", "reserved (IETF protocol assignments)"),
        # IPv6
        ("2606:4700:4700::1111", None),
        ("2a00:1450:4001:80b::200e", None),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fd00:ec2::254", "cloud metadata"),
        ("fd12:3456:789a::1", "unique-local"),
        ("fc00::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fec0::1", "site-local (deprecated)"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("100::1", "reserved (discard-only)"),
        ("2001:db8::1", "reserved (documentation)"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "reserved (Teredo)"),
        ("::127.0.0.1", "reserved (IPv4-compatible, deprecated)"),
        ("::8.8.8.8", "reserved (IPv4-compatible, deprecated)"),
        # IPv6 forms of IPv4 addresses are judged as the IPv4 address they reach
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:7f00:1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("::ffff:0.0.0.0", "unspecified"),
        ("::ffff:8.8.8.8", None),
        ("::ffff:0:127.0.0.1", "loopback"),  # IPv4-translated (::ffff:0:0:0/96), not IPv4-mapped
        ("::ffff:0:a00:1", "private"),
        ("::ffff:0:169.254.169.254", "cloud metadata"),
        ("::ffff:0:8.8.8.8", None),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::1", "cloud metadata"),  # 6to4 of 169.254.169.254
        ("2002:808:808::1", None),
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("64:ff9b::a00:1", "private"),
        ("64:ff9b::808:808", None),  # what DNS64 hands out for a public IPv4-only site
    ],
)
def test_addresses_are_refused_unless_public(address: str, kind: str | None) -> None:
    refusal = address_refusal(ip_address(address))
    assert (refusal.kind if refusal else None) == kind


def test_a_refusal_says_what_the_address_is_and_through_which_form() -> None:
    assert str(address_refusal(ip_address("127.0.0.1"))) == "127.0.0.1 is a loopback address"
    assert str(address_refusal(ip_address("::"))) == ":: is an unspecified address"
    mapped = str(address_refusal(ip_address("::ffff:169.254.169.254")))
    # How the IPv6 address itself is written changed in Python 3.13 (::ffff:a9fe:a9fe before).
    assert mapped.endswith(" is a cloud metadata address (the IPv4-mapped form of 169.254.169.254)")


@pytest.mark.parametrize(
    ("address", "by_default", "with_private_allowed"),
    [
        ("8.8.8.8", True, True),
        ("127.0.0.1", False, True),
        ("10.0.0.1", False, True),
        ("::1", False, True),
        ("fd12::1", False, True),
        ("::ffff:192.168.0.1", False, True),
        ("169.254.169.254", False, False),  # never a feed, always the host's credentials
        ("::ffff:169.254.169.254", False, False),
        ("::ffff:0:169.254.169.254", False, False),
        ("fd00:ec2::254", False, False),
    ],
)
def test_allowing_private_feeds_still_refuses_cloud_metadata(
    address: str, by_default: bool, with_private_allowed: bool
) -> None:
    assert (AddressPolicy().refusal(ip_address(address)) is None) is by_default
    assert (AddressPolicy(allow_private=True).refusal(ip_address(address)) is None) is with_private_allowed


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("169.254.43518", "169.254.169.254"),
        ("example.com", None),
        ("feeds.example", None),
        ("1.2.3.4.5", None),
        ("256.0.0.1", None),
        ("08.0.0.1", None),  # not octal, not decimal: a name (and no resolver will find it)
        ("4294967296", None),
        ("0x", "0.0.0.0"),
    ],
)
def test_hosts_that_are_addresses_in_any_spelling_are_recognised(host: str, address: str | None) -> None:
    assert ip_literal(host) == (ip_address(address) if address else None)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://example.com/feed.xml", None),
        ("http://example.com:8080/rss?token=abc", None),
        ("  https://example.com/feed  ", None),
        ("/etc/passwd", "give a whole http or https URL"),
        ("feeds/x.xml", "give a whole http or https URL"),
        ("file:///etc/passwd", "file paths are for rules.yaml"),
        (r"C:\feeds\x.xml", "file paths are for rules.yaml"),
        ("ftp://example.com/feed", "only http and https URLs can be fetched, not ftp:"),
        ("gopher://127.0.0.1:6379/_INFO", "only http and https URLs can be fetched, not gopher:"),
        ("javascript:alert(1)", "only http and https URLs can be fetched, not javascript:"),
        ("https:///feed.xml", "the URL has no host"),
        ("https://user:hunter2@example.com/feed", "URLs with a user name or password are refused"),
        ("https://token@example.com/feed", "URLs with a user name or password are refused"),
        ("https://example.com/my feed.xml", "the URL contains spaces"),
        ("https://example.com:99999/feed", "the URL is not valid"),
        ("", "the URL is empty"),
    ],
)
def test_feed_urls_from_slack_are_http_with_a_host_and_no_credentials(url: str, problem: str | None) -> None:
    if problem is None:
        assert check_feed_url(url) == url.strip()
        return
    with pytest.raises(RefusedURL, match="^" + problem.replace("(", r"\(")) as refused:
        check_feed_url(url)
    assert "hunter2" not in str(refused.value) and "token" not in str(refused.value)
