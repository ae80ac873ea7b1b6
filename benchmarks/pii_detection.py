"""PII detection precision and recall per type on the shipped labeled snippets.

A finding counts as a true positive when a labeled entity of the same type overlaps it;
every other finding is a false positive, every unmatched label a false negative. The
baseline in the same run is a plain-regex detector without validators (no Luhn, no
mod-97, no address parsing), which shows what the validators buy in precision.

    python benchmarks/pii_detection.py
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

from llmduet.data import PII_SNIPPETS
from llmduet.gateway.pii import TYPES, Finding, detect

STRUCTURED = [t for t in TYPES if t != "PERSON"]
NAIVE = {
    "EMAIL": r"\S+@\S+",
    "PHONE": r"\+?\d[\d ().-]{7,}\d",
    "CREDIT_CARD": r"\d(?:[ -]?\d){12,18}",
    "IBAN": r"[A-Z]{2}\d{2}[A-Z0-9 ]{11,30}",
    "IP_ADDRESS": r"\d+\.\d+\.\d+\.\d+|[0-9a-f]*:[0-9a-f:]+",
    "API_KEY": r"(?:sk-|ghp_|AKIA)\S+",
    "US_SSN": r"\d{3}-\d{2}-\d{4}",
    "UK_NINO": r"[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]",
}


def naive(text: str) -> list[Finding]:
    return [
        Finding(kind, m.start(), m.end(), m.group(0))
        for kind, pattern in NAIVE.items()
        for m in re.finditer(pattern, text)
    ]


def score(snippets: list[dict], find) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    tp, fp, fn = Counter(), Counter(), Counter()
    for snippet in snippets:
        labels = [dict(e) for e in snippet["entities"]]
        for finding in find(snippet["text"]):
            match = next(
                (
                    e
                    for e in labels
                    if e["type"] == finding.type
                    and e["start"] < finding.end
                    and finding.start < e["end"]
                ),
                None,
            )
            if match is None:
                fp[finding.type] += 1
            else:
                tp[finding.type] += 1
                labels.remove(match)
        for label in labels:
            fn[label["type"]] += 1
    table = {}
    for kind in TYPES:
        found, wanted = tp[kind] + fp[kind], tp[kind] + fn[kind]
        table[kind] = {
            "precision": tp[kind] / found if found else float("nan"),
            "recall": tp[kind] / wanted if wanted else float("nan"),
            "labels": wanted,
        }
    totals = {k: sum(c[t] for t in STRUCTURED) for k, c in (("tp", tp), ("fp", fp), ("fn", fn))}
    table["structured"] = {
        "precision": totals["tp"] / (totals["tp"] + totals["fp"]),
        "recall": totals["tp"] / (totals["tp"] + totals["fn"]),
        "labels": totals["tp"] + totals["fn"],
    }
    return table


def main() -> None:
    snippets = [json.loads(line) for line in PII_SNIPPETS.read_text().splitlines() if line.strip()]
    started = time.perf_counter()
    ours = score(snippets, detect)
    per_snippet_ms = (time.perf_counter() - started) / len(snippets) * 1000
    baseline = score(snippets, naive)
    positives = sum(bool(s["entities"]) for s in snippets)
    print(
        f"{len(snippets)} snippets ({positives} with PII); "
        f"detection {per_snippet_ms:.2f} ms a snippet"
    )
    print(f"{'type':12}{'labels':>7}{'precision':>11}{'recall':>8}   {'naive P':>8}{'naive R':>8}")
    for kind in [*TYPES, "structured"]:
        row, base = ours[kind], baseline.get(kind, {})
        print(
            f"{kind:12}{row['labels']:>7}{row['precision']:>11.3f}{row['recall']:>8.3f}   "
            f"{base.get('precision', float('nan')):>8.3f}{base.get('recall', float('nan')):>8.3f}"
        )
    out = Path("benchmarks/results/pii_detection.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"ours": ours, "naive": baseline, "ms_per_snippet": per_snippet_ms}))


if __name__ == "__main__":
    main()
