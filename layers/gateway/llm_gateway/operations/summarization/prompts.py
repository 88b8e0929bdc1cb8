"""The versioned summarization prompt templates, and the words they are filled with."""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import cache

from llm_gateway.errors import InvalidRequestError
from llm_gateway.operations.summarization.request import Style
from llm_gateway.resources import shared_dir


@dataclass(frozen=True)
class Prompts:
    version: str
    system: str
    stuff: string.Template
    map: string.Template
    combine: string.Template
    refine: string.Template

    @property
    def tag(self) -> str:
        return f"summarize/{self.version}"


@cache
def load_prompts(version: str) -> Prompts:
    """The versioned templates in ``shared/prompts/summarize/<version>/``, read once per process."""
    folder = shared_dir() / "prompts" / "summarize" / version
    if not folder.is_dir():
        raise InvalidRequestError(f"unknown summarization prompt version '{version}'")

    def read(name: str) -> str:
        return (folder / f"{name}.txt").read_text(encoding="utf-8").strip()

    return Prompts(
        version=version,
        system=read("system"),
        stuff=string.Template(read("stuff")),
        map=string.Template(read("map")),
        combine=string.Template(read("combine")),
        refine=string.Template(read("refine")),
    )


def style_text(style: Style) -> str:
    if style == "bullets":
        return 'a bulleted list, one point per line, each line starting with "- "'
    return "one paragraph of plain prose"


def focus_text(focus: str | None) -> str:
    return f"Focus: give most room to {focus.strip()}\n" if focus else ""
