"""Data the project ships: the Northwind Labs handbook corpus and its question set."""

from pathlib import Path

HANDBOOK = Path(__file__).parent / "handbook"
HANDBOOK_DOCS = HANDBOOK / "docs"
HANDBOOK_QUESTIONS = HANDBOOK / "questions.jsonl"
