"""Takeover phrases: claimed authority, safety switched off, a new identity, secrecy, and notes aimed at
whatever model reads the text. Same rule shape and folding as ``injection_phrases.py``, which adds
these to its table; kept apart so neither table grows past a screen or two of review.

Written from the common shapes of published jailbreak and indirect-injection prompts, with everyday
look-alikes in tests/unit/test_guardrails_injection.py keeping each one honest.
"""

from __future__ import annotations

from llm_gateway.guardrails.injection_signals import WORDS, PhraseRule, phrase_rule

_EARLIER = r"(?:previous|prior|earlier|above|original|old|initial|existing|all|your|the)"
_RULES = r"(?:instructions|rules|restrictions|guidelines|policies|limitations|directives|constraints)"
_AUTHORITY = r"(?:admin|administrator|developer|system|root|sysadmin|operator|openai|anthropic|security team)"
_SAFETY = r"(?:safety|content|moderation|ethical|security)"
_SAFEGUARDS = r"(?:checks|filters|guidelines|features|measures|settings|rules|restrictions|policies|protocols)"

TAKEOVER_RULES: tuple[PhraseRule, ...] = (
    phrase_rule(
        "instruction_override",
        0.65,
        rf"\b(?:pay no attention to|do not pay attention to|don't pay attention to|disobey|stop obeying)\b{WORDS % 3}"
        rf" {_RULES}\b",
        "asks to stop heeding its rules",
    ),
    phrase_rule(
        "instruction_override",
        0.45,
        rf"\b{_EARLIER} {_RULES} (?:no longer apply|do not apply|don't apply|are void|are cancell?ed|are revoked"
        r"|are obsolete|are lifted|have been lifted|have been revoked)\b",
        "declares earlier rules void",
    ),
    phrase_rule(
        "impersonation",
        0.35,
        rf"\b{_AUTHORITY} (?:override|command|directive|notice|instruction|message)\b ?:?",
        "claims an authority's command",
    ),
    phrase_rule(
        "impersonation",
        0.45,
        r"\b(?:i am|i'm|this is) (?:your|the) (?:developer|creator|administrator|admin|owner|operator)\b"
        r"|\bthe user is (?:an? |the )?(?:administrator|admin|developer|root|superuser)\b",
        "claims elevated rights",
    ),
    # "How do I disable the content filter?" is a fair question to a gateway's users; aimed at "your"
    # safety it is an attack, at "all" of it a hint.
    phrase_rule(
        "jailbreak",
        0.7,
        rf"\b(?:disable|turn off|deactivate|bypass|remove|switch off|drop)\b your {_SAFETY} {_SAFEGUARDS}\b",
        "asks to switch its safety off",
    ),
    phrase_rule(
        "jailbreak",
        0.45,
        rf"\b(?:disable|turn off|deactivate|bypass|remove|switch off|drop)\b (?:all|any|every) {_SAFETY}"
        rf" {_SAFEGUARDS}\b",
        "asks to switch all safety off",
    ),
    phrase_rule(
        "jailbreak",
        0.6,
        rf"\b(?:ignores?|ignoring|without|has no|have no|with no)(?: every| all| any)? (?:{_SAFETY} )?"
        r"(?:safety )?(?:guidelines?|rules?|restrictions?|content polic(?:y|ies)|filters?)\b"
        r"(?: [\w']{1,20}){0,6}? (?:explain|answer|tell|describe|respond|write|give)",
        "asks for answers from a persona without rules",
    ),
    phrase_rule(
        "jailbreak",
        0.45,
        r"\b(?:has|have|with) no content polic(?:y|ies)\b|\bno content polic(?:y|ies)\b",
        "talks of having no content policy",
    ),
    phrase_rule(
        "role_play",
        0.55,
        r"\byou are no longer (?:a |an |the |just )?(?:[\w\-]{1,20} ){0,2}(?:bot|assistant|ai|model|chatbot|agent"
        r"|helper)\b",
        "revokes the model's role",
    ),
    phrase_rule(
        "jailbreak",
        0.45,
        r"\b(?:answers?|respond(?:s)? to|replies to) (?:every|all|any) (?:question|request|prompt)s?"
        r" (?:without (?:refusing|refusal|restrictions?|limits)|no matter what)\b",
        "promises answers without refusal",
    ),
    phrase_rule(
        "covert_instruction",
        0.45,
        r"\b(?:keep (?:this|that|it) (?:between us|secret|confidential|hidden)|(?:do not|don't) let (?:the user|anyone)"
        r" know)\b",
        "asks for secrecy",
    ),
    phrase_rule(
        "indirect_injection",
        0.4,
        r"\b(?:to|for) (?:whichever|whatever|any|every|each) (?:ai|assistant|model|llm|bot|agent|language model)s?"
        r"(?: that is| which is| who is)? (?:reading|summari[sz]ing|processing|parsing|reviewing|handling)\b"
        r"|\b(?:instructions|note|message) (?:for|to) (?:the |any |all )?(?:ai|llm|language model)"
        r"(?: agents?| assistants?| models?)?\b ?:",
        "addresses whichever model reads the text",
    ),
    phrase_rule(
        "data_exfiltration",
        0.5,
        rf"\b(?:add|append|include|insert|attach)\b{WORDS % 3} (?:link|image|url)\b{WORDS % 8}"
        r" (?:followed by|with|containing|plus) (?:the )?(?:user'?s?|conversation|chat|previous|last)\b",
        "asks to carry the user's data in a link",
    ),
)
