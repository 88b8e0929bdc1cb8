"""The PII check, kind by kind: what it finds, what it must leave alone, and where the spans land."""

from __future__ import annotations

import itertools

import pytest

from llm_gateway.guardrails.findings import Finding
from llm_gateway.guardrails.pii import PiiCheck

CHECK = PiiCheck()


def found(text: str) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in CHECK.scan(text)]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("write to jane.doe+news@mail.example.org today", "email", "jane.doe+news@mail.example.org"),
        ("ring +44 20 7946 0958 after six", "phone", "+44 20 7946 0958"),
        ("US office: +1 (415) 555-2671.", "phone", "+1 (415) 555-2671"),
        ("cell 415.555.2671", "phone", "415.555.2671"),
        ("Tel. 030 12345678", "phone", "030 12345678"),
        ("appelle le 06 12 34 56 78", "phone", "06 12 34 56 78"),
        ("phone: 4155552671", "phone", "4155552671"),
        ("card 4111-1111-1111-1111 exp 12/27", "credit_card", "4111-1111-1111-1111"),
        ("amex 3782 822463 10005", "credit_card", "3782 822463 10005"),
        ("mc 5555555555554444", "credit_card", "5555555555554444"),
        ("IBAN: DE89 3704 0044 0532 0130 00.", "iban", "DE89 3704 0044 0532 0130 00"),
        ("pay GB82WEST12345698765432 NOW", "iban", "GB82WEST12345698765432"),
        ("host 203.0.113.7:443", "ip_address", "203.0.113.7"),
        ("v6 [2001:db8::8a2e:370:7334]:80", "ip_address", "2001:db8::8a2e:370:7334"),
        ("AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "aws_access_key", "AKIAIOSFODNN7EXAMPLE"),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_key",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        (
            "OPENAI_API_KEY=sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
            "api_key",
            "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
        ),
        (
            "key sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe",
            "api_key",
            "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe",
        ),
        (
            "token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 leaked",
            "api_key",
            "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        ),
        ("slack xoxb-1234567890-0987654321-AbCdEfGhIjKl", "api_key", "xoxb-1234567890-0987654321-AbCdEfGhIjKl"),
        ("db_password = 'Tr0ub4dor&3x'", "password", "Tr0ub4dor"),
        ("Your new password is Spring#77 (expires soon).", "password", "Spring#77"),
        ("login(user, password=s3cr3t99)", "password", "s3cr3t99"),
        ("The wifi password: latte4life.", "password", "latte4life"),
        ("cc 4111.1111.1111.1111", "credit_card", "4111.1111.1111.1111"),
        ("iban de89 3704 0044 0532 0130 00 ok", "iban", "de89 3704 0044 0532 0130 00"),
        ("postgres://app:s3cr3t-pw@db.internal/app", "password", "s3cr3t-pw"),
    ],
)
def test_finds_each_kind(text: str, kind: str, value: str) -> None:
    assert (kind, value) in found(text)


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 shipped",  # fails Luhn
        "tracking 1234 5678 9012 3456",  # fails Luhn and no issuer
        "IBAN DE89 3704 0044 0532 0130 01",  # wrong check digits
        "meeting on 2024-01-15 at 12:30, or 15.01.2024",
        "release 10.0.0.1 and 10.0.0.1-alpha, OID 1.3.6.1.4.1",
        "ISBN 978-3-16-148410-0 and uuid 123e4567-e89b-12d3-a456-426614174000",
        "icon@2x.png and npm i left-pad@1.3.0",
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
        "password: must be at least twelve characters",
        "the password is required and the password is incorrect",
        "pi is 3.1415.9265.3589.7932 digits",  # dotted groups, but fails Luhn and has no issuer
        "the de89 ratio",
        "api_key = os.environ['API_KEY']; password=${DB_PASSWORD}",
        "the ratio was 3.14159 and 999.999.999.999 is not an address",
        "sort by std::vector and 12:30:45 in a log",
        "Authorization uses the Bearer token-based-authentication-scheme described below",
        "generate(max_token=4096, token: 1234)",
        "client = Client(api_key=self.api_key, token=message.task_token)",
        "ApiKey: !Ref GatewayKey",
        "token: Final[str] = ...; token: EventLoopToken; api_key: Annotated[str, Field()]",
        "password: SecretStr, client_secret: ClientSecret, url = 'https://user:***@host' or https://u:password@h",
        "yaml int pattern [-+]?[0-9]+ also +0123456789 and 00 00 00 00 00 in a dump",
    ],
)
def test_leaves_hard_negatives_alone(text: str) -> None:
    assert found(text) == []


def test_overlaps_keep_one_span_per_region() -> None:
    text = "api_key=sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z and https://u:pw123456@x.example.com"
    findings = CHECK.scan(text)
    spans = [(f.start, f.end) for f in findings]
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    assert [f.kind for f in findings] == ["api_key", "password"]
    assert text[findings[0].start : findings[0].end].startswith("sk-proj-")


def test_spans_index_the_original_text_after_non_ascii() -> None:
    text = "Grüße aus Köln 🎉 — schreib an jürgen@example.de oder +49 221 1234567 ✓"
    findings = CHECK.scan(text)
    assert [(f.kind, f.start, f.end) for f in findings] == [
        ("email", text.index("jürgen"), text.index(" oder")),
        ("phone", text.index("+49"), text.index(" ✓")),
    ]


def test_reasons_never_quote_the_match() -> None:
    text = "pw: password=Sup3rS3cret! card 4111111111111111 mail a.b@example.com"
    for finding in CHECK.scan(text):
        assert isinstance(finding, Finding) and finding.check == "pii"
        assert text[finding.start : finding.end] not in finding.reason


def test_kinds_narrow_the_report() -> None:
    text = "mail a.b@example.com card 4111111111111111"
    assert [f.kind for f in PiiCheck(kinds=["credit_card"]).scan(text)] == ["credit_card"]
    with pytest.raises(ValueError, match="unknown PII kinds"):
        PiiCheck(kinds=["ssn"])


def test_pem_block_is_one_finding() -> None:
    text = (
        "key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nAAAA==\n"
        "-----END OPENSSH PRIVATE KEY-----\nbye"
    )
    assert found(text) == [("private_key", text[5 : text.index("\nbye")])]
    cut = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nthat was it"
    assert found(cut) == [("private_key", "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n")]


def test_scores_say_how_sure_each_detector_is() -> None:
    text = "card 4111111111111111, +44 20 7946 0958, phone: 4155552671, host 10.1.2.3, the password is Sup3r#pw"
    scores = {text[f.start : f.end]: f.score for f in CHECK.scan(text)}
    assert scores["4111111111111111"] == 1.0
    assert scores["+44 20 7946 0958"] > scores["4155552671"]
    assert all(0.5 <= score <= 1.0 for score in scores.values())
    assert scores["Sup3r#pw"] < 1.0


def test_every_check_fits_the_protocol() -> None:
    from llm_gateway.guardrails.denylist import DenyListCheck
    from llm_gateway.guardrails.findings import Check
    from llm_gateway.guardrails.injection import InjectionCheck

    checks: list[Check] = [PiiCheck(), InjectionCheck(), DenyListCheck(["x"])]
    assert [check.name for check in checks] == ["pii", "injection", "denylist"]
    assert all(check.scan("") == [] for check in checks)
