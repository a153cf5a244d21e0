"""The email and phone checks give the libraries' answers: the cached-domain path for
plain addresses agrees with email-validator on generated and awkward addresses, message
and all; phones are phonenumbers' E.164."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from xrm.metadata.validators import InvalidEmail, InvalidPhone, e164_phone, normalized_email


def library(value: str) -> tuple[str, str]:
    try:
        return ("ok", validate_email(value, check_deliverability=False).normalized)
    except EmailNotValidError as exc:
        return ("refused", str(exc))


def ours(value: str) -> tuple[str, str]:
    try:
        return ("ok", normalized_email(value))
    except InvalidEmail as exc:
        return ("refused", str(exc))


local_parts = st.text(alphabet="abcXYZ019._+-!#'~é\"@ ", min_size=0, max_size=12)
domains = st.one_of(
    st.sampled_from(
        [
            "example.com",
            "Example.COM",
            "mail.example.co.uk",
            "xn--80ak6aa92e.com",
            "test",
            "localhost",
            "a.invalid",
            "x.local",
            "1.2.3.4",
            "[127.0.0.1]",
            "-bad.com",
            "bad-.com",
            "a..com",
            "com.",
            "a" * 64 + ".com",
            "b" * 250 + ".com",
            "пример.рф",
            "",
        ]
    ),
    st.text(alphabet="abz09.-", min_size=1, max_size=20),
)


@settings(max_examples=500, deadline=None)
@given(local_parts, domains)
def test_addresses_get_the_librarys_answer(local, domain):
    value = f"{local}@{domain}"
    assert ours(value) == library(value)


@pytest.mark.parametrize(
    "value",
    [
        "Person.Name+tag@Example.COM",
        "postmaster@example.com",  # RFC 2142 names are lower-cased by the library
        "PostMaster@example.com",
        "a@xn--80ak6aa92e.com",
        "x" * 64 + "@example.com",
        "x" * 65 + "@example.com",
        "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 50 + ".com",
        "plain",
        "two@at@example.com",
        '"quoted"@example.com',
        "Ann <ann@example.com>",
        "a@localhost",
        "a@example",
    ],
)
def test_awkward_addresses(value):
    assert ours(value) == library(value)


def test_the_cache_follows_the_librarys_settings(monkeypatch):
    import email_validator

    monkeypatch.setattr(email_validator, "STRICT", True)
    value = "x" * 65 + "@example.com"  # too long before the @ only when strict
    assert ours(value) == library(value)
    assert ours(value)[0] == "refused"


@pytest.mark.parametrize(
    ("value", "region", "expected"),
    [
        ("+7 916 123-45-67", "US", "+79161234567"),
        ("8 (916) 123-45-67", "RU", "+79161234567"),
        ("(212) 555-0100", "US", "+12125550100"),
        ("+44 20 7946 0958", "US", "+442079460958"),
    ],
)
def test_phones_in_e164(value, region, expected):
    assert e164_phone(value, region) == expected


@pytest.mark.parametrize(
    ("value", "message"), [("abc", "not a phone number"), ("+1 23", "not a possible phone number")]
)
def test_phones_refused(value, message):
    with pytest.raises(InvalidPhone, match=message):
        e164_phone(value, "US")


# ------------------------------------------------------------------------------ phone fast path
def library_phone(value: str, region: str) -> tuple[str, str]:
    """phonenumbers' own answer (value or refusal), as e164_phone gave it before its fast path."""
    import phonenumbers

    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return ("refused", "not a phone number")
    if not phonenumbers.is_possible_number(number):
        return ("refused", "not a possible phone number")
    return ("ok", phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def our_phone(value: str, region: str) -> tuple[str, str]:
    try:
        return ("ok", e164_phone(value, region))
    except InvalidPhone as exc:
        return ("refused", str(exc))


separators = st.sampled_from(["", "", "", " ", "-", ".", "(", ")", "  ", " (", ") "])
regions = st.sampled_from(["US", "RU", "GB", "DE", "IT", "BR", "CN", "ZZ"])


@st.composite
def international(draw) -> str:
    """``+`` and digits with separators between them, often starting with a real code."""
    import phonenumbers

    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    start = draw(
        st.one_of(st.sampled_from([str(c) for c in codes]), st.text("0123456789", max_size=3))
    )
    digits = start + draw(st.text("0123456789", min_size=0, max_size=19))
    out = ["+", draw(separators)]
    for digit in digits:
        out += [digit, draw(separators)]
    return "".join(out).strip()


@settings(max_examples=3000, deadline=None)
@given(international(), regions)
def test_international_phones_get_the_librarys_answer(value, region):
    assert our_phone(value, region) == library_phone(value, region)


@settings(max_examples=300, deadline=None)
@given(st.text("+0123456789 ().-x#ext;*/", max_size=24), regions)
def test_any_phone_text_gets_the_librarys_answer(value, region):
    assert our_phone(value, region) == library_phone(value, region)


def test_every_country_code_at_every_length():
    """For each code phonenumbers knows: national parts of every length from 1 to 18 that
    start with each digit, and with what the country's national prefix matches."""
    import random

    import phonenumbers

    from xrm.metadata.validators import _fast_e164

    rnd = random.Random(16)
    fast = 0
    for code in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE):
        region = phonenumbers.region_code_for_country_code(code)
        metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, region)
        prefix = (metadata.national_prefix_for_parsing or "") if metadata else ""
        starts = [*"0123456789", *{m for m in ("0", "1", "8", "9", "00", "01") if prefix}]
        for length in range(1, 19):
            for first in starts:
                national = (first + "".join(rnd.choice("0123456789") for _ in range(length)))[
                    :length
                ]
                for value in (f"+{code}{national}", f"+{code} {national[:3]}-{national[3:]}"):
                    expected = library_phone(value, "US")
                    assert our_phone(value, "US") == expected, value
                    fast += _fast_e164(value) is not None
    assert fast > 1000  # the fast path answered a good share of them itself
