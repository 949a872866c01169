"""Turns feed bytes into `Item`s: identity keys, canonical links, plain text, UTC dates and thumbnails,
each within bot.feed_limits (the feed's author chooses the sizes; we choose what we keep).
Does no I/O: feedparser only ever gets an `io.BytesIO`, never a URL, str or path (given a URL it
fetches it itself with no timeout; given a str it may open it as a local file)."""

from __future__ import annotations

import hashlib
import html
import io
import re
import warnings
import xml.sax
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus, urljoin, urlsplit, urlunsplit

import feedparser
from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, XMLParsedAsHTMLWarning

from bot.errors import FeedError
from bot.feed_limits import (
    ELLIPSIS,
    MAX_AUTHOR_CHARS,
    MAX_ITEMS_PER_DOCUMENT,
    MAX_KEY_CHARS,
    MAX_SUMMARY_CHARS,
    MAX_TITLE_CHARS,
    MAX_URL_CHARS,
    SOURCE_CHARS_PER_FIELD_CHAR,
    cut_text,
)
from bot.model import Item, ParsedFeed

# Markup such as "https://a.example/<b>x</b>" makes bs4 warn that we may have meant to fetch a URL; we did
# not. Scoped to this module so nobody else's warnings are hidden.
_THIS_MODULE = re.escape(__name__) + r"\Z"
warnings.filterwarnings("ignore", category=MarkupResemblesLocatorWarning, module=_THIS_MODULE)
warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning, module=_THIS_MODULE)

# Query parameters that only say where a click came from. `maca` is Deutsche Welle's RSS tracking tag
# (its RDF feed puts `?maca=en-rss-en-all-1573-rdf` on every rdf:about and link).
_TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "mc_cid",
        "mc_eid",
        "_ga",
        "_gl",
        "igshid",
        "ref_src",
        "maca",
    }
)
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "html", "xhtml"})
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif", ".bmp", ".svg")
# Control characters other than whitespace (C0, DEL, C1 but NEL) and a stray BOM are removed; every run of
# whitespace, which in a str pattern includes NBSP, thin and ideographic spaces, becomes one space.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ufeff]")
_WHITESPACE = re.compile(r"\s+")
_AUTHOR_COMMA = re.compile(r"\s*,\s*")
_MAX_REASON = 200
# expat's errors for a document that ends while an element or token is still open.
_END_OF_INPUT_ERRORS = frozenset(
    {"no element found", "unclosed token", "partial character", "unclosed CDATA section"}
)
_FEED_END = re.compile(rb"</(?:channel|feed|rss|rdf:RDF)\s*>\s*\Z", re.IGNORECASE)


def parse_feed(
    body: bytes, feed_id: str, *, headers: Mapping[str, str] | None = None, url: str = ""
) -> ParsedFeed:
    """Parse one fetched document. Raises `FeedError` when it is not a feed, or is so broken that no
    item could be read; a document feedparser recovered from gets `ParsedFeed.warning`."""
    # feedparser looks headers up by lower-case name ("content-type" for the charset, "content-location"
    # for the base of relative links), so callers' "Content-Type" would otherwise be silently ignored.
    response_headers = {name.lower(): value for name, value in (headers or {}).items()}
    if url and "content-location" not in response_headers:
        response_headers["content-location"] = url
    entity = unsafe_entity(body)
    if entity is not None:
        raise FeedError(
            feed_id,
            f"refused: its DOCTYPE declares the XML entity {entity!r}, which could expand to gigabytes "
            "(only entities no longer than their own reference are accepted)",
        )
    # Never pass `body` itself: see the module docstring.
    parsed = feedparser.parse(io.BytesIO(body), response_headers=response_headers)

    bozo = _describe_bozo(parsed) if parsed.get("bozo") else None
    if bozo and _is_cut_off(body, parsed):
        # The items before the cut are readable, but taking them would be wrong: on a first poll the
        # rest of the feed would look new at the next one (a flood of old items). An error keeps the
        # state as it was, and the next whole download loses nothing.
        raise FeedError(feed_id, f"broken feed, cut off before its end: {bozo}")
    entries: list[Any] = list(parsed.get("entries") or [])
    if not entries:
        _reject_if_not_a_feed(body, feed_id, parsed, bozo)
    listed = len(entries)
    entries = newest_entries(entries, MAX_ITEMS_PER_DOCUMENT)

    items: list[Item] = []
    seen: set[str] = set()
    skipped = 0
    for entry in entries:
        try:
            item = _to_item(entry, feed_id)
        except Exception:  # one malformed entry must not cost the others (the poller sees a warning)
            skipped += 1
            continue
        # Real feeds repeat an entry under the same guid (Al-Monitor: 3 stories x 4); the first one wins.
        if item.key not in seen:
            seen.add(item.key)
            items.append(item)

    problems = [bozo] if bozo else []
    if skipped:
        problems.append(f"skipped {skipped} unreadable {'entry' if skipped == 1 else 'entries'}")
    if listed > len(entries):
        problems.append(
            f"read the newest {len(entries)} of its {listed} entries (at most {MAX_ITEMS_PER_DOCUMENT} "
            "a document); the others count as not seen yet"
        )
    feed = parsed.get("feed") or {}
    return ParsedFeed(
        title=_text(feed.get("title_detail"), feed.get("title"), MAX_TITLE_CHARS),
        items=tuple(items),
        warning="; ".join(problems) or None,
    )


