"""How relative paths are shown in reports and carried in resume cursors.

Inside the engine a name is a ``str`` decoded with ``surrogateescape`` (what ``os.scandir``
returns), so any byte sequence round-trips to the exact on-disk name. Reports, however, are
encoded as JSON, which cannot carry lone surrogates: they get a lossy display form. Cursors
must round-trip exactly, so they are percent-encoded bytes.
"""

from __future__ import annotations

import os
from urllib.parse import quote_from_bytes, unquote_to_bytes

from chronolog.errors import ValidationError


def display_path(path: str) -> tuple[str, bool]:
    """Return ``(text, lossy)``: ``path`` as valid UTF-8 text for a report.

    Undecodable bytes become ``\\xNN`` sequences and ``lossy`` is True; such a text may
    collide with a real name that contains a literal backslash, which is why the flag exists.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = path.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate that did not come from surrogateescape
            return path.encode("utf-8", "backslashreplace").decode("ascii"), True
        return raw.decode("utf-8", "backslashreplace"), True
    return path, False


def display(path: str) -> str:
    """The display text of ``path`` (see :func:`display_path`)."""
    return display_path(path)[0]


def encode_cursor(rel: str) -> str:
    """Encode a relative path (walk order position) as an opaque, ASCII resume cursor."""
    return quote_from_bytes(os.fsencode(rel), safe="/")


def decode_cursor(cursor: str) -> tuple[str, ...]:
    """Decode a cursor made by :func:`encode_cursor` into path components.

    Raises :class:`ValidationError` for anything that is not a clean relative path.
    """
    if not isinstance(cursor, str) or not cursor or not cursor.isascii():
        raise ValidationError(f"malformed resume cursor {cursor!r}")
    rel = os.fsdecode(unquote_to_bytes(cursor))
    parts = tuple(rel.split("/"))
    if "\0" in rel or any(part in ("", ".", "..") for part in parts):
        raise ValidationError(f"malformed resume cursor {cursor!r}")
    return parts


__all__ = ["decode_cursor", "display", "display_path", "encode_cursor"]
