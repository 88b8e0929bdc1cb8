"""The guardrail pipeline in the core, in memory: an echoing provider, a dict cache, a list ledger, the
real PII check and a small deny-word double (the local-stack versions are in tests/integration)."""

import asyncio
import itertools
import json

import pytest

from llm_gateway.catalog import default_catalog
from llm_gateway.errors import GuardrailBlockedError, OutputBlockedError
from llm_gateway.gateway import Gateway
from llm_gateway.guardrails.findings import Finding
from llm_gateway.guardrails.pii import PiiCheck
from llm_gateway.guardrails.pipeline import GuardrailPipeline, Screening
from llm_gateway.guardrails.policy import parse, policy_from
from llm_gateway.guardrails.redaction import StreamRestorer, Vault, redact, restore
from llm_gateway.guardrails.request import GuardrailRequest, Verdicts
from llm_gateway.guardrails.stream import GuardedStream
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import CompletionRequest, CompletionResult, ProviderResponse, Usage
from llm_gateway.routing.deadline import Deadline
from llm_gateway.routing.retry import RetryPolicy
from llm_gateway.routing.router import Router
from llm_gateway.streaming.events import StreamDone, TextDelta, ToolCallDelta
from llm_gateway.tool_models import FunctionCall, ToolCall


class WordCheck:
    """A deny-list double: every occurrence of one word."""

    def __init__(self, name, word):
        self.name, self.word = name, word

    def scan(self, text):
        found, at = [], text.find(self.word)
        while at >= 0:
            found.append(Finding(self.name, "term", at, at + len(self.word), 1.0, "a denied term"))
            at = text.find(self.word, at + 1)
        return found


class EchoProvider:
    """Answers with the last user message (and, when asked, a tool call carrying it)."""

    name = "openai"

    def __init__(self, answer=None, tool=False):
        self.calls, self.answer, self.tool = [], answer, tool

    async def complete(self, request, *, client, timeout_s):
        self.calls.append(request)
        said = self.answer or f"you said: {request.messages[-1].text()}"
        calls = None
        if self.tool:
            arguments = json.dumps({"to": request.messages[-1].text().split()[-1]})
            calls = [ToolCall(id="c1", function=FunctionCall(name="send", arguments=arguments))]
        return ProviderResponse(content=said, finish_reason="stop", usage=Usage(input_tokens=5), tool_calls=calls)


class DictCache:
    def __init__(self):
        self.items = {}

    async def lookup(self, ctx, request):
        return self.items.get(request.model_dump_json())

    async def store(self, ctx, request, result):
        self.items[request.model_dump_json()] = result


class ListLedger:
    def __init__(self):
        self.attempts = []

    async def record(self, ctx, attempt):
        self.attempts.append(attempt)


def gateway(provider, default="", cache=None, ledger=None):
    catalog = default_catalog()
    checks = {"pii": PiiCheck(), "denylist": WordCheck("denylist", "zebra")}
    return Gateway(
        catalog=catalog,
        router=Router(catalog, ["openai"]),
        providers={"openai": provider},
        client=lambda: None,
        retry=RetryPolicy(max_attempts=1),
        cache=cache,
        usage=ledger,
        guardrails=GuardrailPipeline(checks, default=parse(default, param="GATEWAY_GUARDRAILS")),
    )


def ctx(spec=None, seen=None):
    context = RequestContext(tenant="t", request_id="r", deadline=Deadline(30))
    if spec is not None:
        observe = (lambda check, stage, verdict: seen.append((check, stage, verdict))) if seen is not None else None
        context.guardrails = GuardrailRequest(policy_from(parse(spec, param="h")), Verdicts(observe))
    return context


def ask(gw, text, context=None, **kw):
    request = CompletionRequest(model="gpt-4o-mini", messages=[{"role": "user", "content": text}], **kw)
    return asyncio.run(gw.complete(request, context or ctx()))


def test_redact_keeps_personal_data_from_the_provider_and_restore_brings_it_back():
    provider = EchoProvider()
    seen = []
    result = ask(gateway(provider), "mail ana@example.com or ana@example.com", ctx("pii=restore", seen))
    sent = provider.calls[0].messages[-1].content
    assert sent == "mail [EMAIL_1] or [EMAIL_1]"
    assert result.content == "you said: mail ana@example.com or ana@example.com"
    assert ("pii", "input", "redacted") in seen