def newest_entries(entries: list[Any], limit: int) -> list[Any]:
    """At most `limit` entries, the newest, in the document's order. Newest by date when every entry has
    one (some feeds list oldest first), else the first ones, as most feeds list newest first. The rest are
    not turned into items at all: not archived and not seen, so one that is still listed when it comes
    within the limit (newer entries removed above it) is read then, and taken as new."""
    if len(entries) <= limit:
        return entries
    dates = [date for date in map(_published, entries) if date is not None]
    if len(dates) < len(entries):
        return entries[:limit]
    by_date = sorted(range(len(entries)), key=dates.__getitem__, reverse=True)  # stable: ties keep order
    return [entries[index] for index in sorted(by_date[:limit])]


def unsafe_entity(body: bytes) -> str | None:
    """The name of the first entity the document's DOCTYPE declares that expanding could make the document
    bigger, or None. feedparser drops entities that refer to others (the classic "billion laughs"), but keeps
    one of plain text however long, and when the strict parse fails its fallback parser expands it with no
    limit: a 160 KB feed with one 100 KB entity used 20,000 times took 62 s and 5.7 GB, and a 1.3 MB one
    ran out of memory. Real feeds declare entities rarely, and then for one character (`&#160;`), so an
    entity is accepted only when its text is no longer than its reference `&name;` (or is one character
    reference); parameter and external entities never are."""
    if body[:4].count(0):
        body = body.replace(b"\x00", b"")  # UTF-16 or UTF-32: the markup is ASCII once the zeros are gone
    for declaration in _doctype_entities(body):
        match = _ENTITY.fullmatch(declaration)
        if match is None:  # a parameter entity (%), an external one (SYSTEM, PUBLIC), or not well-formed
            words = declaration[8:].rstrip(b">").split()
            name = b"".join(words[:2]) if words[:1] == [b"%"] else b"".join(words[:1])
            return (name or b"?")[:40].decode("latin-1")
        name, value = match["name"], match["value"][1:-1]
        harmless = _CHARACTER_REFERENCE.fullmatch(value) or (
            not any(c in value for c in b"&%<") and len(value) <= len(name) + 2
        )
        if not harmless:
            return name[:40].decode("latin-1")
    return None


_ENTITY = re.compile(rb"<!ENTITY\s+(?P<name>[^\s%\"'>]+)\s+(?P<value>\"[^\"]*\"|'[^']*')\s*>", re.I)
_CHARACTER_REFERENCE = re.compile(rb"&#(?:[0-9]+|x[0-9a-fA-F]+);")


def _doctype_entities(doc: bytes) -> Iterator[bytes]:
    """Each `<!ENTITY …>` declaration in the DOCTYPE's internal subset, found by walking the prolog as XML
    defines it (comments, processing instructions, quoted literals), so that a `<` in a comment or a
    literal cannot hide a declaration after it."""
    i = _skip_space(doc, 0)
    while doc.startswith((b"<?", b"<!--"), i):  # the XML declaration, comments and PIs before the DOCTYPE
        i = _after(doc, i, b"?>" if doc.startswith(b"<?", i) else b"-->")
        i = _skip_space(doc, i)
    if doc[i : i + 9].upper() != b"<!DOCTYPE":
        return
    i += 9
    while i < len(doc) and doc[i] not in b"[>":  # the root's name and any external id, to the subset
        i = _after_literal(doc, i)
    if not doc.startswith(b"[", i):
        return
    i += 1
    while i < len(doc) and doc[i] != ord("]"):
        if doc.startswith(b"<!--", i):
            i = _after(doc, i, b"-->")
        elif doc.startswith(b"<?", i):
            i = _after(doc, i, b"?>")
        elif doc.startswith(b"<", i):  # a declaration: ENTITY, ELEMENT, ATTLIST, NOTATION
            start = i
            i += 1
            while i < len(doc) and doc[i] != ord(">"):
                i = _after_literal(doc, i)
            if doc[start : start + 8].upper() == b"<!ENTITY":
                yield doc[start : i + 1]
            i += 1
        else:  # whitespace, or a parameter entity reference such as %html;
            i += 1


