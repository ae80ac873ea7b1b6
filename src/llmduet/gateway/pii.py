"""Offline detection of personal and secret data: a tested recogniser set.

Structured types are found by pattern and then validated, which is what keeps precision
up: card numbers must pass the Luhn check, IBANs the ISO 7064 mod-97 check, IP addresses
must parse, US SSNs and UK NINOs must respect their issuing rules. API keys are known
token formats (OpenAI, GitHub, AWS, Slack, Google) or a long value after ``api_key=`` /
``token:``-like labels. Person names, without a model, are found from cues: a title
(``Dr``, ``Ms`` ...), a greeting or sign-off (``Dear``, ``Regards,``), or a known first
name followed by a capitalised surname; this is the weakest recogniser, and its precision
and recall are measured in BENCHMARKS.md like the others.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

TYPES = (
    "EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "API_KEY", "US_SSN", "UK_NINO",
    "PERSON",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Finding:
    type: str
    start: int
    end: int
    value: str


def luhn_valid(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def iban_valid(value: str) -> bool:
    compact = value.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    digits = "".join(str(int(c, 36)) for c in rearranged)
    return int(digits) % 97 == 1


def _ip_valid(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _phone_valid(value: str) -> bool:
    """International numbers (+CC ...) have 8-15 digits; national ones at least 10; a run
    of one or two repeated digits (000-000-0000) is a placeholder."""
    digits = [c for c in value if c.isdigit()]
    return (8 if value.startswith("+") else 10) <= len(digits) <= 15 and len(set(digits)) > 2


def _card_valid(value: str) -> bool:
    return luhn_valid(value) and len({c for c in value if c.isdigit()}) > 1


Recogniser = tuple[str, re.Pattern[str], Callable[[str], bool] | None, int]

_FIRST_NAMES = frozenset(
    [
        "aaron",
        "adam",
        "adrian",
        "aisha",
        "alan",
        "albert",
        "alex",
        "alexander",
        "alice",
        "alicia",
        "amanda",
        "amelia",
        "amir",
        "amy",
        "ana",
        "andrea",
        "andrew",
        "angela",
        "anna",
        "anne",
        "anthony",
        "antonio",
        "arjun",
        "ava",
        "barbara",
        "ben",
        "benjamin",
        "beth",
        "brian",
        "bruno",
        "carla",
        "carlos",
        "carmen",
        "caroline",
        "catherine",
        "charles",
        "charlie",
        "charlotte",
        "chen",
        "chloe",
        "chris",
        "christina",
        "christopher",
        "claire",
        "clara",
        "connor",
        "daniel",
        "david",
        "diana",
        "diego",
        "dmitri",
        "dora",
        "ed",
        "edward",
        "elena",
        "eli",
        "elizabeth",
        "ella",
        "emily",
        "emma",
        "eric",
        "erik",
        "ethan",
        "eva",
        "fatima",
        "felix",
        "fiona",
        "francesca",
        "frank",
        "gabriel",
        "george",
        "grace",
        "hannah",
        "harry",
        "helen",
        "henry",
        "hugo",
        "ian",
        "isabel",
        "isabella",
        "ivan",
        "jack",
        "jacob",
        "james",
        "jane",
        "jason",
        "javier",
        "jennifer",
        "jessica",
        "joan",
        "joe",
        "john",
        "jonathan",
        "jordan",
        "jose",
        "joseph",
        "julia",
        "julian",
        "karen",
        "kate",
        "katherine",
        "kenji",
        "kevin",
        "laura",
        "lea",
        "leo",
        "liam",
        "lily",
        "linda",
        "lisa",
        "lucas",
        "lucia",
        "luis",
        "luka",
        "maria",
        "mark",
        "marta",
        "martin",
        "mary",
        "matthew",
        "maya",
        "mia",
        "michael",
        "michelle",
        "miguel",
        "mohammed",
        "nadia",
        "naomi",
        "nathan",
        "nina",
        "noah",
        "nora",
        "olivia",
        "omar",
        "oscar",
        "pablo",
        "paul",
        "paula",
        "peter",
        "priya",
        "rachel",
        "rafael",
        "ravi",
        "rebecca",
        "richard",
        "robert",
        "rosa",
        "ryan",
        "sam",
        "samuel",
        "sara",
        "sarah",
        "sebastian",
        "sergei",
        "sofia",
        "sophia",
        "sophie",
        "stefan",
        "stephen",
        "steven",
        "susan",
        "thomas",
        "tom",
        "tomas",
        "victor",
        "victoria",
        "william",
        "yuki",
        "zoe",
    ]
)
_CAPITALISED = r"[A-Z][a-z]+(?:[-'][A-Z][a-z]+)?"
_RECOGNISERS: list[Recogniser] = [
    ("EMAIL", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"), None, 0),
    (
        "API_KEY",
        re.compile(
            r"\b(?:sk-(?:proj-|live-|test-)?[A-Za-z0-9_-]{20,}|ghp_[A-Za-z0-9]{30,}"
            r"|github_pat_[A-Za-z0-9_]{30,}|AKIA[0-9A-Z]{16}|xox[abprs]-[A-Za-z0-9-]{10,}"
            r"|AIza[0-9A-Za-z_-]{30,})"
        ),
        None,
        0,
    ),
    (
        "API_KEY",
        re.compile(
            r"(?i)\b(?:api[_-]?key|access[_-]?token|secret(?:[_-]?key)?|token|password)"
            r"\s*[:=]\s*[\"']?([A-Za-z0-9_\-./+=]{16,})"
        ),
        None,
        1,
    ),
    (
        "IBAN",
        re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
        iban_valid,
        0,
    ),
    # not inside a UUID or another dash-joined identifier
    ("CREDIT_CARD", re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])"), _card_valid, 0),
    ("US_SSN", re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"), None, 0),
    (
        "UK_NINO",
        re.compile(
            r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
            r" ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
        ),
        None,
        0,
    ),
    (
        "IP_ADDRESS",
        re.compile(
            r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)"
            r"|(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}:?[0-9A-Fa-f]{0,4}(?:::?[0-9A-Fa-f]{1,4})*(?![\w:])"
        ),
        _ip_valid,
        0,
    ),
    (
        "PHONE",
        re.compile(
            # not a group of an IBAN-like code ("9060 0480 ..."), not a template (0XXX)
            r"(?<![\w+])(?<![A-Z0-9]{4} )"
            r"(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
            r"|\(\d{3}\) ?\d{3}[ .-]\d{4}|\b\d{3}[ .-]\d{3}[ .-]\d{4}"
            r"|\b0\d{4} ?\d{6}|\b0\d{2,4}[ ]\d{3,4}[ ]\d{3,4})(?![\w])(?![ .-]?\w*[Xx]{2})"
        ),
        _phone_valid,
        0,
    ),
    (
        "PERSON",
        re.compile(
            rf"(?:\b(?:Mr|Mrs|Ms|Mx|Dr|Prof)\.? |\b(?:Dear|Hi|Hello|Thanks|Regards,|Cheers,|"
            rf"Sincerely,|Best,|From:|To:|Cc:|cc|signed by|contact|contacted|assigned to|"
            rf"owner:|by) )({_CAPITALISED}(?: {_CAPITALISED}){{1,2}})"
        ),
        None,
        1,
    ),
]
_FIRST_NAME_THEN_SURNAME = re.compile(rf"\b({_CAPITALISED}) ({_CAPITALISED})\b")


def _candidates(text: str) -> Iterable[Finding]:
    for kind, pattern, valid, group in _RECOGNISERS:
        for match in pattern.finditer(text):
            value = match.group(group)
            if value and (valid is None or valid(value)):
                yield Finding(kind, match.start(group), match.end(group), value)
    for match in _FIRST_NAME_THEN_SURNAME.finditer(text):
        if match.group(1).lower() in _FIRST_NAMES:
            yield Finding("PERSON", match.start(), match.end(), match.group(0))


def detect(text: str, types: Iterable[str] = TYPES) -> list[Finding]:
    """Non-overlapping findings in text order; where two overlap, the longer one wins
    (an IBAN's digits are not also a card number)."""
    wanted = set(types)
    found = sorted(
        (f for f in _candidates(text) if f.type in wanted),
        key=lambda f: (f.start, -(f.end - f.start)),
    )
    kept: list[Finding] = []
    for finding in found:
        if kept and finding.start < kept[-1].end:
            if finding.end - finding.start > kept[-1].end - kept[-1].start:
                kept[-1] = finding
            continue
        kept.append(finding)
    return kept