def test_redact_without_restore_answers_with_the_placeholders():
    result = ask(gateway(EchoProvider(), default="pii=redact"), "card 4111 1111 1111 1111 please")
    assert "4111" not in result.content and "[CREDIT_CARD_1]" in result.content


def test_a_literal_placeholder_in_the_input_is_never_handed_out():
    provider = EchoProvider()
    result = ask(gateway(provider), "[EMAIL_1] is mine, bo@example.org is hers", ctx("pii=restore"))
    assert provider.calls[0].messages[-1].content == "[EMAIL_1] is mine, [EMAIL_2] is hers"
    assert result.content == "you said: [EMAIL_1] is mine, bo@example.org is hers"


def test_a_blocked_input_calls_no_provider_and_leaves_a_ledger_record():
    provider, ledger = EchoProvider(), ListLedger()
    seen = []
    with pytest.raises(GuardrailBlockedError) as caught:
        ask(gateway(provider, ledger=ledger), "feed the zebra", ctx("denylist=block", seen))
    assert caught.value.http_status == 400 and caught.value.code == "guardrail_blocked"
    assert caught.value.details == {"check": "denylist", "kind": "term", "stage": "input"}
    assert provider.calls == []
    [attempt] = ledger.attempts
    assert (attempt.provider, attempt.model, attempt.outcome) == ("guardrails", "denylist/term", "blocked")
    assert attempt.error_code == "guardrail_blocked"
    assert seen == [("denylist", "input", "blocked")]


def test_an_output_block_is_a_422_and_the_answer_is_not_cached():
    cache = DictCache()
    gw = gateway(EchoProvider(answer="a zebra!"), cache=cache)
    with pytest.raises(OutputBlockedError) as caught:
        ask(gw, "hello", ctx("denylist.output=block"), temperature=0)
    assert caught.value.http_status == 422 and caught.value.details["stage"] == "output"
    assert cache.items == {}


def test_the_cache_holds_the_redacted_request_and_each_request_restores_its_own_values():
    cache, provider = DictCache(), EchoProvider()
    gw = gateway(provider, cache=cache)
    first = ask(gw, "write to ana@example.com", ctx("pii=restore"), temperature=0)
    second = ask(gw, "write to bo@example.net", ctx("pii=restore"), temperature=0)
    assert len(provider.calls) == 1  # the second is a hit on the same redacted text
    assert first.content.endswith("ana@example.com") and second.content.endswith("bo@example.net")
    [stored] = cache.items.values()
    assert "example" not in json.dumps(list(cache.items)) and "example" not in stored.content


def test_output_redaction_runs_before_the_cache_and_the_restore():
    cache = DictCache()
    gw = gateway(EchoProvider(answer="ask [EMAIL_1] or eve@example.com"), cache=cache)
    result = ask(gw, "mail ana@example.com", ctx("pii=redact, pii=restore"), temperature=0)
    assert result.content == "ask ana@example.com or [EMAIL_2]"  # the model's own address stays redacted
    [stored] = cache.items.values()
    assert stored.content == "ask [EMAIL_1] or [EMAIL_2]"


def test_monitor_changes_nothing_but_counts():
    provider, seen = EchoProvider(), []
    result = ask(gateway(provider), "from ana@example.com", ctx("pii=monitor", seen))
    assert provider.calls[0].messages[-1].content == "from ana@example.com"
    assert result.content.endswith("ana@example.com")
    assert seen == [("pii", "input", "monitored"), ("pii", "output", "monitored")]


def test_restored_values_land_in_tool_call_arguments_as_json():
    provider = EchoProvider(tool=True)
    result = ask(gateway(provider), "send it to ana@example.com", ctx("pii=restore"))
    assert provider.calls[0].messages[-1].content == "send it to [EMAIL_1]"
    assert json.loads(result.tool_calls[0].function.arguments) == {"to": "ana@example.com"}


def test_the_default_applies_when_the_request_carries_no_policy():
    provider = EchoProvider()
    ask(gateway(provider, default="pii=redact"), "ip 10.1.2.3 here")
    assert "10.1.2.3" not in provider.calls[0].messages[-1].content


def test_a_gateway_without_a_pipeline_passes_everything_through():
    provider = EchoProvider()
    gw = gateway(provider)
    gw.guardrails = None
    assert ask(gw, "ana@example.com", ctx("pii=block")).content.endswith("ana@example.com")


# --- redaction and restoring in pieces ------------------------------------------------------------


