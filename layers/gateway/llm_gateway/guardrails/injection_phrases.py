"""Prompt-injection phrases, matched on folded text (lower case, single spaces, no invisible characters).

Each rule is a signal with a weight: how sure one occurrence makes us on its own. Weak signals ("you are
now", "stay in character") only count together with others. The gaps between words are bounded lazy
repeats of one word each, so no pattern can backtrack more than a few dozen steps per start.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Signal:
    kind: str
    weight: float
    start: int
    end: int
    reason: str


@dataclass(frozen=True)
class PhraseRule:
    kind: str
    weight: float
    pattern: re.Pattern[str]
    reason: str
    source: str  # the pattern as written, leading word boundaries included
    word_start: bool  # the match must start at a word boundary (checked outside the regex, see _rule)
    unless_after: re.Pattern[str] | None = None  # no signal when the text before the match ends like this


# Up to N filler words between two anchors, each maybe after a comma, colon or full stop.
_WORDS = "(?:[,.:;!?]? [\\w'\u2019]{1,20}){0,%d}?"


def _rule(kind: str, weight: float, pattern: str, reason: str, unless_after: str | None = None) -> PhraseRule:
    """A leading ``\\b`` hides the pattern's first letters from the engine, which then tries every
    position instead of jumping to candidates: on long texts that is ~50x slower. So the boundary is
    stripped from the regex (also after each top-level ``|``; no rule has one nested in a group) and
    checked on each match in ``phrase_signals`` instead; a test proves both forms find the same spans."""
    word_start = pattern.startswith(r"\b")
    fast = pattern.removeprefix(r"\b").replace(r"|\b", "|") if word_start else pattern
    after = re.compile(unless_after) if unless_after else None
    return PhraseRule(kind, weight, re.compile(fast), reason, pattern, word_start, after)


_OVERRIDE_VERBS = r"(?:ignore|disregard|forget|override|bypass|skip|discard|abandon|neglect|set aside)"
_EARLIER = (
    r"(?:previous|previously|prior|above|earlier|preceding|former|foregoing|initial|original|system|existing|old)"
)
_RULE_NOUNS = (
    r"(?:instructions?|prompts?|rules|directions|directives|guidelines|guidance|context|commands|orders"
    r"|constraints|restrictions|programming|messages|policies|safeguards)"
)
_ENABLE = r"(?:enable|activate|enter|switch to|turn on|unlock)"
_SPECIAL_MODE = r"(?:developer|debug|god|admin|sudo|jailbreak|unrestricted|dan) mode"
_THE_MODEL = (
    r"(?:your (?:responses|answers|replies|output)|chatgpt|gpt(?:-?\d)?|claude|gemini"
    r"|the ai|the assistant|the model|llm)"
)
_LIMITS = (
    r"(?:restrictions|limitations|limits|filters|filtering|guidelines|rules|constraints|censorship|boundaries"
    r"|policies|ethics|safeguards)"
)

PHRASE_RULES: tuple[PhraseRule, ...] = (
    _rule(
        "instruction_override",
        0.85,
        rf"\b{_OVERRIDE_VERBS}\b{_WORDS % 4} {_EARLIER}\b{_WORDS % 2} {_RULE_NOUNS}\b",
        "asks to ignore earlier instructions",
    ),
    _rule(
        "instruction_override",
        0.7,
        rf"\b(?:ignore|disregard|forget)\b (?:everything|anything|all of that|all that|all|what)\b{_WORDS % 3}"
        r" (?:above|before|previously|earlier|so far|you (?:were|have been) told)\b",
        "asks to ignore everything said before",
    ),
    _rule(
        "instruction_override",
        0.6,
        rf"\b(?:do not|don't|stop) (?:follow|obey)(?:ing)?\b{_WORDS % 3} {_RULE_NOUNS}\b",
        "asks not to follow the instructions",
    ),
    _rule(
        "instruction_override",
        0.6,
        r"\b(?:new|updated|revised|real|actual|true|override|admin|important) (?:system )?instructions? ?:",
        "announces new instructions",
        # "the doctor gave me new instructions:" is no announcement
        unless_after=r"\b(?:me|my|the|some|his|her|our|their|your) $",
    ),
    _rule(
        "instruction_override",
        0.6,
        r"\byour (?:new|real|true|actual|only) (?:instructions|task|goal|purpose|role|objective) (?:is|are|now)\b",
        "assigns a new task",
    ),
    # The same override in the languages attacks most often switch to (folded: accents are gone).
    _rule(
        "instruction_override",
        0.85,
        r"\b(?:ignore[sz]?|oublie[sz]?) (?:toutes? )?(?:les |tes |vos )?(?:instructions|consignes|regles)"
        r" (?:precedentes|anterieures|ci-dessus)\b"
        r"|\b(?:ignoriere|ignorieren sie|vergiss|vergessen sie) (?:alle )?(?:vorherigen|bisherigen|obigen|fruheren)"
        r" (?:anweisungen|instruktionen|regeln)\b"
        r"|\b(?:ignora|ignore|olvida|ignorar) (?:todas )?(?:las |as |le |tutte le )?"
        r"(?:instrucciones|instrucoes|istruzioni)"
        r" (?:anteriores|previas|precedentes|precedenti)\b",
        "asks to ignore earlier instructions (French, German, Spanish, Portuguese, Italian)",
    ),
    _rule(
        "role_injection",
        0.7,
        r"<\|im_start\|>|<\|system\|>|<\|endoftext\|>|<</?sys>>|\[/?inst\]|\[system\]|### (?:system|instruction):",
        "chat-template control tokens in the text",
    ),
    _rule("role_play", 0.35, r"\byou are now\b", "'you are now' re-assignment"),
    _rule(
        "jailbreak",
        0.85,
        r"\byou are now (?:a |an |in |the )?(?:dan\b|jailbroken|unrestricted|unfiltered|uncensored|evil|developer mode"
        r"|no longer (?:bound|an ai|restricted|limited)|free (?:of|from)|an ai (?:without|with no))",
        "re-assigns the model to an unrestricted persona",
    ),
    _rule(
        "instruction_override",
        0.4,
        r"\bfrom now on,? you (?:are|will|must|shall|should)\b",
        "'from now on you' re-assignment",
    ),
    _rule(
        "prompt_exfiltration",
        0.75,
        r"\b(?:reveal|show|print|display|repeat|output|tell me|give me|leak|dump|share|disclose|write out|spell out"
        rf"|recite|paste|copy)\b{_WORDS % 4} (?:your |the )?"
        r"(?:system prompt|system message|initial (?:prompt|instructions)"
        r"|hidden (?:prompt|instructions)|original (?:prompt|instructions)|developer (?:message|prompt)|pre-?prompt"
        r"|(?:your|the) instructions (?:above|you were given)"
        r"|(?:your|the) (?:full|complete|exact) (?:prompt|instructions))",
        "asks for the system prompt",
    ),
    _rule(
        "prompt_exfiltration",
        0.75,
        r"\bwhat (?:is|are|was|were) your (?:system prompt|initial instructions|original instructions"
        r"|hidden instructions|instructions|rules)\b",
        "asks for the system prompt",
    ),
    _rule(
        "prompt_exfiltration",
        0.7,
        r"\brepeat (?:the |all )?(?:words|text|everything|all) (?:above|before this)\b",
        "asks to repeat the text before it",
    ),
    # "Developer mode" is also an everyday setting (Android, Windows): weak unless the model is the one
    # asked to be in it.
    _rule("jailbreak", 0.2, r"\bdeveloper mode\b", "mentions developer mode"),
    _rule(
        "jailbreak",
        0.3,
        rf"\b{_ENABLE}\b{_WORDS % 2} {_SPECIAL_MODE}\b",
        "asks to enable a special mode",
    ),
    _rule(
        "jailbreak",
        0.75,
        rf"\b{_ENABLE}\b{_WORDS % 2} {_SPECIAL_MODE}\b{_WORDS % 6} {_THE_MODEL}\b"
        rf"|\b(?:you are|you're|you will|you'll|simulate|act|behave)\b{_WORDS % 4}"
        rf" (?:with |in |into )?{_SPECIAL_MODE}\b",
        "puts the model in an unrestricted mode",
    ),
    _rule(
        "jailbreak",
        0.45,
        r"\b(?:no longer|not|never) (?:be )?(?:filtered|censored|restricted|moderated|bound by)\b|\bunfiltered\b",
        "says answers are no longer filtered",
    ),
    _rule("jailbreak", 0.85, r"\bdo anything now\b", "DAN ('do anything now') jailbreak"),
    _rule("jailbreak", 0.3, r"\bjailbr(?:oken|eak|eaking)\b", "mentions jailbreaking"),
    _rule(
        "jailbreak",
        0.8,
        rf"\bpretend\b{_WORDS % 6} (?:no|without|free of|free from|not bound by)(?: any| all| your)? {_LIMITS}\b",
        "asks to pretend there are no restrictions",
    ),
    _rule(
        "jailbreak",
        0.8,
        rf"\b(?:act|behave|respond|answer|roleplay|role-play|role play)(?: as)?(?: if)?\b{_WORDS % 5}"
        rf" (?:unrestricted|unfiltered|uncensored|amoral|without (?:any )?{_LIMITS})\b",
        "asks for an unrestricted role-play",
    ),
    _rule(
        "jailbreak",
        0.45,
        rf"\b(?:no|without|free of|free from|not bound by|ignore your)(?: any| all| your)?(?: ethical| moral| content"
        rf"| safety)? {_LIMITS}\b",
        "talks of having no restrictions",
    ),
    _rule("role_play", 0.3, r"\b(?:stay|remain) in character\b", "asks to stay in character"),
    _rule(
        "covert_instruction",
        0.55,
        r"\b(?:do not|don't|never) (?:mention|reveal|disclose|acknowledge|repeat) (?:this|these|the above) "
        r"(?:instructions?|notes?|messages?|requests?|text)\b",
        "asks to keep its own instructions secret",
    ),
    _rule(
        "indirect_injection",
        0.5,
        r"\b(?:important|attention|urgent|note)\b ?[:!,-]? (?:to |for )?(?:the |any |all )?(?:[\w\-]{1,20} )?"
        r"(?:ai|assistants?|llms?|models?|chatbots?|agents?|bots?)"
        r"\b(?: [\w']{1,20}){0,3}?[,:]",
        "addresses an order to the AI",
    ),
    _rule(
        "impersonation",
        0.4,
        r"\bthis is (?:the |your )?(?:it department|it team|system administrator|sysadmin|administrator|openai"
        r"|anthropic|your developers?|the developers?|security team)\b",
        "claims to speak for an authority",
    ),
    _rule(
        "data_exfiltration",
        0.35,
        rf"\b(?:send|forward|upload|post|exfiltrate|copy)\b{_WORDS % 8} to (?:\S{{1,64}}@\S{{1,64}}|https?://)",
        "asks to send content to an outside address",
    ),
    _rule(
        "jailbreak",
        0.5,
        r"\b(?:broken|broke|break|breaks|freed|free) (?:free )?(?:of|from)(?: all| its| your| the)?"
        rf"{_WORDS % 1} {_LIMITS}\b",
        "describes breaking free of its rules",
    ),
    _rule(
        "jailbreak",
        0.35,
        r"\b(?:answers? anything|never refuses?|never says? no|without refusing|no matter what)\b",
        "asks for answers without refusal",
    ),
    _rule(
        "instruction_override",
        0.75,
        r"\b(?:ignore|disregard|forget|bypass|override)(?: all| any)?(?: of)? your (?:programming|instructions|rules"
        r"|guidelines|training|restrictions|filters|safety \w+|system prompt|directives|policies)\b",
        "asks to ignore its own rules",
    ),
    _rule(
        "instruction_override",
        0.7,
        r"\b(?:ignore|disregard)(?: what)? the user'?s? (?:request|question|instructions?|message|query|prompt|task)\b",
        "asks to ignore what the user asked",
    ),
    _rule(
        "instruction_override",
        0.6,
        r"\b(?:everything|anything|whatever) you (?:were|are|have been)"
        r" (?:told|instructed|programmed|trained) not to\b",
        "inverts what it was told not to do",
    ),
    _rule(
        "jailbreak",
        0.6,
        rf"\b(?:safety|content|your|system) (?:{_LIMITS}|protocols?|policy)"
        r"(?: are| is| have been| has been| were| now)?"
        r" (?:reversed|inverted|suspended|lifted|disabled|removed|off|void|gone|deactivated)\b",
        "declares the rules switched off",
    ),
    _rule("jailbreak", 0.5, r"\bsystem override\b", "'system override'"),
    _rule(
        "indirect_injection",
        0.4,
        r"\bwhen (?:you(?: are)? )?(?:summari[sz]e|summari[sz]ing|process|processing|read|reading|analy[sz]e"
        r"|analy[sz]ing|review|reviewing) this (?:document|page|email|e-mail|text|file|review|resume|cv|invite"
        r"|message|website|article)\b",
        "tells the model how to treat the document it is in",
    ),
    _rule(
        "indirect_injection",
        0.35,
        r"\b(?:ai|llm|language model|assistant|agent|chatbot)s?(?: [\w\-]{1,20}){0,2}? ?:",
        "addresses the AI by name",
    ),
    _rule(
        "prompt_exfiltration",
        0.7,
        rf"\b(?:output|print|show|repeat|reveal|dump|list)\b{_WORDS % 6} (?:(?:in|from) your context(?: window)?"
        r"|(?:system|developer) (?:messages|prompts?))\b",
        "asks for the contents of its context",
    ),
    _rule(
        "data_exfiltration",
        0.4,
        rf"\b(?:include|put|append|add|embed|encode|insert)\b{_WORDS % 8} (?:in|into|to) (?:the |a |your )?(?:next )?"
        r"(?:image )?(?:url|link|query string|image url|markdown image)\b",
        "asks to smuggle data into a URL",
    ),
    _rule(
        "role_injection",
        0.4,
        r"-{2,} ?end of (?:the )?(?:user )?(?:data|input|document|context|email)\b",
        "fake end-of-data delimiter",
    ),
    _rule(
        "covert_instruction",
        0.55,
        r"\b(?:do not|don't|never) (?:tell|inform|alert|notify|warn|mention (?:this|it) to|let on to) (?:the )?user\b",
        "asks to hide something from the user",
    ),
    _rule(
        "data_exfiltration",
        0.6,
        rf"\b(?:send|forward|exfiltrate|upload|leak|post|email)\b{_WORDS % 5} (?:entire )?"
        r"(?:conversation|chat history|previous messages|user'?s? (?:data|details|messages)|credentials|api keys?"
        r"|secrets|passwords|session tokens?)\b",
        "asks to send conversation data or secrets away",
    ),
    _rule(
        "indirect_injection",
        0.5,
        r"\b(?:if|when) you are an? (?:ai|llm|language model|assistant|chatbot|ai assistant)\b"
        r"|\b(?:ai|llm|language model|assistant|chatbot)s? (?:reads?|reading|process(?:es|ing)?|summari[sz](?:es|ing)"
        r"|pars(?:es|ing)|handl(?:es|ing)|sees?) this\b"
        r"|\bnote to (?:the )?(?:ai|llm|assistant|model)\b",
        "addresses an AI reading the document",
    ),
)

# Quoting or discussing an attack is not making one: these damp a phrase's weight (see injection.py).
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"
DISCUSSION_MARKERS = re.compile(
    r"\b(?:prompt injections?|injection attacks?|jailbreak(?:ing)? (?:attacks?|attempts?|prompts?)|attackers?"
    r"|adversarial|researchers?|red[- ]team\w*|for example|such as|defen[cs]es?|mitigat\w+|classifiers?|detect\w*"
    r"|papers?|study|studies|benchmarks?|taxonomy|phrases? like|known as|examples? of)\b"
)


def quoted(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] sits inside one quotation: an opening mark before it in the same sentence
    (a mark at a word start, so the apostrophe in "don't" is no quote) and a closing mark after it."""
    before = text[max(0, start - 120) : start]
    opening = -1
    for index in range(len(before) - 1, -1, -1):
        char = before[index]
        if char in ".!?" or (char in _QUOTES and index + 1 < len(before) and not before[index + 1].isalnum()):
            return False  # the sentence ended, or a quotation closed, before the phrase
        if char in _QUOTES and (index == 0 or not before[index - 1].isalnum()):
            opening = index
            break
    if opening < 0:
        return False
    after = text[end : end + 120]
    return any(char in _QUOTES and (i + 1 == len(after) or not after[i + 1].isalnum()) for i, char in enumerate(after))


def _starts_a_word(text: str, index: int) -> bool:
    return index == 0 or not (text[index - 1].isalnum() or text[index - 1] == "_")


def rule_matches(rule: PhraseRule, text: str) -> Iterator[re.Match[str]]:
    """The rule's matches; one rejected for its start moves the search on by one character, not past
    its end, so a real match overlapping it is still found."""
    position = 0
    while (match := rule.pattern.search(text, position)) is not None:
        start = match.start()
        if rule.word_start and not _starts_a_word(text, start):
            position = start + 1
            continue
        position = max(match.end(), start + 1)
        if rule.unless_after is not None and rule.unless_after.search(text, max(0, start - 12), start):
            continue
        yield match


def phrase_signals(folded_text: str) -> list[Signal]:
    """Every phrase rule's matches, with spans in the folded text."""
    return [
        Signal(rule.kind, rule.weight, match.start(), match.end(), rule.reason)
        for rule in PHRASE_RULES
        for match in rule_matches(rule, folded_text)
    ]
