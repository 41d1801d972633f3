"""Reading providers' XML the way KAZOO's kz_xml does.

Elements match by local name (default namespaces such as ``http://tempuri.org/`` are ignored);
a text lookup is the concatenation of the matching elements' text, ``None`` when nothing matches
or the text is empty; values are cleaned of surrounding spaces and newlines. Documents with a
DTD or entity declarations are refused (no entity expansion from a provider's answer).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator


class XmlError(ValueError):
    """The answer is not XML knm can read."""


def parse(body: bytes | str) -> ET.Element:
    """Parse a provider answer; refuse DTDs (entity bombs) and malformed documents."""
    raw = body.encode() if isinstance(body, str) else body
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise XmlError("XML with a DTD is not accepted")
    try:
        return ET.fromstring(raw)  # noqa: S314  (DTDs refused above)
    except ET.ParseError as exc:
        raise XmlError(f"malformed XML: {exc}") from None


def local(tag: str) -> str:
    """``{namespace}name`` -> ``name``."""
    return tag.rsplit("}", 1)[-1] if tag.startswith("{") else tag


def clean(text: str | None) -> str | None:
    """KAZOO's cleaning: strip spaces, newlines, tabs and carriage returns at both ends."""
    if text is None:
        return None
    out = text.strip(" \n\r\t")
    return out or None


def children(element: ET.Element, name: str | None = None) -> list[ET.Element]:
    """Direct child elements (with local name ``name``)."""
    return [c for c in element if name is None or local(c.tag) == name]


def descendants(element: ET.Element, name: str) -> Iterator[ET.Element]:
    """Every element below ``element`` (itself included) whose local name is ``name``."""
    for node in element.iter():
        if local(node.tag) == name:
            yield node


def path(element: ET.Element, *names: str) -> list[ET.Element]:
    """Elements reached by following child names from ``element`` (like ``a/b/c``)."""
    nodes = [element]
    for name in names:
        nodes = [c for n in nodes for c in children(n, name)]
    return nodes


def find_path(element: ET.Element, *names: str) -> list[ET.Element]:
    """Like ``//first/then/...``: ``names[0]`` anywhere below ``element``, then child steps."""
    out: list[ET.Element] = []
    for start in descendants(element, names[0]):
        out.extend(path(start, *names[1:]))
    return out


def text_of(nodes: list[ET.Element]) -> str | None:
    """Concatenated, cleaned text of ``nodes`` (their own text, not their descendants')."""
    parts = [n.text for n in nodes if n.text]
    return clean("".join(parts)) if parts else None


def text(element: ET.Element, *names: str) -> str | None:
    """Text at the child path ``names`` below ``element``."""
    return text_of(path(element, *names))


def text_anywhere(element: ET.Element, *names: str) -> str | None:
    """Text at ``//names[0]/names[1]/...`` below ``element``."""
    return text_of(find_path(element, *names))


def escape(value: str) -> str:
    """Text safe inside an element (KAZOO inserted values raw; we escape them)."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
