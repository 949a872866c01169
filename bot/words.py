"""What a word character is, for keyword boundaries, and text with the edges of its words marked.

Pure (stdlib only, no I/O): bot.rules decides where a keyword may start and end with these, and its
TermScanner searches marked text so that the automaton itself checks the boundaries.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = ["MARK", "SPACED_WORD_CHAR", "is_spaced_word_char", "mark_words", "word_end"]

# Scripts written without spaces between words: a keyword end in one of these is matched as a substring,
# because there is no word boundary to look for.
_NO_SPACE_SCRIPT_RANGES: tuple[tuple[int, int], ...] = (
    (0x0E00, 0x0E7F),  # Thai
    (0x0E80, 0x0EFF),  # Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x19E0, 0x19FF),  # Khmer symbols
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x3005, 0x3007),  # 々 〆 〇: ideographic iteration and number marks
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3031, 0x3035),  # kana repeat marks
    (0x303B, 0x303C),  # 〻 〼
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA9E0, 0xA9FF),  # Myanmar extended-B
    (0xAA60, 0xAA7F),  # Myanmar extended-A
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x1B000, 0x1B16F),  # Kana supplement and extended
    (0x20000, 0x323AF),  # CJK extensions B-H and compatibility supplement
)


def _in_no_space_script(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _NO_SPACE_SCRIPT_RANGES)


@lru_cache(maxsize=8192)
def is_spaced_word_char(char: str) -> bool:
    """Whether `char` would continue a word of a space-separated script, so a keyword cannot end next to it.

    That is Python's `\\w` plus combining marks (left out of `\\w`, yet without them "भारत" would end
    inside "भारतीय", before its vowel sign), minus the scripts written without spaces, whose characters sit
    right against Latin names ("华为Huawei发布").
    """
    return _is_word_uncached(char)


class _SpacedWordChars(dict[str, bool]):
    """is_spaced_word_char as a dict, filled as characters are met: a lookup is cheaper than a call."""

    def __missing__(self, char: str) -> bool:
        is_word = self[char] = is_spaced_word_char(char)
        return is_word


SPACED_WORD_CHAR = _SpacedWordChars()

# Never a word character, and never left in the text itself (see mark_words).
MARK = "\x00"


@lru_cache(maxsize=2)
def _word_run(*, beyond_bmp: bool) -> re.Pattern[str]:
    """A run of is_spaced_word_char characters, as one regex class listing them all (found once per
    process by looking at every code point that can be one; a test compares it with the function).

    Without `beyond_bmp` only the Basic Multilingual Plane's: a class within it is one table lookup
    per character, while each range beyond it is one more comparison for every character not in it.
    """
    ranges: list[tuple[int, int]] = []
    for code in (*range(_LAST_WORD_CODE), *range(*_PLANE_14)) if beyond_bmp else range(0x10000):
        if _is_word_uncached(chr(code)):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    members = "".join(
        re.escape(chr(low)) if low == high else f"{re.escape(chr(low))}-{re.escape(chr(high))}"
        for low, high in ranges
    )
    return re.compile(f"([{members}]+)")


_ASCII_WORD_RUN = re.compile("([0-9A-Za-z_]+)")


def _is_word_uncached(char: str) -> bool:
    """is_spaced_word_char without its cache, for looking at every code point once."""
    is_word = char.isalnum() or char == "_" or unicodedata.category(char)[0] == "M"
    return is_word and not _in_no_space_script(char)


# Word characters occur below U+32400 (CJK extension H ends at U+323AF) and in plane 14's variation
# selectors (combining marks); planes 4-13 are unassigned and 15-16 private use.
_LAST_WORD_CODE = 0x32400
_PLANE_14 = (0xE0000, 0xE1000)


def mark_words(text: str) -> str:
    """`text` with MARK at both edges of every run of word characters: "\x00huawei\x00 \x00chip\x00"."""
    if MARK in text:
        text = text.replace(MARK, "\ufffd")
    word_run = _ASCII_WORD_RUN if text.isascii() else _word_run(beyond_bmp=max(text) > "\uffff")
    # split() with a group alternates non-word and word runs, starting and ending with a non-word one
    # (maybe empty): joining them puts a mark at each edge of each word run.
    return MARK.join(word_run.split(text))


def word_end(text: str, position: int) -> int:
    """Where the run of word characters at `position` ends (position + 1 if there is none)."""
    run = _word_run(beyond_bmp=True).match(text, position)
    return run.end() if run else position + 1
