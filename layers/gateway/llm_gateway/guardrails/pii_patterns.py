"""Personal data detectors: email, phone numbers, payment cards, IBANs, IP addresses.

Each detector is a pattern that finds candidates cheaply and a validator that throws most of them away
(check digits, octet ranges, issuer prefixes, context words). Patterns follow the linear-time rules in
``candidates.py``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from llm_gateway.guardrails.candidates import ID_CONTEXT, PHONE_CONTEXT, Candidate, preceded_by
from llm_gateway.guardrails.checksums import IBAN_LENGTHS, iban_valid, luhn_valid

# ----------------------------------------------------------------------------- email

_EMAIL = re.compile(r"(?<![\w.%+\-])[^\W_][\w.%+\-]{0,63}@[\w\-]{1,63}(?:\.[\w\-]{1,63}){1,8}(?![\w\-]|:\w)")
# "icon@2x.png": a retina image file name, not an address.
_RETINA_ASSET = re.compile(r"@\d(?:\.\d)?x\.", re.IGNORECASE)


def find_emails(text: str) -> Iterator[Candidate]:
    for match in _EMAIL.finditer(text):
        value = match.group()
        local, _, domain = value.partition("@")
        labels = domain.split(".")
        tld = labels[-1]
        if not (tld.isalpha() and 2 <= len(tld) <= 24) or local.endswith(".") or ".." in local or "_" in domain:
            continue
        if any(label.startswith("-") or label.endswith("-") for label in labels) or _RETINA_ASSET.search(value):
            continue
        yield Candidate("email", match.start(), match.end(), "email address", 0.95)


# ----------------------------------------------------------------------------- phone numbers

# "+44 20 7946 0958", "+1 (415) 555-2671", "+33 1 23 45 67 89", "+4915112345678".
_PHONE_INTERNATIONAL = re.compile(r"(?<![\w+])\+[1-9][\d ().\-]{5,24}\d(?![\w\-]|[.,]\d)")  # no code starts with 0
# North American "(415) 555-2671", "415-555-2671", "415.555.2671", optionally "1-" in front.
_PHONE_NANP = re.compile(r"(?<![\w.\-+/])(?:1[ \-.])?(?:\(\d{3}\) ?|\d{3}[ \-./])\d{3}[ \-.]\d{4}(?![\w\-]|[.,/]\d)")
# National numbers with a trunk 0: "020 7946 0958", "07700 900123", "030 12345678", "06 12 34 56 78",
# "06.12.34.56.78".
_PHONE_NATIONAL = re.compile(r"(?<![\w.\-+/])(?:0\d{1,4}(?:[ \-]\d{2,8}){1,4}|0\d(?:\.\d{2}){4})(?![\w\-]|[.,/:]\d)")
# A bare run of digits (or a 3-4 split) counts only after a word like "phone" or "call me at".
_PHONE_BARE = re.compile(r"(?<![\w.\-+/])(?:\d{7,15}|\d{3}[ \-]\d{4})(?![\w\-]|[.,/:]\d)")
_DOUBLE_SEPARATOR = re.compile(r"[ .\-]{2}|\(\s*\)")
# "4526 0181 5908 3013": the last three groups look like a national number, but they continue a longer
# run of digit groups (an order or card number) and are not one.
_AFTER_DIGIT_GROUP = re.compile(r"\d[ .\-]$")


def _digit_count(value: str) -> int:
    return sum(char.isdigit() for char in value)


def _trim_international(value: str) -> str:
    """Drop trailing groups until at most 15 digits (E.164) remain: "+44 20 7946 0958 12 items"."""
    while _digit_count(value) > 15:
        cut = max(value.rfind(" "), value.rfind("-"), value.rfind("."))
        if cut <= 0:
            return value
        value = value[:cut].rstrip(" .-(")
    return value


def find_phones(text: str) -> Iterator[Candidate]:
    for match in _PHONE_INTERNATIONAL.finditer(text):
        value = _trim_international(match.group())
        digits = _digit_count(value)
        if not 8 <= digits <= 15 or _DOUBLE_SEPARATOR.search(value) or value.count("(") != value.count(")"):
            continue
        yield Candidate("phone", match.start(), match.start() + len(value), "phone number (international)", 0.95)
    for match in _PHONE_NANP.finditer(text):
        if preceded_by(ID_CONTEXT, text, match.start()) or preceded_by(_AFTER_DIGIT_GROUP, text, match.start(), 2):
            continue
        yield Candidate("phone", match.start(), match.end(), "phone number (North American)", 0.85)
    for match in _PHONE_NATIONAL.finditer(text):
        if not 9 <= _digit_count(match.group()) <= 12 or preceded_by(ID_CONTEXT, text, match.start()):
            continue
        if len(set(match.group()) - set(" .-")) == 1:
            continue  # "00 00 00 00 00": a hex dump or a placeholder
        if preceded_by(_AFTER_DIGIT_GROUP, text, match.start(), 2):
            continue
        yield Candidate("phone", match.start(), match.end(), "phone number (national)", 0.8)
    for match in _PHONE_BARE.finditer(text):
        if preceded_by(PHONE_CONTEXT, text, match.start(), window=40):
            yield Candidate("phone", match.start(), match.end(), "phone number (after a phone word)", 0.7)


# ----------------------------------------------------------------------------- payment cards

_CARD = re.compile(r"(?<![\w\-.+])\d(?:[ \-]?\d){12,18}(?![\w\-]|[.,]\d)")
# "5342.1809.6792.9080": dots only in the four-by-four shape, where no decimal or address looks alike.
_CARD_DOTTED = re.compile(r"(?<![\w.+])\d{4}\.\d{4}\.\d{4}\.\d{4}(?![\w.]|\.\d)")


# Product and device numbers that can pass Luhn by chance (an IMEI always does).
_BARCODE_CONTEXT = re.compile(
    r"\b(?:ean|gtin|upc|isbn|issn|imei|barcode|sku|serial)\b[^\w\n]{0,4}(?:no|number|#)?[^\w\n]{0,4}$", re.IGNORECASE
)


def _issuer(digits: str) -> str | None:
    """The card network a number's prefix and length belong to (IIN ranges), or None."""
    length, two, four, six = len(digits), int(digits[:2]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4" and length in (13, 16, 19):
        return "Visa"
    if (51 <= two <= 55 or 2221 <= four <= 2720) and length == 16:
        return "Mastercard"
    if two in (34, 37) and length == 15:
        return "American Express"
    if (four == 6011 or two == 65 or 644 <= int(digits[:3]) <= 649 or 622126 <= six <= 622925) and length >= 16:
        return "Discover"
    if 3528 <= four <= 3589 and length >= 16:
        return "JCB"
    if (300 <= int(digits[:3]) <= 305 or two in (36, 38, 39)) and length >= 14:
        return "Diners Club"
    if two == 62 and length >= 16:
        return "UnionPay"
    if (two == 50 or 56 <= two <= 69) and length >= 12:
        return "Maestro"
    return None


def find_cards(text: str) -> Iterator[Candidate]:
    for match in (*_CARD.finditer(text), *_CARD_DOTTED.finditer(text)):
        value = match.group()
        separators = {char for char in value if not char.isdigit()}
        if len(separators) > 1:
            continue
        if separators and not all(3 <= len(group) <= 6 for group in re.split(r"[ \-.]", value)):
            continue
        if preceded_by(_BARCODE_CONTEXT, text, match.start()):
            continue
        digits = "".join(char for char in value if char.isdigit())
        issuer = _issuer(digits)
        if issuer is None or not luhn_valid(digits):
            continue
        yield Candidate("credit_card", match.start(), match.end(), f"payment card number ({issuer}, Luhn valid)")


# ----------------------------------------------------------------------------- IBAN

_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{2})\d{2} ?[A-Za-z0-9]")


