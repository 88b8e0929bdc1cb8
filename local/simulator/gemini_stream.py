"""Gemini ``streamGenerateContent``: the non-streamed ``GenerateContentResponse`` re-cut into several.

With ``alt=sse`` each chunk is one ``data:`` event (CRLF line ends, as Google's servers send them);
without, the chunks form one JSON array. Text parts come in pieces, a ``functionCall`` part whole in a
chunk of its own; each candidate's last chunk carries its ``finishReason``; every chunk carries
``usageMetadata``, the prompt count until the last one, which has the whole usage. The stream has no end
marker: it ends when the connection closes.
"""

from __future__ import annotations

from typing import Any

from local.simulator.choices import gemini_logprobs
from local.simulator.streams import sse, stream_response, text_pieces
from local.simulator.wire import ChatRequest, Json, Response, _json_response


def gemini_stream(req: ChatRequest, body: Json, headers: dict[str, str]) -> Response:
    """``body`` is the response the non-streamed call would have answered."""
    usage = body.get("usageMetadata") or {}
    prompt = usage.get("promptTokenCount", 0)
    running = {"promptTokenCount": prompt, "totalTokenCount": prompt}
    chunks: list[Json] = []

    def add(candidate: Json) -> None:
        chunks.append(
            {
                "candidates": [candidate],
                "usageMetadata": running,
                "modelVersion": body.get("modelVersion"),
                "responseId": body.get("responseId"),
            }
        )

    for candidate in body.get("candidates") or []:
        index = candidate.get("index", 0)
        pieces: list[Json] = []
        for part in (candidate.get("content") or {}).get("parts") or []:
            if isinstance(part.get("text"), str):
                pieces.extend({"text": piece} for piece in text_pieces(part["text"]))
            else:
                pieces.append(part)
        for piece in pieces:
            streamed: Json = {"content": {"parts": [piece], "role": "model"}, "index": index}
            if req.logprobs and "text" in piece:
                streamed["logprobsResult"] = gemini_logprobs(piece["text"], req.top_logprobs)
            add(streamed)
        closing = {k: v for k, v in candidate.items() if k not in ("content", "logprobsResult")}
        if pieces and chunks:
            chunks[-1]["candidates"][0].update(closing)
        else:
            add(closing)  # nothing to say (a blocked answer): the finish alone
    if "promptFeedback" in body:  # a blocked prompt: one chunk that says so
        chunks.append({k: v for k, v in body.items() if k != "candidates"})
    if chunks:
        chunks[-1]["usageMetadata"] = usage
    return sse_or_array(req, chunks, headers)


def sse_or_array(req: ChatRequest, chunks: list[Json], headers: dict[str, str]) -> Response:
    if not req.sse:
        return _json_response(200, chunks, headers)
    events = [sse(chunk, crlf=True) for chunk in chunks]
    return stream_response(events, {**headers, "Content-Type": "text/event-stream"})


def gemini_stream_fault_event(name: str) -> bytes:
    if name == "stream_malformed":
        return b'data: {"candidates": [{"content": {"parts": [{"text": "trunc\r\n\r\n'
    error: Any = {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}
    return sse({"error": error}, crlf=True)
