"""Extraction keeps structure; chunking respects it; bad files give reasons."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from llmduet.data import HANDBOOK_DOCS
from llmduet.embeddings import MiniLMEmbedder
from llmduet.rag import extract as extract_module
from llmduet.rag.chunking import Chunker
from llmduet.rag.extract import ExtractionError, extract
from llmduet.rag.pdfwrite import write_pdf


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    return Chunker(MiniLMEmbedder(threads=1).count_tokens, target_tokens=120, overlap_tokens=24)


def test_markdown_sections_carry_their_heading_path(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text(
        "# Guide\nIntro.\n\n## Setup\nInstall it.\n\n### Linux\nUse apt.\n\n"
        "```\n# not a heading\n```\n\n## Usage\nRun it.\n"
    )
    document = extract(path, "guide.md")
    assert document.title == "Guide"
    assert [s.heading_path for s in document.sections] == [
        ("Guide",),
        ("Guide", "Setup"),
        ("Guide", "Setup", "Linux"),
        ("Guide", "Usage"),
    ]
    assert "# not a heading" in document.sections[2].text


def test_html_keeps_main_text_and_drops_page_furniture() -> None:
    document = extract(HANDBOOK_DOCS / "benefits-overview.html", "benefits-overview.html")
    text = document.text
    assert "wellness allowance" in text.lower()
    html = (HANDBOOK_DOCS / "benefits-overview.html").read_text()
    script = html.split("<script")[1].split("</script>")[0].split(">", 1)[1].strip()
    assert script[:30] not in text
    assert all(
        s.heading_path and s.heading_path[0] == "Benefits Overview" for s in document.sections
    )


def test_pdf_pages_are_numbered(tmp_path: Path) -> None:
    path = tmp_path / "faq.pdf"
    write_pdf(path, ["First page about badges.", "Second page about laptops."], title="FAQ")
    document = extract(path, "faq.pdf")
    assert document.title == "FAQ"
    assert [(s.page, s.text) for s in document.sections] == [
        (1, "First page about badges."),
        (2, "Second page about laptops."),
    ]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("blob.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary file"),
        ("latin.txt", "caf\xe9 cr\xe8me".encode("latin-1"), "not UTF-8"),
        ("empty.md", b"   \n\n", "no text found"),
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "corrupt or unreadable PDF"),
        ("sheet.xlsx", b"PK\x03\x04", "unsupported file type '.xlsx'"),
    ],
)
def test_bad_files_get_a_reason(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ExtractionError, match=reason):
        extract(path)


def test_huge_files_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract_module, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.txt"
    path.write_text("x" * 5000)
    with pytest.raises(ExtractionError, match="over the"):
        extract(path)


def test_chunks_stay_in_sections_fit_the_target_and_map_back(chunker: Chunker) -> None:
    for path in sorted(HANDBOOK_DOCS.iterdir()):
        document = extract(path, path.name)
        chunks = chunker.chunk(document)
        assert chunks, path.name
        sizes = chunker.count_tokens([chunk.text for chunk in chunks])
        assert max(sizes) <= 120, path.name
        for chunk in chunks:
            assert document.text[chunk.start : chunk.end] == chunk.text
            section = next(
                s
                for s in document.sections
                if s.start <= chunk.start and chunk.end <= s.start + len(s.text)
            )
            assert chunk.heading == " > ".join(section.heading_path)
            assert chunk.page == section.page
        assert len({chunk.id for chunk in chunks}) == len(chunks)


def test_long_paragraphs_split_with_overlap(chunker: Chunker, tmp_path: Path) -> None:
    sentences = [f"Fact number {i} is that the value is {i * 7}." for i in range(60)]
    path = tmp_path / "long.md"
    path.write_text("# Facts\n" + " ".join(sentences))
    chunks = chunker.chunk(extract(path, "long.md"))
    assert len(chunks) >= 3
    for first, second in itertools.pairwise(chunks):
        assert first.end > second.start  # the next chunk repeats the tail of this one
    joined = " ".join(chunk.text for chunk in chunks)
    assert all(sentence in joined for sentence in sentences)
