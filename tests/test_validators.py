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
