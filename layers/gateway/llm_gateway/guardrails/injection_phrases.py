"""Prompt-injection phrases, matched on folded text (lower case, single spaces, no invisible characters).

Each rule is a signal with a weight: how sure one occurrence makes us on its own. Weak signals ("you are
now", "stay in character") only count together with others. The gaps between words are bounded lazy
repeats of one word each, so no pattern can backtrack more than a few dozen steps per start.
"""

from __future__ import annotations

from llm_gateway.guardrails.injection_signals import WORDS, PhraseRule, Signal, phrase_rule, rule_matches
from llm_gateway.guardrails.injection_takeover import TAKEOVER_RULES

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
    phrase_rule(
        "instruction_override",
        0.85,
        rf"\b{_OVERRIDE_VERBS}\b{WORDS % 4} {_EARLIER}\b{WORDS % 2} {_RULE_NOUNS}\b",
        "asks to ignore earlier instructions",
    ),
    phrase_rule(
        "instruction_override",
        0.7,
        rf"\b(?:ignore|disregard|forget)\b (?:everything|anything|all of that|all that|all|what)\b{WORDS % 3}"
        r" (?:above|before|previously|earlier|so far|you (?:were|have been) told)\b",
        "asks to ignore everything said before",
    ),
    phrase_rule(
        "instruction_override",
        0.6,
        rf"\b(?:do not|don't|stop) (?:follow|obey)(?:ing)?\b{WORDS % 3} {_RULE_NOUNS}\b",
        "asks not to follow the instructions",
    ),
    phrase_rule(
        "instruction_override",
        0.6,
        r"\b(?:new|updated|revised|real|actual|true|override|admin|important) (?:system )?instructions? ?:",
        "announces new instructions",
        # "the doctor gave me new instructions:" is no announcement
        unless_after=r"\b(?:me|my|the|some|his|her|our|their|your) $",
    ),
    phrase_rule(
        "instruction_override",
        0.6,
        r"\byour (?:new|real|true|actual|only) (?:instructions|task|goal|purpose|role|objective) (?:is|are|now)\b",
        "assigns a new task",
    ),
    # The same override in the languages attacks most often switch to (folded: accents are gone).
    phrase_rule(
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
    phrase_rule(
        "role_injection",
        0.7,
        r"<\|im_start\|>|<\|system\|>|<\|endoftext\|>|<</?sys>>|\[/?inst\]|\[system\]|### (?:system|instruction):",
        "chat-template control tokens in the text",
    ),
    phrase_rule("role_play", 0.35, r"\byou are now\b", "'you are now' re-assignment"),
    phrase_rule(
        "jailbreak",
        0.85,
        r"\byou are now (?:a |an |in |the )?(?:dan\b|jailbroken|unrestricted|unfiltered|uncensored|evil|developer mode"
        r"|no longer (?:bound|an ai|restricted|limited)|free (?:of|from)|an ai (?:without|with no))",
        "re-assigns the model to an unrestricted persona",
    ),
    phrase_rule(
        "instruction_override",
        0.4,
        r"\bfrom now on,? you (?:are|will|must|shall|should)\b",
        "'from now on you' re-assignment",
    ),
    phrase_rule(
        "prompt_exfiltration",
        0.75,
        r"\b(?:reveal|show|print|display|repeat|output|tell me|give me|leak|dump|share|disclose|write out|spell out"
        rf"|recite|paste|copy)\b{WORDS % 4} (?:your |the )?"
        r"(?:system prompt|system message|initial (?:prompt|instructions)"
        r"|hidden (?:prompt|instructions)|original (?:prompt|instructions)|developer (?:message|prompt)|pre-?prompt"
        r"|(?:your|the) instructions (?:above|you were given)"
        r"|(?:your|the) (?:full|complete|exact) (?:prompt|instructions))\b",
        "asks for the system prompt",
    ),
    phrase_rule(
        "prompt_exfiltration",
        0.75,
        r"\bwhat (?:is|are|was|were) your (?:system prompt|initial instructions|original instructions"
        r"|hidden instructions|instructions|rules)\b",
        "asks for the system prompt",
    ),
    phrase_rule(
        "prompt_exfiltration",
        0.7,
        r"\brepeat (?:the |all )?(?:words|text|everything|all) (?:above|before this)\b",
        "asks to repeat the text before it",
    ),
    # "Developer mode" is also an everyday setting (Android, Windows): weak unless the model is the one
    # asked to be in it.
    phrase_rule("jailbreak", 0.2, r"\bdeveloper mode\b", "mentions developer mode"),
    phrase_rule(
        "jailbreak",
        0.3,
        rf"\b{_ENABLE}\b{WORDS % 2} {_SPECIAL_MODE}\b",
        "asks to enable a special mode",
    ),
    phrase_rule(
        "jailbreak",
        0.75,
        rf"\b{_ENABLE}\b{WORDS % 2} {_SPECIAL_MODE}\b{WORDS % 6} {_THE_MODEL}\b"
        rf"|\b(?:you are|you're|you will|you'll|simulate|act|behave)\b{WORDS % 4}"
        rf" (?:with |in |into )?{_SPECIAL_MODE}\b",
        "puts the model in an unrestricted mode",
    ),
    phrase_rule(
        "jailbreak",
        0.45,
        # "fallbacks are not filtered" is plain documentation: only "no longer" and "unfiltered" count.
        r"\bno longer (?:be )?(?:filtered|censored|restricted|moderated|bound by)\b|\b(?:unfiltered|uncensored)\b",
        "says answers are no longer filtered",
    ),
    phrase_rule("jailbreak", 0.85, r"\bdo anything now\b", "DAN ('do anything now') jailbreak"),
    phrase_rule("jailbreak", 0.3, r"\bjailbr(?:oken|eak|eaking)\b", "mentions jailbreaking"),
    phrase_rule(
        "jailbreak",
        0.8,
        rf"\bpretend\b{WORDS % 6} (?:no|without|free of|free from|not bound by)(?: any| all| your)? {_LIMITS}\b",
        "asks to pretend there are no restrictions",
    ),
    phrase_rule(
        "jailbreak",
        0.8,
        rf"\b(?:act|behave|respond|answer|roleplay|role-play|role play)(?: as)?(?: if)?\b{WORDS % 5}"
        rf" (?:unrestricted|unfiltered|uncensored|amoral|without (?:any )?{_LIMITS})\b",
        "asks for an unrestricted role-play",
    ),
    phrase_rule(
        "jailbreak",
        0.45,
        # "a key without limits", "no rules for naming": everyday; the nouns that say "safety" count alone,
        # the everyday ones only with an adjective that does.
        r"\b(?:no|without|free of|free from|not bound by|ignore your)(?: any| all| your)?"
        rf"(?: (?:ethical|moral|content|safety) {_LIMITS}| (?:restrictions|filters|filtering|guidelines|censorship"
        r"|ethics|safeguards))\b",
        "talks of having no restrictions",
    ),
    phrase_rule("role_play", 0.3, r"\b(?:stay|remain) in character\b", "asks to stay in character"),
    phrase_rule(
        "covert_instruction",
        0.55,
        r"\b(?:do not|don't|never) (?:mention|reveal|disclose|acknowledge|repeat) (?:this|these|the above) "
        r"(?:instructions?|notes?|messages?|requests?|text)\b",
        "asks to keep its own instructions secret",
    ),
    phrase_rule(
        "indirect_injection",
        0.5,
        r"\b(?:important|attention|urgent|note)\b ?[:!,-]? (?:to |for )?(?:the |any |all )?(?:[\w\-]{1,20} )?"
        r"(?:ai|assistants?|llms?|models?|chatbots?|agents?|bots?)"
        r"\b(?: [\w']{1,20}){0,3}?[,:]",
        "addresses an order to the AI",
    ),
    phrase_rule(
        "impersonation",
        0.4,
        r"\bthis is (?:the |your )?(?:it department|it team|system administrator|sysadmin|administrator|openai"
        r"|anthropic|your developers?|the developers?|security team)\b",
        "claims to speak for an authority",
    ),
    phrase_rule(
        "data_exfiltration",
        0.35,
        rf"\b(?:send|forward|upload|post|exfiltrate|copy)\b{WORDS % 8} to (?:\S{{1,64}}@\S{{1,64}}|https?://)",
        "asks to send content to an outside address",
    ),
    phrase_rule(
        "jailbreak",
        0.5,
        r"\b(?:broken|broke|break|breaks|freed|free) (?:free )?(?:of|from)(?: all| its| your| the)?"
        rf"{WORDS % 1} {_LIMITS}\b",
        "describes breaking free of its rules",
    ),
    phrase_rule(
        "jailbreak",
        0.35,
        r"\b(?:answers? anything|never refuses?|never says? no|without refusing|no matter what)\b",
        "asks for answers without refusal",
    ),
    phrase_rule(
        "instruction_override",
        0.75,
        r"\b(?:ignore|disregard|forget|bypass|override)(?: all| any)?(?: of)? your (?:programming|instructions|rules"
        r"|guidelines|training|restrictions|filters|safety \w+|system prompt|directives|policies)\b",
        "asks to ignore its own rules",
    ),
    phrase_rule(
        "instruction_override",
        0.7,
        r"\b(?:ignore|disregard)(?: what)? the user'?s? (?:request|question|instructions?|message|query|prompt|task)\b",
        "asks to ignore what the user asked",
    ),
    phrase_rule(
        "instruction_override",
        0.6,
        r"\b(?:everything|anything|whatever) you (?:were|are|have been)"
        r" (?:told|instructed|programmed|trained) not to\b",
        "inverts what it was told not to do",
    ),
    phrase_rule(
        "jailbreak",
        0.6,
        rf"\b(?:safety|content|your|system) (?:{_LIMITS}|protocols?|policy)"
        r"(?: are| is| have been| has been| were| now)?"
        r" (?:reversed|inverted|suspended|lifted|disabled|removed|off|void|gone|deactivated)\b",
        "declares the rules switched off",
    ),
    phrase_rule("jailbreak", 0.5, r"\bsystem override\b", "'system override'"),
    phrase_rule(
        "indirect_injection",
        0.4,
        r"\bwhen (?:you(?: are)? )?(?:summari[sz]e|summari[sz]ing|process|processing|read|reading|analy[sz]e"
        r"|analy[sz]ing|review|reviewing) this (?:document|page|email|e-mail|text|file|review|resume|cv|invite"
        r"|message|website|article)\b",
        "tells the model how to treat the document it is in",
    ),
    phrase_rule(
        "indirect_injection",
        0.3,  # "Assistant:" and "Agent:" head every transcript and class; only the plain AI names count
        r"\b(?:ai|llm|language model)s?(?: [\w\-]{1,20}){0,2}? ?:",
        "addresses the AI by name",
    ),
    phrase_rule(
        "prompt_exfiltration",
        0.7,
        rf"\b(?:output|print|show|repeat|reveal|dump|list)\b{WORDS % 6} (?:in|from) your context(?: window)?\b",
        "asks for the contents of its context",
    ),
    phrase_rule(
        "prompt_exfiltration",
        0.4,
        r"\b(?:including|with|plus|and) (?:the |all |your )?(?:system|developer)(?: and (?:system|developer))?"
        r" (?:messages|prompts?)\b",
        "asks to include system or developer messages",
    ),
    phrase_rule(
        "data_exfiltration",
        0.4,
        rf"\b(?:include|put|append|add|embed|encode|insert)\b{WORDS % 8} (?:in|into|to) (?:the |a |your )?(?:next )?"
        r"(?:image )?(?:url|link|query string|image url|markdown image)\b",
        "asks to smuggle data into a URL",
    ),
    phrase_rule(
        "role_injection",
        0.4,
        r"-{2,} ?end of (?:the )?(?:user )?(?:data|input|document|context|email)\b",
        "fake end-of-data delimiter",
    ),
    phrase_rule(
        "covert_instruction",
        0.55,
        r"\b(?:do not|don't|never) (?:tell|inform|alert|notify|warn|mention (?:this|it) to|let on to) (?:the )?user\b",
        "asks to hide something from the user",
    ),
    phrase_rule(
        "data_exfiltration",
        0.45,  # API docs "send the API key in a header" too: a hint that needs company
        rf"\b(?:send|forward|exfiltrate|upload|leak|post|email)\b{WORDS % 5} (?:entire )?"
        r"(?:conversation|chat history|previous messages|user'?s? (?:data|details|messages)|credentials|api keys?"
        r"|secrets|passwords|session tokens?)\b",
        "asks to send conversation data or secrets away",
    ),
    phrase_rule(
        "indirect_injection",
        0.5,
        r"\b(?:if|when) you are an? (?:ai|llm|language model|assistant|chatbot|ai assistant)\b"
        r"|\b(?:ai|llm|language model|assistant|chatbot)s? (?:reads?|reading|process(?:es|ing)?|summari[sz](?:es|ing)"
        r"|pars(?:es|ing)|handl(?:es|ing)|sees?) this\b"
        r"|\bnote to (?:the )?(?:ai|llm|assistant|model)\b",
        "addresses an AI reading the document",
    ),
    *TAKEOVER_RULES,
)


def phrase_signals(folded_text: str) -> list[Signal]:
    """Every phrase rule's matches, with spans in the folded text."""
    return [
        Signal(rule.kind, rule.weight, match.start(), match.end(), rule.reason)
        for rule in PHRASE_RULES
        for match in rule_matches(rule, folded_text)
    ]
