"""The guardrail policy grammar and how a request's settings combine with its key's and the default."""

import pytest

from llm_gateway.config import Settings
from llm_gateway.errors import GuardrailOverrideRefusedError, InvalidRequestError
from llm_gateway.guardrails import policy as policies
from llm_gateway.guardrails.policy import layered, parse, policy_from, resolve


def test_a_check_without_a_stage_gets_its_usual_stages():
    assert parse("pii=redact, injection=block", param="p") == {
        ("pii", "input"): "redact",
        ("pii", "output"): "redact",
        ("injection", "input"): "block",
    }


def test_a_stage_narrows_a_check_and_later_items_win():
    settings = parse("denylist=monitor, denylist.output=block", param="p")
    assert settings == {("denylist", "input"): "monitor", ("denylist", "output"): "block"}


def test_restore_redacts_the_input_and_leaves_the_output_setting_alone():
    policy = policy_from(parse("pii=restore", param="p"))
    assert policy.restore
    assert policy.mode("pii", "input") == "redact" and policy.mode("pii", "output") is None
    assert policy.describe() == "pii.input=restore"
    both = policy_from(parse("pii=redact, pii=restore", param="p"))
    assert both.restore and both.mode("pii", "output") == "redact"


def test_the_body_field_may_be_an_object():
    assert parse({"pii.input": "block", "bedrock": "monitor"}, param="guardrails") == {
        ("pii", "input"): "block",
        ("bedrock", "input"): "monitor",
        ("bedrock", "output"): "monitor",
    }


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("pii", "is not check=setting"),
        ("secrets=block", "unknown check"),
        ("pii.middle=block", "unknown stage"),
        ("pii=shred", "unknown setting"),
        ("injection=restore", "restore is a setting of pii"),
        ("pii.output=restore", "restore is a setting of pii"),
        ("x" * 600, "at most 512"),
        (42, "must be a string"),
        ({"pii": 1}, "setting string"),
    ],
)
def test_bad_specs_are_a_400_naming_the_parameter(spec, says):
    with pytest.raises(InvalidRequestError) as caught:
        parse(spec, param="x-gateway-guardrails")
    assert caught.value.code == "invalid_request" and caught.value.http_status == 400
    assert caught.value.details["param"] == "x-gateway-guardrails"
    assert says in caught.value.message


def test_off_turns_a_check_off():
    policy = policy_from(parse("pii=redact,pii.output=off", param="p"))
    assert list(policy.checks("output")) == [] and list(policy.checks("input")) == [("pii", "redact")]


def test_a_key_layers_its_own_settings_over_the_default():
    base = layered(parse("pii=monitor,injection=monitor", param="p"), "pii=redact")
    assert base[("pii", "input")] == "redact" and base[("injection", "input")] == "monitor"


def test_tighten_accepts_stricter_settings_and_refuses_looser_ones():
    base = parse("pii=redact", param="p")
    tighter = resolve(base, parse("pii=block, injection=monitor", param="h"), "tighten", param="h")
    assert tighter.mode("pii", "input") == "block" and tighter.mode("injection", "input") == "monitor"
    with pytest.raises(GuardrailOverrideRefusedError) as caught:
        resolve(base, parse("pii=monitor", param="h"), "tighten", param="x-gateway-guardrails")
    assert caught.value.http_status == 403 and caught.value.code == "guardrails_override_refused"
    assert caught.value.details["param"] == "x-gateway-guardrails" and caught.value.details["check"] == "pii"


def test_restore_is_as_strict_as_redact_under_tighten():
    base = parse("pii=redact", param="p")
    assert resolve(base, parse("pii=restore", param="h"), "tighten", param="h").restore
    kept = resolve(parse("pii=restore", param="p"), parse("pii.input=redact", param="h"), "tighten", param="h")
    assert kept.restore and kept.mode("pii", "input") == "redact"


def test_none_refuses_any_request_setting_and_any_accepts_looser_ones():
    base = parse("pii=block", param="p")
    with pytest.raises(GuardrailOverrideRefusedError):
        resolve(base, parse("pii=block", param="h"), "none", param="h")
    assert resolve(base, {}, "none", param="h").mode("pii", "input") == "block"
    assert resolve(base, parse("pii=off", param="h"), "any", param="h").active is False


def test_settings_refuse_a_bad_default():
    with pytest.raises(ValueError, match="unknown check"):
        Settings.from_env({"GATEWAY_GUARDRAILS": "virus=block"})
    assert Settings.from_env({"GATEWAY_GUARDRAILS": "pii=redact"}).guardrails == "pii=redact"


def test_checks_come_in_a_fixed_order():
    policy = policy_from(parse("bedrock=block,denylist=block,pii=block,injection=block", param="p"))
    assert [check for check, _ in policy.checks("input")] == list(policies.CHECKS)


def test_available_checks_follow_the_settings():
    from llm_gateway.guardrails.build import available_checks

    assert available_checks(Settings()) == {"pii", "injection"}
    configured = Settings(guardrail_deny_terms="alpha, beta", bedrock_guardrail_id="gr1", bedrock_region="eu-west-1")
    assert available_checks(configured) == {"pii", "injection", "denylist", "bedrock"}
    assert available_checks(Settings(bedrock_guardrail_id="gr1")) == {"pii", "injection"}  # no region known
