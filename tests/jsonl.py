"""Reading the shipped JSONL data sets strictly: a blank or non-object line fails with its
line number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines, f"{path.name} is empty"
    rows = []
    for number, line in enumerate(lines, start=1):
        assert line.strip(), f"{path.name}: blank line {number}"
        row = json.loads(line)
        assert isinstance(row, dict), f"{path.name}: line {number} is not a JSON object"
        rows.append(row)
    return rows