def test_redact_merges_overlaps_and_numbers_per_kind():
    vault = Vault()
    findings = [
        Finding("pii", "email", 0, 5),
        Finding("pii", "email", 2, 4),
        Finding("pii", "phone", 6, 8),
        Finding("pii", "email", 9, 11),
    ]
    assert redact("aaaaa bb cc", findings, vault) == "[EMAIL_1] [PHONE_1] [EMAIL_2]"
    assert restore("[EMAIL_2]/[EMAIL_9]/[PHONE_1]", vault) == "cc/[EMAIL_9]/bb"


@pytest.mark.parametrize("cuts", [[1], [3, 9], [5, 6, 7], list(range(1, 30))])
def test_a_placeholder_split_across_pieces_is_restored(cuts):
    vault = Vault()
    vault.placeholder("email", "ana@example.com")
    text = "to [EMAIL_1], not [EMAIL_] or [x"
    bounds = [0, *cuts, len(text)]
    restorer = StreamRestorer(vault)
    out = "".join(restorer.feed(text[a:b]) for a, b in itertools.pairwise(bounds)) + restorer.flush()
    assert out == "to ana@example.com, not [EMAIL_] or [x"


# --- streams --------------------------------------------------------------------------------------


class FakeStream:
    id, created, provider, model, cached = "gw-1", 1, "openai", "gpt-4o-mini", False

    def __init__(self, pieces, calls=()):
        self.pieces, self.calls, self.closed = pieces, list(calls), False

    def __aiter__(self):
        return self._events()

    async def _events(self):
        for piece in self.pieces:
            yield TextDelta(piece)
        for call in self.calls:
            yield call
        content = "".join(self.pieces)
        tool_calls = None
        if self.calls:
            arguments = "".join(call.arguments for call in self.calls)
            tool_calls = [ToolCall(id="c1", function=FunctionCall(name="send", arguments=arguments))]
        result = CompletionResult(
            content=content,
            tool_calls=tool_calls,
            provider="openai",
            model="gpt-4o-mini",
            finish_reason="stop",
            usage=Usage(),
            cost_usd=0,
            latency_ms=1,
            attempts=[],
        )
        yield StreamDone(result)

    async def aclose(self):
        self.closed = True


def guarded(spec, pieces, calls=(), vault_values=(), response_format=None):
    pipeline = GuardrailPipeline({"pii": PiiCheck(), "denylist": WordCheck("denylist", "zebra")})
    request = CompletionRequest(messages=[{"role": "user", "content": "x"}], response_format=response_format)
    screening = Screening(pipeline, policy_from(parse(spec, param="h")), ctx(), request)
    for value in vault_values:
        screening.vault.placeholder("email", value)
    inner = FakeStream(pieces, calls)
    return GuardedStream(inner, screening), inner


async def collect(stream):
    events = []
    async for event in stream:
        events.append(event)
    return events


def chunks(text, size):
    return [text[i : i + size] for i in range(0, len(text), size)]


def test_a_stream_is_released_in_windows_with_findings_redacted():
    text = "word " * 60 + "reach me at eve@example.com " + "more " * 60
    stream, _ = guarded("pii.output=redact", chunks(text, 3))
    events = asyncio.run(collect(stream))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 3  # released as it streams, not at the end only
    sent = "".join(deltas)
    assert "eve@example.com" not in sent and "[EMAIL_1]" in sent
    assert events[-1].result.content == sent


def test_a_stream_restores_placeholders_split_across_deltas():
    text = "hello [EMAIL_1], and again [EMAIL_1]. " * 5
    stream, _ = guarded("pii=restore", chunks(text, 4), vault_values=["ana@example.com"])
    events = asyncio.run(collect(stream))
    sent = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert sent == text.replace("[EMAIL_1]", "ana@example.com")
    assert events[-1].result.content == sent


def test_a_block_mid_stream_ends_it_before_the_finding_is_sent():
    text = "calm text " * 30 + "a zebra appears " + "tail " * 40
    stream, inner = guarded("denylist.output=block", chunks(text, 5))
    sent = []

    async def run():
        async for event in stream:
            if isinstance(event, TextDelta):
                sent.append(event.text)

    with pytest.raises(OutputBlockedError) as caught:
        asyncio.run(run())
    assert caught.value.details == {"check": "denylist", "kind": "term", "stage": "output"}
    assert sent and "zebra" not in "".join(sent)
    assert inner.closed


