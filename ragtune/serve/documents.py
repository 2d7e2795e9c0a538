"""How the API names an indexed document: an opaque id and the path relative to the folder it was indexed from.

The absolute path on the server never leaves it: replies carry `document` (this id) and `path` (relative to
the document's indexed root); the routes that show a document's pages look the id up again in the index.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePath


def document_id(path: str) -> str:
    """A stable id for the indexed document at the absolute `path` (the same path always gives the same id)."""
    return "doc-" + hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def shown_path(path: str, root: str) -> str:
    """`path` relative to `root` (its indexed folder), or its file name alone where it is not inside it."""
    pure, folder = PurePath(path), PurePath(root)
    if folder != pure and folder in pure.parents:
        return pure.relative_to(folder).as_posix()
    return pure.name
