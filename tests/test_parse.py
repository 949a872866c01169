"""bot.parse against the bundled SCMP feed, 28 real feeds from ../shared/feeds, and small inline documents."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import bot.parse
from bot.errors import FeedError
from bot.model import Item, ParsedFeed
from bot.parse import canonical_url, parse_feed

SCMP = Path(__file__).parent.parent / "bot" / "sample" / "scmp-semiconductors.xml"
SHARED_FEEDS = Path(__file__).resolve().parents[2] / "shared" / "feeds"


@cache
def scmp() -> ParsedFeed:
    return parse_feed(SCMP.read_bytes(), "scmp")


# ---------------------------------------------------------------------------------------------------------
# The bundled SCMP feed


def test_scmp_has_fifty_items_and_no_warning() -> None:
    parsed = scmp()
    assert parsed.title == "Semiconductors: Companies - South China Morning Post"
    assert len(parsed.items) == 50
    assert parsed.warning is None
    assert len({item.key for item in parsed.items}) == 50
    assert all(item.feed_id == "scmp" for item in parsed.items)


def test_scmp_first_item_exact_values() -> None:
    first = scmp().items[0]
    url = (
        "https://www.scmp.com/opinion/comment/article/3355307/"
        "us-pressure-has-only-helped-make-chinas-tech-giants-stronger"
    )
    assert first.key == url
    assert first.link == url
    assert first.title == "US pressure has only helped make China’s tech giants stronger"
    assert first.author == "SCMP Editorial"
    assert first.published == datetime(2026, 5, 31, 23, 15, 11, tzinfo=UTC)
    assert first.thumbnail == (
        "https://cdn.i-scmp.com/sites/default/files/styles/1280x720/public/d8/images/canvas/2026/05/29/"
        "015cf816-49a1-44ec-b4ef-1d3c0d8cb6ce_e3dd1a7d.jpg?itok=aHlNJyPD&v=1780044211"
    )
    # The description has a newline before "Now, though": collapsed to one space, "..." kept.
    assert first.summary.startswith("Whatever doesn’t kill you makes you stronger.")
    assert "also-rans. Now, though, across entire fields" in first.summary
    assert first.summary.endswith("to...")


def test_scmp_keys_and_links_are_canonical() -> None:
    for item in scmp().items:
        assert "utm_" not in item.key and "?" not in item.key
        assert item.link == item.key  # guid isPermaLink="true" equals the link
        assert item.link.startswith("https://www.scmp.com/")
        assert canonical_url(item.link) == item.link


def test_scmp_every_item_has_a_media_content_thumbnail_with_plain_ampersands() -> None:
    for item in scmp().items:
        assert item.thumbnail is not None
        assert item.thumbnail.startswith("https://cdn.i-scmp.com/")
        assert "&amp;" not in item.thumbnail
        assert re.search(r"\?itok=[^&]+&v=\d+$", item.thumbnail)


def test_scmp_comma_separated_authors_are_spaced() -> None:
    authors = {item.author for item in scmp().items}
    assert "Coco Feng, Ann Cao, Iris Deng" in authors  # "Coco Feng,Ann Cao,Iris Deng" in the XML
    assert "Iris Deng, Ann Cao" in authors
    assert all(re.search(r",\S", author) is None for author in authors)
    assert all(author for author in authors)


def test_scmp_text_is_plain_single_line_with_curly_quotes() -> None:
    items = scmp().items
    titles = [item.title for item in items]
    assert (
        "Another ‘DeepSeek moment’? Huawei milestone alters China trajectory in chip race: analysts" in titles
    )
    for item in items:
        for text in (item.title, item.summary):
            assert text and text == text.strip()
            assert "\n" not in text and "  " not in text and "\xa0" not in text
            assert "&amp;" not in text and "<" not in text


def test_scmp_dates_are_aware_utc() -> None:
    for item in scmp().items:
        assert item.published is not None
        assert item.published.utcoffset() == timedelta(0)
        assert item.published.tzinfo == UTC


def test_scmp_items_survive_the_store_round_trip() -> None:
    for item in scmp().items:
        assert Item.from_dict(item.to_dict()) == item


# ---------------------------------------------------------------------------------------------------------
# Real feeds in ../shared/feeds (documented in SOURCES.md there)


@dataclass(frozen=True)
class Expect:
    items: int
    thumbnails: int  # items with a thumbnail, after de-duplication
    thumbnail_prefix: str = ""  # where the first thumbnail comes from
    warning: str = ""  # a fragment of ParsedFeed.warning; "" means no warning


# Counts from SOURCES.md, less the duplicate ids it lists.
REAL_FEEDS: dict[str, Expect] = {
    "aktuality_sk_2021-01.rss.xml": Expect(30, 30, "https://t.aimg.sk/"),  # <img> in description
    "bbc_news_frontpage_2024-08.rss.xml": Expect(53, 53, "https://ichef.bbci.co.uk/news/240/"),  # thumbnail
    "bbc_news_world_2026-02.rss.xml": Expect(33, 33, "https://ichef.bbci.co.uk/ace/standard/240/"),
    "bbc_urdu_2018-10.rss.xml": Expect(26, 26, "http://c.files.bbci.co.uk/"),
    "cnn_hp_hero_2024-08.rss.xml": Expect(69, 69, "https://cdn.cnn.com/"),  # media:group > media:content
    "ct24_vyber-redakce_cs_2025-04.rss.xml": Expect(30, 30, "https://fs2-ct24.ceskatelevize.cz/image/"),
    "dawn_world_2026-02.rss.xml": Expect(30, 30, "https://i.dawn.com/large/"),
    "dw_english_2026-02.rdf.xml": Expect(141, 0),
    "edge_al-monitor_duplicate-guids_2026-02.rss.xml": Expect(11, 0),  # 20 entries, 9 repeated ids
    "edge_boston_empty-guids_2026-02.rss.xml": Expect(10, 10, "https://www.boston.com/wp-content/"),
    "edge_dbengines_undefined-entity.rss.xml": Expect(1, 0, warning="undefined entity"),
    "edge_scriptingnews_untitled-items_dup-guids_2017-06.rss.xml": Expect(
        48, 1, "http://scripting.com/images/"
    ),
    "edge_uol_no-xmldecl_latin1-bytes.rss.xml": Expect(
        15, 4, "https://conteudo.imguol.com.br/", "windows-1252"
    ),
    "elpais_english_2026-02.rss.xml": Expect(56, 56, "https://images.english.elpais.com/"),
    # Image only as an enclosure.
    "foreignpolicy_2026-02.rss.xml": Expect(25, 25, "https://foreignpolicy.com/wp-content/uploads/"),
    # media:content with neither medium nor type: recognised by the .jpg path.
    "guardian_us_2018-01.rss.xml": Expect(55, 55, "https://i.guim.co.uk/img/media/"),
    "hackernews_newest_2020-07.rss.xml": Expect(20, 0),
    "heise_developer_de_2016-02.atom.xml": Expect(15, 12, "http://www.heise.de/scale/"),  # <img> in content
    # Every <img> here is a 1x1 Feedburner counter, so no thumbnail at all.
    "jn_pt_iso-8859-1_2018-01.rss.xml": Expect(40, 0),
    "kc0011_zh_gb2312_2020-01.rss.xml": Expect(20, 9, "http://www.kc0011.net/skins/"),  # relative <img>
    # enclosure type="image/jpg" (sic), before the same picture as an <img>.
    "mercopress_2026-02.rss.xml": Expect(10, 10, "https://en.mercopress.com/data/cache/"),
    # <img> in content:encoded only.
    "npr_world_2026-02.rss.xml": Expect(10, 10, "https://npr.brightspotcdn.com/"),
    "nyt_world_2026-02.rss.xml": Expect(57, 51, "https://static01.nyt.com/images/"),
    "reddit_homelab_mediarss_2023-07.atom.xml": Expect(25, 1, "https://b.thumbs.redditmedia.com/"),
    "scmp-semiconductors.xml": Expect(50, 50, "https://cdn.i-scmp.com/"),
    # <img> in the Atom content.
    "theverge_2025-07.atom.xml": Expect(10, 10, "https://platform.theverge.com/wp-content/"),
    "theweek_2026-02.rss.xml": Expect(50, 50, "https://cdn.mos.cms.futurecdn.net/"),
}
# Both are a feed's root element with the XML broken before the first item could be read.
BROKEN_FEEDS = {
    "edge_reuters_truncated-server-error_2020-03.rss.xml": "no element found",
    "edge_dylanharris_garbled-prolog_2026-02.rss.xml": "not well-formed",
}


@pytest.fixture(scope="module")
def shared_feeds() -> Path:
    if not SHARED_FEEDS.is_dir():
        pytest.skip(
            "../shared/feeds not found: the real-feed tests need the shared feed folder beside the repository"
        )
    return SHARED_FEEDS


@cache
def _parse_shared(name: str) -> ParsedFeed:
    return parse_feed((SHARED_FEEDS / name).read_bytes(), name.split("_")[0])


@pytest.fixture
def real(shared_feeds: Path) -> Any:
    """`real(name)`: that shared feed, parsed once per test session."""
    return _parse_shared


def test_the_tables_cover_every_shared_feed(shared_feeds: Path) -> None:
    assert {path.name for path in shared_feeds.glob("*.xml")} == set(REAL_FEEDS) | set(BROKEN_FEEDS)


@pytest.mark.parametrize("name", sorted(REAL_FEEDS))
def test_real_feed(real: Any, name: str) -> None:
    expect = REAL_FEEDS[name]
    parsed: ParsedFeed = real(name)
    assert len(parsed.items) == expect.items
    assert len({item.key for item in parsed.items}) == expect.items
    with_thumbnail = [item.thumbnail for item in parsed.items if item.thumbnail]
    assert len(with_thumbnail) == expect.thumbnails
    if expect.thumbnail_prefix:
        assert with_thumbnail[0].startswith(expect.thumbnail_prefix)
    for thumbnail in with_thumbnail:
        assert re.match(r"https?://[^/?#\s]+", thumbnail) and "&amp;" not in thumbnail
    if expect.warning:
        assert parsed.warning is not None and expect.warning in parsed.warning
        assert "\n" not in parsed.warning
    else:
        assert parsed.warning is None
    assert parsed.title
    for item in parsed.items:
        assert item.key == item.key.strip() and item.key
        assert item.link == canonical_url(item.link)
        for text in (item.title, item.summary, item.author):
            assert text == text.strip() and "\n" not in text and "  " not in text
        assert item.published is None or item.published.tzinfo == UTC


@pytest.mark.parametrize("name", sorted(BROKEN_FEEDS))
def test_broken_real_feed_is_a_feed_error(shared_feeds: Path, name: str) -> None:
    # Reuters has a channel header and 0 items, but an empty ParsedFeed would be recorded as "the feed is
    # empty now" (the first poll's baseline, the keys still in the feed). See _reject_if_not_a_feed.
    with pytest.raises(FeedError) as raised:
        parse_feed((shared_feeds / name).read_bytes(), "broken")
    assert raised.value.feed_id == "broken"
    assert BROKEN_FEEDS[name] in raised.value.reason
    assert "\n" not in raised.value.reason


def test_dw_maca_tracking_is_stripped(real: Any) -> None:
    items = real("dw_english_2026-02.rdf.xml").items
    assert all("maca" not in item.key and "maca" not in item.link for item in items)
    assert all(item.key == item.link and item.key.startswith("https://www.dw.com/en/") for item in items)
    assert (
        items[0].key == "https://www.dw.com/en/france-arrests-nine-in-right-wing-activist-s-death/a-75995188"
    )


def test_al_monitor_keeps_the_first_of_each_repeated_guid(real: Any) -> None:
    keys = [item.key for item in real("edge_al-monitor_duplicate-guids_2026-02.rss.xml").items]
    assert len(keys) == len(set(keys)) == 11
    assert sum("qatar-pm-arrives-venezuela" in key for key in keys) == 1


def test_boston_empty_guids_fall_back_to_links(real: Any) -> None:
    items = real("edge_boston_empty-guids_2026-02.rss.xml").items
    assert len({item.key for item in items}) == 10
    assert sum(item.key == item.link for item in items) == 6  # the 6 empty guids
    assert sum(item.key.startswith("https://www.boston.com/?p=") for item in items) == 4


def test_scripting_news_untitled_items_have_distinct_keys(real: Any) -> None:
    items = real("edge_scriptingnews_untitled-items_dup-guids_2017-06.rss.xml").items
    untitled = [item for item in items if not item.title]
    assert len(untitled) == 38  # 39 in the file, one of them behind a repeated guid
    assert len({item.key for item in untitled}) == 38
    assert all(item.summary for item in untitled)
    assert all(item.key.startswith("http://scripting.com/2017/") for item in items)


def test_bbc_fragment_guids_are_kept_and_the_repeat_dropped(real: Any) -> None:
    items = real("bbc_news_frontpage_2024-08.rss.xml").items
    assert all(re.search(r"#\d+$", item.key) for item in items)  # #0 to #10
    assert sum(item.key.endswith("/olympics/articles/cjdk5nl7nryo#2") for item in items) == 1
    # BBC World's link carries at_medium/at_campaign: those are not tracking parameters we know, kept.
    world = real("bbc_news_world_2026-02.rss.xml").items
    assert all("at_medium=RSS" in item.link for item in world)


def test_non_url_ids_are_kept_verbatim(real: Any) -> None:
    reddit = real("reddit_homelab_mediarss_2023-07.atom.xml").items
    assert all(re.fullmatch(r"t3_[0-9a-z]+", item.key) for item in reddit)
    hn = real("hackernews_newest_2020-07.rss.xml").items
    assert all(item.key.startswith("https://news.ycombinator.com/item?id=") for item in hn)
    assert sum(item.key != item.link for item in hn) == 19


def test_kc0011_gb2312_is_decoded_and_relative_img_resolved(real: Any) -> None:
    parsed = real("kc0011_zh_gb2312_2020-01.rss.xml")
    assert parsed.title == "投资资讯网交易在线--流通纪念币最新20篇论坛主题-全文"
    assert parsed.items[0].title == "建国35周年纪念，华表，和平鸽"
    assert parsed.items[0].author == "大鱼儿"
    # `<img src="skins/default/filetype/jpg.gif">` (the forum's file-type icon) against the item link.
    assert parsed.items[0].thumbnail == "http://www.kc0011.net/skins/default/filetype/jpg.gif"


def test_latin1_feeds_are_decoded(real: Any) -> None:
    uol = real("edge_uol_no-xmldecl_latin1-bytes.rss.xml")
    assert uol.items[0].title == "Ibope: Bolsonaro perde de Haddad, Ciro e Alckmin em simulações de 2º turno"
    assert all(item.published is None for item in uol.items)  # pubDate unparseable
    jn = real("jn_pt_iso-8859-1_2018-01.rss.xml")
    assert jn.title == "Jornal de Notícias - Últimas Notícias"
    for item in (*uol.items, *jn.items):
        assert "Ã" not in item.title + item.summary and "\ufffd" not in item.title + item.summary


def test_dbengines_undefined_entity_still_gives_its_item(real: Any) -> None:
    (item,) = real("edge_dbengines_undefined-entity.rss.xml").items
    assert item.title and item.link.startswith("https://db-engines.com/")
    assert "&nbsp;" not in item.summary and "\xa0" not in item.summary


def test_cnn_items_without_pubdate_have_no_date(real: Any) -> None:
    items = real("cnn_hp_hero_2024-08.rss.xml").items
    assert sum(item.published is None for item in items) == 16


# ---------------------------------------------------------------------------------------------------------
# Not feeds


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty document"),
        (b"  \r\n ", "empty document"),
        (
            b"<!DOCTYPE html><html><head><title>Error</title></head><body><p>502 Bad Gateway</body></html>",
            "HTML",
        ),
        (
            b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body><p>hi</p></body></html>',
            "HTML",
        ),
        (bytes(range(256)) * 8, "not a feed"),
        (b'{"items": []}', "not a feed"),
        (b"<config><setting>1</setting></config>", "no RSS, RDF or Atom root element"),
        (b'<rss version="2.0"><channel><title>cut off', "broken feed"),
    ],
    ids=["empty", "blank", "html", "xhtml", "random", "json", "other-xml", "truncated-before-items"],
)
def test_not_a_feed(body: bytes, reason: str) -> None:
    with pytest.raises(FeedError) as raised:
        parse_feed(body, "nope")
    assert raised.value.feed_id == "nope"
    assert reason in raised.value.reason
    assert "\n" not in raised.value.reason and len(raised.value.reason) < 250


# ---------------------------------------------------------------------------------------------------------
# A document cut short


@pytest.mark.parametrize("cut", [2_000, 40_000, 80_000, -12, -3])
def test_a_feed_cut_short_is_an_error_not_its_first_items(cut: int) -> None:
    body = SCMP.read_bytes()[:cut]
    with pytest.raises(FeedError) as raised:
        parse_feed(body, "cut")
    assert raised.value.reason.startswith("broken feed, cut off before its end: line ")
    assert "\n" not in raised.value.reason


def test_a_feed_that_only_forgets_its_last_closing_tag_is_read_whole() -> None:
    body = SCMP.read_bytes().rstrip()
    assert body.endswith(b"</rss>")
    parsed = parse_feed(body[: -len(b"</rss>")], "sloppy")
    assert len(parsed.items) == 50 and parsed.warning and "no element found" in parsed.warning


# ---------------------------------------------------------------------------------------------------------
# Entity declarations: what could expand is refused before feedparser sees it

_RSS = (
    b'<rss version="2.0"><channel><title>T</title><item><title>A &amp; B</title><link>https://e.com/1</link>'
)
_RSS_END = b"</item></channel></rss>"


def billion_laughs(levels: int = 10) -> bytes:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, levels)
    ]
    head = '<?xml version="1.0"?>\n<!DOCTYPE rss [\n' + "\n".join(entities) + "\n]>\n"
    return head.encode() + _RSS + f"<description>&lol{levels - 1};</description>".encode() + _RSS_END


def one_big_entity(size: int = 100_000, uses: int = 20_000) -> bytes:
    """No entity refers to another, so feedparser keeps it; each use is 3 bytes that expand to `size`."""
    head = b'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY a "' + b"x" * size + b'">\n]>\n'
    return head + _RSS + b"<description>" + b"&a;" * uses + b"</description>" + _RSS_END


@pytest.mark.parametrize(
    ("body", "entity"),
    [
        (billion_laughs(), "lol1"),  # lol0 is three letters for a five-byte reference: harmless
        (one_big_entity(), "a"),
        (billion_laughs().decode().encode("utf-16"), "lol1"),
        (b'<!DOCTYPE rss [<!ENTITY ext SYSTEM "file:///etc/passwd">]>' + _RSS + _RSS_END, "ext"),
        (b"<!DOCTYPE rss [<!ENTITY % p \"<!ENTITY q 'x'>\"> %p;]>" + _RSS + _RSS_END, "%p"),
        (b'<!DOCTYPE rss [<!entity copy "(C) 2026 Example Media">]>' + _RSS + _RSS_END, "copy"),
        # A "<" in a comment or a quoted literal before it does not end the prolog early.
        (b'<!-- <rss> --><!DOCTYPE rss SYSTEM "a<b" [<!ENTITY a "xxxxxxxx">]>' + _RSS + _RSS_END, "a"),
    ],
    ids=["billion-laughs", "one-big-entity", "utf-16", "external", "parameter", "lower-case", "hidden"],
)
def test_an_entity_that_could_expand_is_refused_before_parsing(body: bytes, entity: str) -> None:
    assert bot.parse.unsafe_entity(body) == entity
    with pytest.raises(FeedError) as raised:
        parse_feed(body, "bomb")
    assert raised.value.reason.startswith(f"refused: its DOCTYPE declares the XML entity {entity!r}")
    assert "\n" not in raised.value.reason and len(raised.value.reason) < 250


@pytest.mark.parametrize(
    "prolog",
    [
        b'<!DOCTYPE rss [<!ENTITY nbsp "&#160;"> <!ENTITY mdash "&#x2014;"> <!ENTITY c "(C)">]>',
        b'<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" "http://x.example/rss.dtd">',
        b'<?xml version="1.0"?><!-- <!ENTITY a "xxxxxxxxxxxxxxxxxxxx"> -->',
        b"",
    ],
    ids=["character-entities", "external-dtd", "in-a-comment", "no-doctype"],
)
def test_harmless_prologs_are_parsed(prolog: bytes) -> None:
    # Also an "<!ENTITY" in an item's text, after the prolog: text, not a declaration.
    text = b"<description><![CDATA[<!DOCTYPE x [<!ENTITY a 'xxxxxxxxxxxxxxxxxx'>]>]]></description>"
    parsed = parse_feed(prolog + _RSS + text + _RSS_END, "fine")
    assert [item.title for item in parsed.items] == ["A & B"]


def test_a_valid_feed_with_no_items_is_fine() -> None:
    assert parse_feed(b'<rss version="2.0"><channel><title>Quiet</title></channel></rss>', "q") == ParsedFeed(
        title="Quiet", items=(), warning=None
    )
    atom = b'<feed xmlns="http://www.w3.org/2005/Atom"><title>Quiet</title></feed>'
    assert parse_feed(atom, "q") == ParsedFeed(title="Quiet", items=())


# ---------------------------------------------------------------------------------------------------------
# canonical_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://a.com/x?utm_source=rss_feed", "https://a.com/x"),
        ("https://a.com/x?id=3&utm_source=rss&utm_medium=feed&b=2", "https://a.com/x?id=3&b=2"),
        ("https://a.com/x?UTM_Campaign=x&z=1", "https://a.com/x?z=1"),
        ("https://a.com/x?utm%5Fsource=x&z=1", "https://a.com/x?z=1"),
        (
            "https://a.com/x?fbclid=1&gclid=2&dclid=3&gbraid=4&wbraid=5&msclkid=6&yclid=7&mc_cid=8&mc_eid=9"
            "&_ga=10&_gl=11&igshid=12&ref_src=13&maca=en-rss-en-all-1573-rdf",
            "https://a.com/x",
        ),
        ("https://www.dw.com/en/a-1?maca=en-rss-en-all-1573-rdf", "https://www.dw.com/en/a-1"),
        ("https://a.com/x?q=a%20b&flag&e=", "https://a.com/x?q=a%20b&flag&e="),  # untouched spelling
        ("https://a.com/x?z=1&a=2", "https://a.com/x?z=1&a=2"),  # order kept
        ("https://a.com/x?ref=home", "https://a.com/x?ref=home"),  # not ref_src
        ("https://a.com/x?utm_source=x#part-2", "https://a.com/x#part-2"),  # fragment kept
        ("https://www.bbc.com/sport/articles/c1#2", "https://www.bbc.com/sport/articles/c1#2"),
        ("HTTPS://WWW.Example.COM/Path/To?Q=1", "https://www.example.com/Path/To?Q=1"),
        ("http://User:Pw@Example.com:8080/p", "http://User:Pw@example.com:8080/p"),
        ("  https://a.com/x?utm_source=x \n", "https://a.com/x"),
        ("https://a.com/x?", "https://a.com/x"),
        ("https://a.com/", "https://a.com/"),
        ("t3_abc123", "t3_abc123"),
        ("  tag:example.com,2024:1?utm_source=x ", "tag:example.com,2024:1?utm_source=x"),
        ("urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a", "urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a"),
        ("ftp://A.com/x?utm_source=y", "ftp://A.com/x?utm_source=y"),
        ("/relative/path?utm_source=y", "/relative/path?utm_source=y"),
        ("https://[::1/x?utm_source=y", "https://[::1/x?utm_source=y"),  # unparseable: unchanged
        ("", ""),
    ],
)
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected
    assert canonical_url(expected) == expected


# ---------------------------------------------------------------------------------------------------------
# Inline documents


def rss(*items: str, channel: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"'
        ' xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<channel><title>Inline</title>{channel}{''.join(f'<item>{item}</item>' for item in items)}"
        "</channel></rss>"
    ).encode()


def atom(*entries: str) -> bytes:
    body = "".join(f"<entry>{entry}</entry>" for entry in entries)
    return f'<feed xmlns="http://www.w3.org/2005/Atom"><title>Inline</title>{body}</feed>'.encode()


def one(body: bytes, **kwargs: Any) -> Item:
    parsed = parse_feed(body, "inline", **kwargs)
    assert len(parsed.items) == 1, parsed
    return parsed.items[0]


def sha1_key(text: str) -> str:
    return "sha1:" + hashlib.sha1(text.encode()).hexdigest()


DATE = "<pubDate>Tue, 10 Jun 2025 09:00:00 +0200</pubDate>"
DATE_ISO = "2025-06-10T07:00:00+00:00"


@pytest.mark.parametrize(
    ("item", "key"),
    [
        ("<guid>https://a.com/1?utm_source=rss&amp;id=2</guid>", "https://a.com/1?id=2"),
        ('<guid isPermaLink="false">  t3_abc \n</guid><link>https://a.com/x</link>', "t3_abc"),
        ('<guid isPermaLink="false">tag:a.com,2024:1</guid><link>https://a.com/x</link>', "tag:a.com,2024:1"),
        (
            '<guid isPermaLink="false">https://A.com/1#3</guid><link>https://a.com/1</link>',
            "https://a.com/1#3",
        ),
        ('<guid isPermaLink="false"></guid><link>https://a.com/x?fbclid=9</link>', "https://a.com/x"),
        ('<guid isPermaLink="false">   </guid><link>https://a.com/x</link>', "https://a.com/x"),
        ("<link>https://a.com/x?utm_medium=rss</link><title>T</title>", "https://a.com/x"),
        (f"<title>Hello</title>{DATE}", sha1_key(f"Hello\x1f{DATE_ISO}")),
        ("<title>Hello</title><pubDate>sometime</pubDate>", sha1_key("Hello\x1fsometime")),
        ("<title>Hello</title>", sha1_key("Hello\x1f")),
        (
            f"<description>Just &lt;b&gt;words&lt;/b&gt;</description>{DATE}",
            sha1_key(f"\x1f{DATE_ISO}\x1fJust words"),
        ),
    ],
    ids=[
        "guid-url",
        "guid-not-url",
        "guid-tag",
        "guid-fragment",
        "empty-guid-link",
        "blank-guid-link",
        "no-guid-link",
        "hash-title-date",
        "hash-raw-date",
        "hash-title-only",
        "hash-untitled-summary",
    ],
)
def test_key_fallback(item: str, key: str) -> None:
    assert one(rss(item)).key == key


def test_untitled_items_on_the_same_date_get_distinct_keys() -> None:
    parsed = parse_feed(
        rss(f"<description>one</description>{DATE}", f"<description>two</description>{DATE}"), "x"
    )
    assert len({item.key for item in parsed.items}) == 2


def test_first_entry_wins_for_a_repeated_key() -> None:
    parsed = parse_feed(
        rss(
            "<guid>https://a.com/1?utm_source=a</guid><title>first</title>",
            "<guid>https://a.com/2</guid><title>other</title>",
            "<guid>https://a.com/1?utm_source=b</guid><title>second</title>",
            "<guid></guid><link>https://a.com/2</link><title>same as a guid</title>",
        ),
        "x",
    )
    assert [(item.key, item.title) for item in parsed.items] == [
        ("https://a.com/1", "first"),
        ("https://a.com/2", "other"),
    ]
    assert parsed.warning is None


@pytest.mark.parametrize(
    ("item", "link"),
    [
        ("<link>HTTPS://A.com/x?utm_source=rss&amp;id=1#top</link>", "https://a.com/x?id=1#top"),
        ("<guid>42</guid>", ""),  # feedparser copies a permalink guid into `link`: not a web address
        ("<guid>g</guid><link>javascript:alert(1)</link>", ""),
        ("<guid>g</guid><link>/relative/only</link>", ""),  # no base URL given to resolve it
        ("<guid>g</guid>", ""),
    ],
)
def test_link_is_an_absolute_web_address_or_empty(item: str, link: str) -> None:
    assert one(rss(item)).link == link


def test_a_failing_entry_is_skipped_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    real_to_item = bot.parse._to_item

    def fragile(entry: Any, feed_id: str) -> Item:
        if entry.get("title") == "bad":
            raise ValueError("boom")
        return real_to_item(entry, feed_id)

    monkeypatch.setattr(bot.parse, "_to_item", fragile)
    body = rss(*(f"<guid>g{n}</guid><title>{'bad' if n % 2 else 'good'}</title>" for n in range(5)))
    parsed = parse_feed(body, "x")
    assert [item.key for item in parsed.items] == ["g0", "g2", "g4"]
    assert parsed.warning == "skipped 2 unreadable entries"


@pytest.mark.parametrize(
    ("body", "title", "summary"),
    [
        # Atom type="text": feedparser decodes once; decoding again would turn "&amp;" into "&".
        (
            atom('<title type="text">Tom &amp;amp; Jerry</title><summary>1 &lt; 2</summary>'),
            "Tom &amp; Jerry",
            "1 < 2",
        ),
        # HTML: entities decoded exactly once.
        (
            atom(
                '<title type="html">Fish &amp;amp;amp; chips</title>'
                '<summary type="html">a &amp;amp; b</summary>'
            ),
            "Fish &amp; chips",
            "a & b",
        ),
        (
            rss("<title>AT&amp;T 5 &lt; 6</title><description>&lt;p&gt;AT&amp;amp;T&lt;/p&gt;</description>"),
            "AT&T 5 < 6",
            "AT&T",
        ),
        # No markup, only an entity: still decoded once, and a lone URL is text, not something to fetch.
        (
            rss("<title>x</title><description>https://a.example/?a=1&amp;amp;b=2 &amp;copy;</description>"),
            "x",
            "https://a.example/?a=1&b=2 ©",
        ),
        (
            rss(
                "<title> Padded\n\t title </title><description><![CDATA[<p>One</p><script>alert(1)</script>"
                "<style>p{}</style><p>two&nbsp;&nbsp;three<br/>four</p>\n\n<p>five</p>]]></description>"
            ),
            "Padded title",
            "One two three four five",
        ),
        (
            atom(
                '<title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">'
                "An <b>xhtml</b> title</div></title>"
            ),
            "An xhtml title",
            "",
        ),
        # No summary: the first content; control characters removed, ideographic space collapsed.
        (
            rss("<title>a&#x3000;b</title><content:encoded>&lt;p&gt;body\u200b&lt;/p&gt;</content:encoded>"),
            "a b",
            "body\u200b",
        ),
    ],
    ids=[
        "atom-text",
        "atom-html",
        "rss-guessed",
        "entity-only",
        "whitespace-script-style",
        "xhtml",
        "content",
    ],
)
def test_plain_text(body: bytes, title: str, summary: str) -> None:
    item = one(body)
    assert (item.title, item.summary) == (title, summary)


def test_control_characters_are_removed() -> None:
    # Not well-formed XML, so feedparser's lenient parser reads it (and says so in the warning).
    parsed = parse_feed(rss("<guid>g</guid><title>a\x01b\x0cc</title><description>x\x02y</description>"), "x")
    assert (parsed.items[0].title, parsed.items[0].summary) == ("ab c", "xy")
    assert parsed.warning


@pytest.mark.parametrize(
    ("author", "expected"),
    [
        ("<author>Iris Deng,Ann Cao</author>", "Iris Deng, Ann Cao"),
        ("<dc:creator>A ,B,  C</dc:creator>", "A, B, C"),
        ("<dc:creator> Jane\n Doe </dc:creator>", "Jane Doe"),
        ("", ""),
    ],
)
def test_author(author: str, expected: str) -> None:
    assert one(rss(f"<guid>g</guid>{author}")).author == expected


@pytest.mark.parametrize(
    ("item", "published"),
    [
        (DATE, datetime(2025, 6, 10, 7, 0, tzinfo=UTC)),
        ("<dc:date>2025-06-10T09:00:00-05:00</dc:date>", datetime(2025, 6, 10, 14, 0, tzinfo=UTC)),
        ("<pubDate>not a date</pubDate>", None),
        ("", None),
    ],
)
def test_published_is_aware_utc(item: str, published: datetime | None) -> None:
    assert one(rss(f"<guid>g</guid>{item}")).published == published


def test_atom_updated_is_used_without_published() -> None:
    item = one(atom("<id>tag:a,2025:1</id><title>t</title><updated>2025-01-02T03:04:05+01:00</updated>"))
    assert item.published == datetime(2025, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert item.key == "tag:a,2025:1"


IMG = "https://img.example.com"


@pytest.mark.parametrize(
    ("item", "thumbnail"),
    [
        # media:content (image) comes first, whatever else is there.
        (
            f'<media:thumbnail url="{IMG}/thumb.jpg"/>'
            f'<enclosure url="{IMG}/enc.jpg" type="image/jpeg" length="1"/>'
            f'<media:content url="{IMG}/content.jpg?a=1&amp;b=2" medium="image"/>',
            f"{IMG}/content.jpg?a=1&b=2",
        ),
        (f'<media:content url="{IMG}/c" type="image/webp"/>', f"{IMG}/c"),
        # Untyped: recognised by the extension of the path, not of the query.
        (f'<media:content url="{IMG}/c.JPG?w=140&amp;q=55"/>', f"{IMG}/c.JPG?w=140&q=55"),
        # Not images: a video, an untyped URL without an image extension.
        (
            f'<media:content url="{IMG}/v.mp4" medium="video" type="video/mp4"/>'
            f'<media:content url="{IMG}/unknown"/><media:thumbnail url="{IMG}/t.jpg"/>',
            f"{IMG}/t.jpg",
        ),
        (
            f'<enclosure url="{IMG}/a.mp3" type="audio/mpeg" length="1"/>'
            f'<enclosure url="{IMG}/e.jpg" type="image/jpg" length="1"/>',
            f"{IMG}/e.jpg",
        ),
        (f'<enclosure url="{IMG}/a.mp3" type="audio/mpeg" length="1"/>', None),
        # <img> in the summary, then in content; relative to the item link; pixels and data: skipped.
        (
            "<link>https://news.example.com/a/b/story.html</link>"
            '<description>&lt;img src="data:image/png;base64,AAAA"&gt;'
            '&lt;img src="../pics/1.png?x=1&amp;amp;y=2"&gt;'
            "</description>",
            "https://news.example.com/a/pics/1.png?x=1&y=2",
        ),
        (
            '<description>&lt;img src="https://feeds.feedburner.com/~r/x/~4/abc" width="1" height="1"/&gt;'
            f'</description><content:encoded><![CDATA[<p><img src="{IMG}/body.jpg"></p>]]></content:encoded>',
            f"{IMG}/body.jpg",
        ),
        ('<description>&lt;img src="javascript:alert(1)"&gt;</description>', None),
        # Relative, and no link to resolve it against.
        ('<description>&lt;img src="pics/1.png"&gt;</description>', None),
        (f'<media:content url="  " medium="image"/><media:thumbnail url="{IMG}/t.jpg"/>', f"{IMG}/t.jpg"),
        (
            f'<media:content url="/rel.jpg" medium="image"/><media:thumbnail url="{IMG}/t.jpg"/>',
            f"{IMG}/t.jpg",
        ),
        ("<description>No pictures, just a &lt;b&gt;bold&lt;/b&gt; claim.</description>", None),
    ],
    ids=[
        "media-content-first",
        "media-content-type",
        "media-content-extension",
        "video-skipped",
        "enclosure-image",
        "enclosure-audio",
        "img-relative",
        "img-pixel-then-content",
        "img-javascript",
        "img-relative-no-link",
        "blank-url",
        "relative-media-no-link",
        "none",
    ],
)
def test_thumbnail(item: str, thumbnail: str | None) -> None:
    assert one(rss(f"<guid>g</guid>{item}")).thumbnail == thumbnail


def test_headers_charset_is_honoured_whatever_its_case() -> None:
    # Latin-1 bytes and no XML declaration: only the HTTP header says what they are.
    body = '<rss version="2.0"><channel><title>Notícias</title><item><guid>g</guid><title>Ação</title></item>'
    body += "</channel></rss>"
    parsed = parse_feed(
        body.encode("latin-1"), "x", headers={"Content-Type": "application/rss+xml; charset=ISO-8859-1"}
    )
    assert (parsed.title, parsed.items[0].title, parsed.warning) == ("Notícias", "Ação", None)


def test_url_is_the_base_for_relative_links_unless_content_location_says_otherwise() -> None:
    body = rss('<link>/news/1?utm_source=rss</link><description>&lt;img src="/i/1.jpg"&gt;</description>')
    item = one(body, url="https://Site.example/feeds/all.xml")
    assert item.link == "https://site.example/news/1"
    assert item.key == item.link
    # Resolved by feedparser against Content-Location; only links are canonicalised.
    assert item.thumbnail == "https://Site.example/i/1.jpg"
    moved = one(
        body, url="https://site.example/feed", headers={"Content-Location": "https://cdn.example/x/feed"}
    )
    assert moved.link == "https://cdn.example/news/1"


def test_parse_feed_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    # A body that is also a URL and a local path must be parsed as bytes, never fetched or opened.
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("parse_feed tried to do I/O")

    monkeypatch.setattr("feedparser.http.get", refuse)
    monkeypatch.setattr("builtins.open", refuse)
    for body in (b"https://example.com/feed.xml", str(SCMP).encode()):
        with pytest.raises(FeedError):
            parse_feed(body, "x")