def _skip_space(doc: bytes, i: int) -> int:
    while i < len(doc) and doc[i] in b" \t\r\n\xef\xbb\xbf\xfe\xff":  # and byte order marks
        i += 1
    return i


def _after(doc: bytes, i: int, end: bytes) -> int:
    found = doc.find(end, i)
    return len(doc) if found < 0 else found + len(end)


def _after_literal(doc: bytes, i: int) -> int:
    """Past the quoted literal starting at `i`, or past the one byte there."""
    if doc[i] in b"\"'":
        found = doc.find(doc[i : i + 1], i + 1)
        return len(doc) if found < 0 else found + 1
    return i + 1


def canonical_url(url: str) -> str:
    """`url` without tracking query parameters, with lower-case scheme and host. Other parameters keep
    their order and spelling; the fragment is kept (some feeds tell items apart only by `#N`).
    Anything that is not an absolute http(s) URL comes back stripped and otherwise unchanged."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return url
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc:
        return url
    # Split by hand rather than parse_qsl/urlencode, which would re-encode the parameters we keep
    # (`%20` -> `+`, `a` -> `a=`) and so change keys that were stored before.
    query = "&".join(param for param in parts.query.split("&") if not _is_tracking(param))
    userinfo, at, host = parts.netloc.rpartition("@")
    return urlunsplit((scheme, userinfo + at + host.lower(), parts.path, query, parts.fragment))


def _is_tracking(param: str) -> bool:
    name = unquote_plus(param.partition("=")[0]).strip().lower()
    return name.startswith("utm_") or name in _TRACKING_PARAMS


def _reject_if_not_a_feed(body: bytes, feed_id: str, parsed: Any, bozo: str | None) -> None:
    """Raise for a document with no entries that is not a readable feed; return for an empty feed."""
    if not body.strip():
        raise FeedError(feed_id, "not a feed: empty document")
    if not parsed.get("version"):
        # No RSS, RDF or Atom root element: an error page, a login wall, JSON, binary junk…
        head = body[:2048].lower()
        if b"<html" in head or b"<!doctype html" in head:
            raise FeedError(feed_id, "not a feed: looks like HTML")
        raise FeedError(feed_id, f"not a feed: {bozo or 'no RSS, RDF or Atom root element'}")
    exc = parsed.get("bozo_exception")
    if bozo and not isinstance(exc, feedparser.ThingsNobodyCaresAboutButMe):
        # The root element is a feed's, but the XML broke before any entry could be read: Reuters' feed
        # cut off after the channel header by a server exception, dylanharris.org's garbled prolog.
        # Returning an empty ParsedFeed would claim "this feed has no items", and a poller that takes
        # its first look at a feed (or compares polls) would record that as the truth and treat every
        # item of the next good fetch as new. An error keeps the previous state and is retried next
        # poll, like a failed download, which is what a truncated body is.
        raise FeedError(feed_id, f"broken feed, no items could be read: {bozo}")
    # Otherwise a real feed with no items (possibly with a harmless bozo such as an encoding override).


def _is_cut_off(body: bytes, parsed: Any) -> bool:
    """A feed's root element (so not an empty or HTML document) that expat found still open at the end,
    and the document does not end as a feed does: a download cut short. A feed that only forgets
    `</rss>` after `</channel>` has every item and is not."""
    exc = parsed.get("bozo_exception")
    return (
        bool(parsed.get("version"))
        and isinstance(exc, xml.sax.SAXParseException)
        and exc.getMessage() in _END_OF_INPUT_ERRORS
        and not _FEED_END.search(body[-400:].replace(b"\x00", b""))
    )


def _describe_bozo(parsed: Any) -> str:
    """One short line for feedparser's bozo exception ("line 19:84: no element found")."""
    exc = parsed.get("bozo_exception")
    text = str(exc) if exc is not None else ""
    text = text.replace("<unknown>:", "line ", 1) if text.startswith("<unknown>:") else text
    text = _one_line(text) or (type(exc).__name__ if exc is not None else "") or "malformed document"
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def _to_item(entry: Any, feed_id: str) -> Item:
    link = _bounded_url(entry.get("link"))
    # Only a web address is a link: feedparser copies a non-URL guid ("42") into `link` when the item has
    # no <link>, and a "javascript:" or still-relative one must not reach Slack.
    link = link if _is_absolute_http(link) else ""
    title = _text(entry.get("title_detail"), entry.get("title"), MAX_TITLE_CHARS)
    summary_html = _summary_source(entry)
    summary = _text(*summary_html, MAX_SUMMARY_CHARS) if summary_html else ""
    published = _published(entry)
    return Item(
        feed_id=feed_id,
        key=_key(entry, link, title, summary, published),
        link=link,
        title=title,
        summary=summary,
        author=_author(entry),
        published=published,
        thumbnail=_thumbnail(entry, link),
    )


