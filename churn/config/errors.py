"""The one error type of the config layer, and how a message repeats a value."""

from __future__ import annotations

from typing import Any

SHOWN_CHARS = 200  # at most this much of a value is repeated in a message


class ConfigError(ValueError):
    """A job or cluster spec (or an input it names) that cannot be used; the message names the key or path."""


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` in at most about ``limit`` characters: a message names a value, it never
    repeats a huge one (a spec can hold nested YAML aliases that expand to millions of items). A
    long text is cut with its length said; a container is shown as ``reprlib`` abbreviates it (a
    few items per level), cut at ``limit``. ``reprlib`` alone cuts by items, not by length."""
    import reprlib

    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value):,} characters)"
    short = reprlib.Repr()  # keyword arguments only from Python 3.12
    short.maxlist = short.maxtuple = short.maxset = short.maxdict = 20
    short.maxstring = short.maxother = limit
    text = short.repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…"


def cut(message: str, limit: int = 4 * SHOWN_CHARS) -> str:
    """``message`` cut to ``limit`` characters (for messages written by other libraries, which may
    repeat a value whole)."""
    return message if len(message) <= limit else f"{message[:limit]}… (message cut from {len(message):,} characters)"