def find_ibans(text: str) -> Iterator[Candidate]:
    """From each "CC12" start, collect exactly the country's length of characters (single spaces allowed
    between groups), so a following word never joins the number. Either case: people type "de89 ...";
    the country length and mod-97 keep words out."""
    for match in _IBAN_START.finditer(text):
        length = IBAN_LENGTHS.get(match.group(1).upper())
        if length is None:
            continue
        compact: list[str] = []
        position = match.start()
        while position < len(text) and len(compact) < length:
            char = text[position]
            if char.isascii() and char.isalnum():
                compact.append(char.upper())
            elif not (char == " " and compact and position + 1 < len(text) and text[position + 1] != " "):
                break
            position += 1
        if len(compact) != length or (position < len(text) and text[position].isalnum()):
            continue
        if iban_valid("".join(compact)):
            yield Candidate("iban", match.start(), position, "IBAN (length and mod-97 valid)")


# ----------------------------------------------------------------------------- IP addresses

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d|-[A-Za-z])")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f:]{2,39}(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\d)")
# "version 10.0.0.1", "release 1.2.3.4": dotted quads that are release numbers.
_VERSION_CONTEXT = re.compile(r"\b(?:version|release|ver|build|v)\s{0,2}$", re.IGNORECASE)


def _octets_valid(value: str) -> bool:
    return all(part == "0" or (not part.startswith("0") and int(part) <= 255) for part in value.split("."))


def find_ip_addresses(text: str) -> Iterator[Candidate]:
    for match in _IPV4.finditer(text):
        if _octets_valid(match.group()) and not preceded_by(_VERSION_CONTEXT, text, match.start(), window=12):
            yield Candidate("ip_address", match.start(), match.end(), "IPv4 address", 0.9)
    for match in _IPV6.finditer(text):
        value = match.group()
        # Four hex digits keep "a::b" in code out; the loopback "::1" is the one short form worth its name.
        if value.count(":") < 2 or (sum(char not in ":." for char in value) < 4 and value != "::1"):
            continue
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            continue
        yield Candidate("ip_address", match.start(), match.end(), "IPv6 address")