def _key(entry: Any, link: str, title: str, summary: str, published: datetime | None) -> str:
    # The guid/id is what the publisher promises is stable. Tracking parameters are removed so that
    # SCMP's `?utm_source=rss_feed` or DW's `?maca=` changing does not make every item new again;
    # non-URL ids (Reddit's `t3_abc`, `tag:` URIs) are kept verbatim by canonical_url.
    raw_guid = str(entry.get("id") or "")
    if len(raw_guid) > MAX_KEY_CHARS:
        # Cutting would make two long guids with the same start one item; a hash keeps them apart.
        return "sha1:" + hashlib.sha1(raw_guid.encode("utf-8", "replace")).hexdigest()
    guid = canonical_url(raw_guid)
    if guid:
        return guid
    # Boston.com sends `<guid isPermaLink="false"></guid>` on most items, and many feeds (aktuality.sk,
    # jn.pt, kc0011) have no guid at all: the link is the next most stable identity.
    if link:
        return link
    # Nothing to point at: hash what the reader sees. Untitled items (Scripting News posts are
    # description-only) add the summary so that two of them on the same date stay distinct.
    # dict.get: FeedParserDict would answer "updated" with "published" and a DeprecationWarning.
    raw_date = dict.get(entry, "published") or dict.get(entry, "updated") or ""
    date = published.isoformat() if published else str(raw_date)
    basis = title + "\x1f" + date + ("" if title else "\x1f" + summary)
    return "sha1:" + hashlib.sha1(basis.encode("utf-8")).hexdigest()


def _summary_source(entry: Any) -> tuple[Any, str] | None:
    """The (detail, value) of the summary, else of the first content (Atom feeds may have only content)."""
    if entry.get("summary"):
        return entry.get("summary_detail"), entry["summary"]
    for content in entry.get("content") or ():
        if content.get("value"):
            return content, content["value"]
    return None


def _is_html(detail: Any) -> bool:
    # feedparser's own verdict: RSS leaves the type open and feedparser guesses text/html when the text
    # contains markup or an entity; Atom states it. A missing detail is treated as HTML, RSS's default.
    content_type = (detail or {}).get("type") or "text/html"
    return str(content_type).lower() in _HTML_TYPES


