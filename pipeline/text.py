"""How chromaray prints names it did not choose (file paths, track names, error reasons).

A file name may hold a newline (which would forge extra output lines) or terminal escape
sequences (which can set the window title or hide text). Every CLI line prints such text through
:func:`shown`, which keeps printable characters, including non-ASCII letters, and writes every
control character as a Python escape.
"""
from __future__ import annotations

import os

__all__ = ["shown"]


def shown(text: object) -> str:
    s = os.fspath(text) if isinstance(text, os.PathLike) else str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in s)
