"""Completion function: the OpenAI-compatible and native completion routes, usage reports, direct invocation.

Thin: the edge (``llm_gateway.http``) reads, validates and answers; the gateway core does the work.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from llm_gateway import aws
from llm_gateway.accounting.usage_reports import report_range, usage_summary
from llm_gateway.errors import NotConfiguredError
from llm_gateway.http import anthropic_messages, embeddings_route, events, models_list, openai_chat, usage_report
from llm_gateway.http import completion_routes as completions
from llm_gateway.http.edge import HttpEdge
from llm_gateway.http.stream_params import NativeCompletionBody
from llm_gateway.wiring import services

# The chat and models routes answer as OpenAI does, /v1/messages as Anthropic does; those two and the native
# completion route may stream (Server-Sent Events).
edge = HttpEdge(
    openai_paths=models_list.openai_shaped,
    anthropic_paths=anthropic_messages.anthropic_shaped,
    streamed_paths=completions.STREAMED_PATHS,
)
app, logger, metrics = edge.app, edge.logger, edge.metrics


@edge.post(completions.CHAT_PATH, summary="Chat completion (OpenAI's wire shape)", tags=["completion"])
def chat_completions(body: openai_chat.ChatCompletionsBody) -> Response[str]:
    return completions.chat(edge, body)


@edge.post(completions.NATIVE_PATH, summary="Completion (the gateway's own shape)", tags=["completion"])
def native_completions(body: NativeCompletionBody) -> Response[str]:
    return completions.native(edge, body)


@edge.post(completions.MESSAGES_PATH, summary="Message (Anthropic's Messages API shape)", tags=["completion"])
def messages(body: anthropic_messages.MessagesBody) -> Response[str]:
    return completions.messages(edge, body)


@edge.post(completions.COUNT_TOKENS_PATH, summary="Input tokens of a message, estimated", tags=["completion"])
def count_tokens(body: anthropic_messages.CountTokensBody) -> Response[str]:
    return completions.count_tokens(edge, body)


@edge.post(embeddings_route.PATH, summary="Embeddings (OpenAI's wire shape)", tags=["embeddings"])
def embeddings(body: embeddings_route.EmbeddingsBody) -> Response[str]:
    return embeddings_route.serve(edge, body)


@edge.get("/v1/usage", summary="The caller's own usage between two dates", tags=["usage"])
def usage() -> Response[str]:
    """``from``/``to`` (YYYY-MM-DD) and ``format`` (json, csv) read here, not declared as Powertools query
    params: their import costs every cold start of this function ~10 ms; bad values are a 400 naming them."""
    tenant, table = edge.tenant(), services().settings.usage_table
    if not table:
        raise NotConfiguredError("usage reporting is not configured here (USAGE_TABLE)")
    params = app.current_event.query_string_parameters or {}
    first, last = report_range(params.get("from"), params.get("to"))
    answer = usage_report.answer_format(params.get("format"))
    metrics.add_metric(name="UsageReports", unit=MetricUnit.Count, value=1)
    return usage_report.respond(edge, answer, usage_summary(aws.dynamodb(), table, tenant, first, last))


@edge.get(models_list.LIST_PATH, summary="The catalog's models, tiers and aliases", tags=["models"])
def list_models() -> Response[str]:
    edge.tenant()  # authenticated like every route
    return edge.json(200, models_list.list_models(services().catalog))


@edge.get(models_list.LIST_PATH + "/<model>", summary="One model by id, alias or tier", tags=["models"])
def retrieve_model(model: str) -> Response[str]:
    edge.tenant()
    # API Gateway hands the path over as sent: an SDK's %2F inside a prefixed id arrives encoded.
    return edge.json(200, models_list.retrieve_model(services().catalog, unquote(model)))


@edge.get(models_list.LIST_PATH + "/<model>/<name>", summary="One model by provider-prefixed id", tags=["models"])
def retrieve_prefixed_model(model: str, name: str) -> Response[str]:
    return retrieve_model(f"{model}/{name}")


def direct(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Step Functions (or any IAM caller) sends the ``/v1/completions`` body as the event."""
    return completions.direct(edge, event, context)


lambda_handler = events.lambda_handler(edge, direct=direct)
