"""Text out of Markdown, plain text, HTML and PDF, keeping the structure retrieval needs:
the heading path of every section, PDF page numbers, and HTML main text without
navigation, scripts or footers.

Problems with one file raise :class:`ExtractionError` with a reason a person can act on;
ingest reports it for that file and carries on with the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

from llmduet.errors import DuetError

MAX_FILE_BYTES = 20 * 1024 * 1024
SUFFIXES = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}


class ExtractionError(DuetError):
    """A file that cannot be ingested; ``str()`` is the reason."""


@dataclass(slots=True)
class Section:
    heading_path: tuple[str, ...]
    text: str
    page: int | None = None
    start: int = 0  # offset of ``text`` in the document's full text


@dataclass(slots=True)
class Document:
    source: str
    title: str
    sections: list[Section] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n\n".join(section.text for section in self.sections)


def _place(sections: list[Section]) -> list[Section]:
    """Drop empty sections and set each one's offset in the joined text."""
    kept = [s for s in sections if s.text.strip()]
    offset = 0
    for section in kept:
        section.text = section.text.strip()
        section.start = offset
        offset += len(section.text) + 2
    return kept


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise ExtractionError("binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractionError(
            f"not UTF-8 text (invalid byte at offset {exc.start}): convert it to UTF-8"
        ) from None


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def extract_markdown(text: str, source: str) -> Document:
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    lines: list[str] = []
    in_fence = False
    title = ""

    def close() -> None:
        sections.append(Section(tuple(h for _, h in stack), "\n".join(lines)))
        lines.clear()

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match is None:
            lines.append(line)
            continue
        close()
        level, heading = len(match.group(1)), match.group(2).strip()
        title = title or (heading if level == 1 else "")
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
    close()
    return Document(source, title or Path(source).stem, _place(sections))


def extract_text(text: str, source: str) -> Document:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    title = first if 0 < len(first) <= 120 else Path(source).stem
    return Document(source, title, _place([Section((), text)]))


class _MainText(HTMLParser):
    """Collects text by heading, skipping page furniture; prefers <main>/<article>."""

    SKIP: ClassVar[set[str]] = {
        "script",
        "style",
        "nav",
        "header",
        "footer",
        "aside",
        "noscript",
        "template",
        "svg",
        "form",
    }
    BLOCKS: ClassVar[set[str]] = {
        "p",
        "div",
        "li",
        "tr",
        "br",
        "section",
        "article",
        "main",
        "table",
        "ul",
        "ol",
        "blockquote",
        "pre",
        "dd",
        "dt",
    }
    HEADINGS: ClassVar[dict[str, int]] = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.skipping = 0
        self.in_title = False
        self.main_depth = 0
        self.saw_main = False
        self.heading_level = 0
        self.heading_parts: list[str] = []
        self.stack: list[tuple[int, str]] = []
        self.sections: dict[bool, list[Section]] = {True: [], False: []}
        self.parts: dict[bool, list[str]] = {True: [], False: []}

    def _flush(self) -> None:
        for in_main in (True, False):
            text = "".join(self.parts[in_main])
            text = re.sub(r"[ \t]+", " ", text)
            text = re.sub(r"\s*\n\s*", "\n", text)
            if text.strip():
                self.sections[in_main].append(Section(tuple(h for _, h in self.stack), text))
            self.parts[in_main].clear()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag == "title":
            self.in_title = True
        elif tag in ("main", "article"):
            self.main_depth += 1
            self.saw_main = True
        elif tag in self.HEADINGS and not self.skipping:
            self._flush()
            self.heading_level = self.HEADINGS[tag]
            self.heading_parts = []
        elif tag in self.BLOCKS:
            self.parts[self.main_depth > 0].append("\n")
        elif tag in ("td", "th"):
            self.parts[self.main_depth > 0].append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag == "title":
            self.in_title = False
        elif tag in ("main", "article"):
            self.main_depth = max(0, self.main_depth - 1)
        elif tag in self.HEADINGS and self.heading_level:
            heading = " ".join("".join(self.heading_parts).split())
            while self.stack and self.stack[-1][0] >= self.heading_level:
                self.stack.pop()
            if heading:
                self.stack.append((self.heading_level, heading))
            self.heading_level = 0
        elif tag in self.BLOCKS:
            self.parts[self.main_depth > 0].append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title += data
        elif self.skipping:
            return
        elif self.heading_level:
            self.heading_parts.append(data)
        else:
            self.parts[self.main_depth > 0].append(data)

    def result(self) -> tuple[str, list[Section]]:
        self._flush()
        return " ".join(self.title.split()), self.sections[self.saw_main]


def extract_html(text: str, source: str) -> Document:
    parser = _MainText()
    parser.feed(text)
    parser.close()
    title, sections = parser.result()
    if not title:
        title = next((s.heading_path[0] for s in sections if s.heading_path), Path(source).stem)
    return Document(source, title, _place(sections))


def extract_pdf(path: Path, source: str) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
        metadata_title = (reader.metadata.title if reader.metadata else None) or ""
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ExtractionError(f"corrupt or unreadable PDF ({type(exc).__name__}: {exc})") from None
    sections = [Section((), text, page=number) for number, text in enumerate(pages, 1)]
    first = next((s.text.strip().splitlines()[0] for s in sections if s.text.strip()), "")
    title = metadata_title.strip() or first[:120] or Path(source).stem
    return Document(source, title, _place(sections))


def extract(path: Path, source: str | None = None) -> Document:
    """Extract one file; ``source`` is the name recorded for it (default: its path)."""
    source = source or str(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ExtractionError(
            f"unsupported file type '{path.suffix or path.name}': supported are "
            f"{', '.join(sorted(SUFFIXES))}"
        )
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ExtractionError(f"cannot read the file ({exc.strerror})") from None
    if size > MAX_FILE_BYTES:
        raise ExtractionError(
            f"file is {size / 1e6:.1f} MB, over the {MAX_FILE_BYTES // 2**20} MiB limit: split it"
        )
    try:
        if kind == "pdf":
            document = extract_pdf(path, source)
        else:
            text = _read_text(path)
            extractor = {"markdown": extract_markdown, "text": extract_text, "html": extract_html}[
                kind
            ]
            document = extractor(text, source)
    except OSError as exc:
        raise ExtractionError(f"cannot read the file ({exc.strerror})") from None
    if not document.sections:
        raise ExtractionError("no text found: the file is empty or holds only markup/images")
    return document