def _text(detail: Any, value: Any, limit: int) -> str:
    """Plain text on one line, at most `limit` characters. HTML is stripped and its entities decoded once;
    text/plain is not decoded again, because feedparser already did (an Atom `type="text"` title of
    `&amp;amp;` means `&amp;`). Only the start of a long source is read (see feed_limits): a 9 MB summary
    would otherwise cost seconds of HTML parsing for text that is then cut."""
    source = str(value or "")
    text = _source_start(source, limit)
    if _is_html(detail) and len(text) < len(source) and text.rfind("<") > text.rfind(">"):
        text = text[: text.rfind("<")]  # the cut fell inside a tag: its start would read as text
    if _is_html(detail):
        if "<" in text:
            soup = BeautifulSoup(text, "html.parser")
            for hidden in soup(["script", "style"]):  # their text is code, never prose
                hidden.decompose()
            text = soup.get_text(" ")
        elif "&" in text:
            text = html.unescape(text)  # what get_text would give, without building a tree
    text = cut_text(_one_line(text), limit)
    if len(source) > limit * SOURCE_CHARS_PER_FIELD_CHAR and not text.endswith(ELLIPSIS):
        # Markup-heavy: the text read fits, yet it is not all there was.
        text = text[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS
    return text


def _source_start(text: str, limit: int) -> str:
    return text[: limit * SOURCE_CHARS_PER_FIELD_CHAR]


def _bounded_url(value: Any) -> str:
    """The canonical URL, or "" when it is longer than any real one (see MAX_URL_CHARS)."""
    url = str(value or "")
    return "" if len(url.strip()) > MAX_URL_CHARS else canonical_url(url)


def _one_line(text: str) -> str:
    return _WHITESPACE.sub(" ", _CONTROL.sub("", text)).strip()


def _author(entry: Any) -> str:
    author = _one_line(_source_start(str(entry.get("author") or ""), MAX_AUTHOR_CHARS))
    # SCMP writes several authors as "A,B,C".
    return cut_text(_AUTHOR_COMMA.sub(", ", author).strip(", "), MAX_AUTHOR_CHARS)


def _published(entry: Any) -> datetime | None:
    # feedparser's *_parsed are struct_time already converted to UTC; anything odd in them means "no date".
    # dict.get bypasses FeedParserDict's deprecated `updated_parsed` -> `published_parsed` alias and warning.
    for name in ("published_parsed", "updated_parsed"):
        parsed = dict.get(entry, name)
        if parsed:
            try:
                # Leap seconds (tm_sec 60/61) are valid in struct_time but not in datetime.
                year, month, day, hour, minute, second = parsed[:6]
                return datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
            except (TypeError, ValueError, OverflowError):
                continue
    return None


def _thumbnail(entry: Any, link: str) -> str | None:
    for candidate in _image_candidates(entry):
        absolute = _absolute_image_url(candidate, link)
        if absolute:
            return absolute
    return None


def _image_candidates(entry: Any) -> Iterator[str]:
    """Image URLs in order of how deliberately the publisher chose them. feedparser has already decoded
    entities in attributes once (SCMP's `&amp;v=` arrives as `&v=`), so nothing here decodes again."""
    for media in entry.get("media_content") or ():
        medium = str(media.get("medium") or "").lower()
        mime = str(media.get("type") or "").lower()
        url = str(media.get("url") or "")
        # The Guardian gives neither medium nor type; El País mixes in video/mp4 ones.
        if (
            medium == "image"
            or mime.startswith("image/")
            or (not medium and not mime and _has_image_ext(url))
        ):
            yield url
    for media in entry.get("media_thumbnail") or ():
        yield str(media.get("url") or "")
    for link in entry.get("links") or ():
        if link.get("rel") == "enclosure" and str(link.get("type") or "").lower().startswith("image/"):
            yield str(link.get("href") or "")
    sources = []
    if entry.get("summary"):
        sources.append((entry.get("summary_detail"), entry["summary"]))
    sources.extend((content, content.get("value")) for content in entry.get("content") or ())
    for detail, markup in sources:
        markup = _source_start(markup or "", MAX_SUMMARY_CHARS)  # the part of it the summary reads
        if markup and "<img" in markup.lower() and _is_html(detail):
            yield from _img_sources(markup)


def _img_sources(markup: str) -> Iterator[str]:
    for img in BeautifulSoup(markup, "html.parser").find_all("img"):
        src = img.get("src")
        # 1x1 pixels are click counters (Feedburner, WordPress stats), not pictures.
        if isinstance(src, str) and not (img.get("width") in ("0", "1") or img.get("height") in ("0", "1")):
            yield src


def _has_image_ext(url: str) -> bool:
    try:
        path = urlsplit(url.strip()).path.lower()
    except ValueError:
        return False
    return path.endswith(_IMAGE_EXTENSIONS)


def _absolute_image_url(url: str, base: str) -> str | None:
    url = url.strip()
    if not url or len(url) > MAX_URL_CHARS:
        return None
    try:
        # kc0011's `<img src="skins/…">` is relative; the item's own page is the best base we have.
        absolute = urljoin(base, url) if base else url
    except ValueError:
        return None
    return absolute if _is_absolute_http(absolute) else None  # not data:, javascript:, or still relative


def _is_absolute_http(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)
