"""Data the project ships: the Northwind Labs handbook corpus and its question set, a chat
evaluation set (extraction, classification, summarisation, arithmetic, refusal), agent
teams, and agent tasks (handbook facts plus arithmetic)."""

from pathlib import Path

HANDBOOK = Path(__file__).parent / "handbook"
HANDBOOK_DOCS = HANDBOOK / "docs"
HANDBOOK_QUESTIONS = HANDBOOK / "questions.jsonl"
CHAT_EVAL = Path(__file__).parent / "evals" / "chat.jsonl"
TEAMS = Path(__file__).parent / "teams"
AGENT_TASKS = Path(__file__).parent / "agent_tasks.jsonl"
PII_SNIPPETS = Path(__file__).parent / "pii" / "snippets.jsonl"
