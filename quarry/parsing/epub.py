"""EPUB: the package's spine, in reading order, each XHTML item through the HTML extractor."""

from __future__ import annotations

import posixpath
import zipfile
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree

from quarry.parsing.errors import UnreadableDocument, parser_failures
from quarry.parsing.htmltext import parse_html
from quarry.parsing.segments import Extracted, Position, finish
from quarry.parsing.textfiles import text_encoding
from quarry.parsing.zipguard import ZipLimitExceeded, bounded_zip

DAMAGED = "The EPUB file is damaged: its package (container.xml, OPF, spine) could not be read."
DRM_PROTECTED = "The EPUB is DRM-protected; its text cannot be read."
_XHTML_TYPES = frozenset({"application/xhtml+xml", "text/html"})


def extract_epub(path: Path) -> Extracted:
    """One segment per spine item, {"section": its first h1-h3, else its <title>, else its spine number}."""
    try:
        with bounded_zip(path) as archive, parser_failures(DAMAGED):
            names = set(archive.namelist())
            spine = _spine(archive)
            encrypted = _encrypted_paths(archive)
            raw_segments: list[tuple[str, Position]] = []
            for number, (item_path, media_type) in enumerate(spine, start=1):
                if item_path in encrypted:
                    raise UnreadableDocument(DRM_PROTECTED)
                if media_type not in _XHTML_TYPES or item_path not in names:
                    continue
                page = parse_html([_decode(archive.read(item_path))])
                section: str | int = page.first_heading() or page.title or number
                raw_segments.append((page.text(), {"section": section}))
    except ZipLimitExceeded as error:
        raise UnreadableDocument(error.reason) from error
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError) as error:
        raise UnreadableDocument(DAMAGED) from error
    return finish(raw_segments, len(spine), "The EPUB contains no text.")


def _spine(archive: zipfile.ZipFile) -> list[tuple[str, str]]:
    """(path in the archive, media type) of each spine item, in reading order."""
    container = _read_xml(archive, "META-INF/container.xml")
    package_path = next(
        (element.get("full-path") for element in container.iter() if _local_name(element) == "rootfile"), None
    )
    if not package_path:
        raise UnreadableDocument(DAMAGED)
    package = _read_xml(archive, package_path)
    package_dir = posixpath.dirname(package_path)
    manifest: dict[str, tuple[str, str]] = {}
    for element in package.iter():
        if _local_name(element) == "item" and element.get("id") and element.get("href"):
            href = unquote(element.get("href", "").split("#", 1)[0])
            item_path = posixpath.normpath(posixpath.join(package_dir, href))
            manifest[element.get("id", "")] = (item_path, element.get("media-type", ""))
    return [
        manifest[idref]
        for element in package.iter()
        if _local_name(element) == "itemref" and (idref := element.get("idref", "")) in manifest
    ]


def _encrypted_paths(archive: zipfile.ZipFile) -> set[str]:
    """Archive paths listed in META-INF/encryption.xml (DRM, or obfuscated fonts, which are harmless here)."""
    if "META-INF/encryption.xml" not in archive.namelist():
        return set()
    encryption = _read_xml(archive, "META-INF/encryption.xml")
    return {
        posixpath.normpath(unquote(uri))
        for element in encryption.iter()
        if _local_name(element) == "CipherReference" and (uri := element.get("URI"))
    }


def _read_xml(archive: zipfile.ZipFile, name: str) -> ElementTree.Element:
    # ElementTree never fetches external entities or DTDs, and expat >= 2.4.1 caps entity
    # amplification (billion laughs); the ZIP guard has already bounded the part's size.
    return ElementTree.fromstring(archive.read(name))  # noqa: S314


def _local_name(element: ElementTree.Element) -> str:
    return element.tag.rsplit("}", 1)[-1] if isinstance(element.tag, str) else ""


def _decode(data: bytes) -> str:
    # EPUB requires UTF-8 or UTF-16; be lenient with the odd bad byte in a chapter.
    return data.decode(text_encoding(data[:4]), errors="replace")
