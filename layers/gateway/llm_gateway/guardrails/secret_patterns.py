"""Credential detectors: AWS keys, vendor API tokens, PEM private keys, JWTs, password assignments.

Vendor tokens carry fixed prefixes, which makes them precise; a 40-character AWS secret has no prefix,
so it counts only next to a word that names it or next to an access key id.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from llm_gateway.guardrails.candidates import Candidate

_AWS_ACCESS_KEY = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])")
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_SECRET_CONTEXT = re.compile(r"secret|aws_?sak|SecretAccessKey", re.IGNORECASE)

# (pattern, what it is). Prefixed tokens; the look-behinds keep each start at a token boundary.
_VENDOR_TOKENS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<![\w\-])sk-ant-[A-Za-z0-9_\-]{20,200}"), "Anthropic API key"),
    (re.compile(r"(?<![\w\-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,200}"), "OpenAI API key"),
    (re.compile(r"(?<![\w\-])gh[pousr]_[A-Za-z0-9]{36,251}(?![A-Za-z0-9])"), "GitHub token"),
    (re.compile(r"(?<![\w\-])github_pat_[A-Za-z0-9_]{22,255}"), "GitHub fine-grained token"),
    (re.compile(r"(?<![\w\-])xox[abposr]-[A-Za-z0-9\-]{10,250}"), "Slack token"),
    (re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/]{20,120}"), "Slack webhook URL"),
    (re.compile(r"(?<![\w\-])AIza[A-Za-z0-9_\-]{35}(?![\w\-])"), "Google API key"),
    (re.compile(r"(?<![\w\-])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,200}"), "Stripe secret key"),
    (re.compile(r"(?<![\w\-])Bearer [A-Za-z0-9._~+/\-]{20,1000}=*"), "bearer token"),
)

_JWT = re.compile(r"(?<![\w\-.])eyJ[A-Za-z0-9_\-]{5,4000}\.eyJ[A-Za-z0-9_\-]{5,8000}\.[A-Za-z0-9_\-]{0,2000}")

_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY(?: BLOCK)?-----")
# Base64 lines, or the RFC 1421 headers an encrypted key carries ("Proc-Type: 4,ENCRYPTED").
_PEM_BODY_LINE = re.compile(r"[A-Za-z0-9+/=]{1,200}|[A-Za-z\-]{1,40}: [^\n]{0,200}")
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY(?: BLOCK)?-----")

# key = value / key: value / "key": "value"; the value (not the name) is the secret.
_ASSIGNMENT = re.compile(
    r"(?<![A-Za-z0-9])(?P<name>password|passwd|pwd|passphrase|secret|client_secret|api[_\-]?key|apikey"
    r"|access[_\-]?token|auth[_\-]?token|secret[_\-]?key|private[_\-]?key|token)"
    r"[\"']?[ \t]{0,3}[:=][ \t]{0,3}(?P<quote>[\"']?)(?P<value>[^\s\"',;&<>]{4,200})",
    re.IGNORECASE,
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z_.]*")
_PASSWORD_NAMES = frozenset({"password", "passwd", "pwd", "passphrase"})
# Values that are references or placeholders, not secrets: $VAR, ${VAR}, {{var}}, <token>, ***, None.
_NOT_A_SECRET = re.compile(
    r"^(?:[$%{<*\[!]|os\.|env\.|process\.|settings\.|config\.|getenv|none$|null$|nil$|true$|false$|undefined$"
    r"|x{3,}|\.{3}|redacted|changeme$|example|your[_\-]|placeholder|required$|str$|string$|int$|optional"
    r"|password$|passwd$|pass$|secret$|pwd$)",
    re.IGNORECASE,
)
# "the temporary password is Welcome#2024": prose, so the value must look made up (a digit and a letter,
# or a symbol), never a plain word ("the password is required").
_PASSWORD_IS = re.compile(
    r"\b(?:password|passcode|passphrase|pin)\s(?:is|was|will be)\s(?:now\s)?[\"'`]?(?P<value>[^\s\"'`,;]{6,64})",
    re.IGNORECASE,
)
_MADE_UP = re.compile(r"(?=.*\d)(?=.*[A-Za-z])|[^\w\s]")
# https://user:secret@host: the secret between the colon and the @.
_URL_PASSWORD = re.compile(r"://[^\s:/@]{1,64}:(?P<value>[^\s@/]{1,128})@[A-Za-z0-9]")


def find_aws_keys(text: str) -> Iterator[Candidate]:
    access_keys = [(m.start(), m.end()) for m in _AWS_ACCESS_KEY.finditer(text)]
    for start, end in access_keys:
        yield Candidate("aws_access_key", start, end, "AWS access key id")
    for match in _AWS_SECRET.finditer(text):
        value = match.group()
        if value.isalpha() or value.isdigit() or value.islower() or value.isupper():
            continue  # real secrets mix cases and digits; hashes and words do not
        named = _AWS_SECRET_CONTEXT.search(text, max(0, match.start() - 60), match.start()) is not None
        near_key = any(abs(match.start() - start) < 200 for start, _ in access_keys)
        if named or near_key:
            reason = "AWS secret access key" if named else "AWS secret access key (next to an access key id)"
            yield Candidate("aws_secret_key", match.start(), match.end(), reason, 0.95 if named else 0.8)


def find_vendor_tokens(text: str) -> Iterator[Candidate]:
    for pattern, what in _VENDOR_TOKENS:
        for match in pattern.finditer(text):
            if what == "bearer token" and not any(char.isdigit() for char in match.group()):
                continue  # "Bearer authentication-is-described-here" is prose; real tokens carry digits
            yield Candidate("api_key", match.start(), match.end(), what)


def find_jwts(text: str) -> Iterator[Candidate]:
    for match in _JWT.finditer(text):
        yield Candidate("jwt", match.start(), match.end(), "JSON Web Token")


def find_private_keys(text: str) -> Iterator[Candidate]:
    """A PEM block from BEGIN to END; a block cut short runs to the end of its base64 body."""
    position = 0
    end: re.Match[str] | None = None
    end_searched_from = -1  # one END search serves every BEGIN before it: many BEGINs stay linear
    while (begin := _PEM_BEGIN.search(text, position)) is not None:
        if end_searched_from < 0 or (end is not None and end.start() < begin.end()):
            end = _PEM_END.search(text, begin.end())
            end_searched_from = begin.end()
        next_begin = _PEM_BEGIN.search(text, begin.end())
        if end is not None and (next_begin is None or end.start() < next_begin.start()):
            stop = end.end()
        else:
            stop = begin.end()
            for line in text[begin.end() : next_begin.start() if next_begin else len(text)].splitlines(True):
                body = line.strip()
                if body and not _PEM_BODY_LINE.fullmatch(body):
                    break
                stop += len(line)
        yield Candidate("private_key", begin.start(), stop, "PEM private key block")
        position = stop


def _looks_like_code(value: str) -> bool:
    """A variable or a type where a value would be: "api_key=self.api_key", "token: EventLoopToken",
    "api_key: Final[str]", "token: hf_jwt_…" (an elided example)."""
    if "[" in value or "\u2026" in value or "..." in value:
        return True
    return _IDENTIFIER.fullmatch(value) is not None and (
        "_" in value or "." in value or any(char.isupper() for char in value[1:])
    )


def find_assignments(text: str) -> Iterator[Candidate]:
    for match in _ASSIGNMENT.finditer(text):
        # A closing bracket ends a call or a list; unquoted, a trailing full stop ends the sentence.
        value = match.group("value").rstrip(")]}" if match.group("quote") else ")]}.:")
        if _NOT_A_SECRET.match(value) or "(" in value or (value.count(".") >= 2 and value.replace(".", "").isalpha()):
            continue
        # Prose ("password: must be long") rarely has a digit or a symbol in the next word; secrets do.
        if len(value) < 10 and value.isalpha():
            continue
        if _looks_like_code(value):
            continue
        name = match.group("name").lower()
        kind = "password" if name in _PASSWORD_NAMES else "api_key"
        if kind == "api_key" and value.isdigit() and len(value) < 16:
            continue  # "max_token=4096", "token: 1234": counts and ids; a PIN stays a password
        start = match.start("value")
        yield Candidate(kind, start, start + len(value), f"{kind.replace('_', ' ')} assigned to '{name}'", 0.9)
    for match in _PASSWORD_IS.finditer(text):
        value = match.group("value").rstrip(".!?)")
        if len(value) >= 6 and _MADE_UP.search(value) and not _NOT_A_SECRET.match(value):
            start = match.start("value")
            yield Candidate("password", start, start + len(value), "password given in a sentence", 0.8)
    for match in _URL_PASSWORD.finditer(text):
        if not _NOT_A_SECRET.match(match.group("value")):
            yield Candidate("password", match.start("value"), match.end("value"), "password in a URL")