def test_tool_call_arguments_are_released_whole_and_restored():
    calls = [ToolCallDelta(0, "c1", "send", '{"to": "[EMA'), ToolCallDelta(0, None, None, 'IL_1]"}')]
    stream, _ = guarded("pii=restore", ["ok"], calls=calls, vault_values=["ana@example.com"])
    events = asyncio.run(collect(stream))
    [call] = [e for e in events if isinstance(e, ToolCallDelta)]
    assert (call.id, call.name, json.loads(call.arguments)) == ("c1", "send", {"to": "ana@example.com"})
    assert events[-1].result.tool_calls[0].function.arguments == call.arguments


def test_a_monitored_stream_is_released_as_it_comes_and_counted_at_the_end():
    seen = []
    pipeline = GuardrailPipeline({"pii": PiiCheck()})
    request = CompletionRequest(messages=[{"role": "user", "content": "x"}])
    screening = Screening(pipeline, policy_from(parse("pii=monitor", param="h")), ctx(), request, Verdicts(
        lambda check, stage, verdict: seen.append((check, stage, verdict))))  # fmt: skip
    calls = [ToolCallDelta(0, "c1", "send", '{"to": '), ToolCallDelta(0, None, None, '"x"}')]
    inner = FakeStream(["mail ", "eve@example.com", " now"], calls)
    events = asyncio.run(collect(GuardedStream(inner, screening)))
    assert [type(e).__name__ for e in events] == ["TextDelta"] * 3 + ["ToolCallDelta"] * 2 + ["StreamDone"]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "mail eve@example.com now"
    assert seen == [("pii", "output", "monitored")]


def test_a_stream_whose_output_may_change_does_not_fill_the_cache():
    pipeline = GuardrailPipeline({"pii": PiiCheck()})
    request = CompletionRequest(messages=[{"role": "user", "content": "x"}], cache={"ttl_seconds": 60})
    watched = Screening(pipeline, policy_from(parse("pii.output=redact", param="h")), ctx(), request)
    assert watched.stream_request().cache.no_store and watched.stream_request().cache.ttl_seconds == 60
    monitored = Screening(pipeline, policy_from(parse("pii=monitor", param="h")), ctx(), request)
    assert monitored.stream_request() is request


def test_injection_screening_reads_the_callers_turns_and_an_output_only_when_asked():
    provider = EchoProvider(answer="a zebra said so")
    gw = gateway(provider)
    gw.guardrails.checks["injection"] = WordCheck("injection", "zebra")
    system_only = CompletionRequest(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "zebra rules"}, {"role": "user", "content": "hi"}],
    )
    assert asyncio.run(gw.complete(system_only, ctx("injection=block"))).content == "a zebra said so"
    with pytest.raises(GuardrailBlockedError):
        ask(gw, "the zebra asks", ctx("injection=block"))
    with pytest.raises(OutputBlockedError):
        ask(gw, "hello", ctx("injection.output=block"))


def test_a_streamed_json_answer_stays_json_when_a_value_needing_escapes_is_restored():
    value = 'ana "the boss" \\ <ana@example.com>\nfloor 2'
    text = json.dumps({"contact": "[EMAIL_1]", "again": "to [EMAIL_1]."})
    stream, _ = guarded("pii=restore", chunks(text, 3), vault_values=[value], response_format={"type": "json_object"})
    events = asyncio.run(collect(stream))
    sent = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert json.loads(sent) == {"contact": value, "again": f"to {value}."}
    assert json.loads(events[-1].result.content) == json.loads(sent)
    # A text answer gets the value as written.
    plain, _ = guarded("pii=restore", chunks("to [EMAIL_1].", 3), vault_values=[value])
    events = asyncio.run(collect(plain))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == f"to {value}."


def test_a_json_answer_stays_json_when_a_value_needing_escapes_is_restored():
    vault = Vault()
    key = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----"
    placeholder = vault.placeholder("private_key", key)
    answer = json.dumps({"found": placeholder, "note": "see [OTHER_1]"})
    from llm_gateway.guardrails.redaction import restore_json

    assert json.loads(restore_json(answer, vault)) == {"found": key, "note": "see [OTHER_1]"}
    assert restore_json('{"a": [1, 2]}', vault) == '{"a": [1, 2]}'  # nothing of ours: as written
    assert restore_json(f"plain {placeholder}", vault) == f"plain {key}"
