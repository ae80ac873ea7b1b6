"""The shipped handbook corpus and its labeled questions hang together."""

from __future__ import annotations

from collections import Counter

from jsonl import read_jsonl
from llmduet.data import HANDBOOK_DOCS, HANDBOOK_QUESTIONS


def load_questions() -> list[dict]:
    return read_jsonl(HANDBOOK_QUESTIONS)


def test_corpus_has_the_promised_shape() -> None:
    suffixes = Counter(path.suffix for path in HANDBOOK_DOCS.iterdir())
    assert 20 <= sum(suffixes.values()) <= 40
    assert suffixes[".md"] >= 20 and suffixes[".html"] >= 1 and suffixes[".pdf"] >= 1
    html = next(HANDBOOK_DOCS.glob("*.html")).read_text()
    assert "<nav" in html and "<script" in html and "<main" in html


def test_questions_are_labeled_and_cite_existing_documents() -> None:
    questions = load_questions()
    assert len(questions) >= 60
    assert len({q["id"] for q in questions}) == len(questions)
    names = {path.name for path in HANDBOOK_DOCS.iterdir()}
    for question in questions:
        assert question["question"].strip() and question["answer"].strip()
        assert set(question["sources"]) <= names, question["id"]
        if "unanswerable" in question["tags"]:
            assert question["sources"] == []
        else:
            assert question["sources"], question["id"]
    tags = Counter(tag for q in questions for tag in q["tags"])
    assert tags["multi-doc"] >= 5 and tags["unanswerable"] >= 5
