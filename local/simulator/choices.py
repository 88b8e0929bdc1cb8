"""``n`` choices and token log probabilities, as OpenAI (``n``, ``logprobs``) and Gemini
(``candidateCount``, ``responseLogprobs``) return them.

Choice 0 is the ordinary answer (scripted or composed); choice i > 0 is composed from the prompt plus
``#choice i``, so choices differ but each is deterministic. Log probabilities are made up from a hash
of each token: deterministic, negative, and the chosen token always the most likely of its top list.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

from local.simulator.answers import _compose
from local.simulator.wire import Answer, ChatRequest, Json, Reply

_TOKEN = re.compile(r"\s*\S+")


def compose_choices(req: ChatRequest, reply: Reply | None) -> Answer:
    """The first answer, with the other ``req.n - 1`` in ``answer.more``."""
    answer = _compose(req, reply)
    for index in range(1, req.n):
        variant = dataclasses.replace(req, texts=[*req.texts, f"#choice {index}"])
        answer.more.append(_compose(variant, None))
    return answer


def _logprob(token: str, rank: int) -> float:
    digest = hashlib.sha256(token.encode()).digest()
    return -round(0.01 + digest[0] / 2560 + rank * 0.75, 4)


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text) or [text]


def openai_logprobs(text: str, top: int) -> Json:
    def entry(token: str, rank: int) -> Json:
        return {"token": token, "logprob": _logprob(token, rank), "bytes": list(token.encode())}

    content = []
    for token in _tokens(text):
        alternatives = [entry(token, 0)] + [entry(f"{token}~{k}", k) for k in range(1, top)]
        content.append({**entry(token, 0), "top_logprobs": alternatives[:top]})
    return {"content": content, "refusal": None}


def gemini_logprobs(text: str, top: int) -> Json:
    def entry(token: str, rank: int) -> Json:
        return {"token": token, "tokenId": len(token) + rank, "logProbability": _logprob(token, rank)}

    chosen, tops = [], []
    for token in _tokens(text):
        chosen.append(entry(token, 0))
        alternatives = [entry(token, 0)] + [entry(f"{token}~{k}", k) for k in range(1, top)]
        tops.append({"candidates": alternatives[:top]})
    result: Json = {"chosenCandidates": chosen}
    if top:
        result["topCandidates"] = tops
    return result
