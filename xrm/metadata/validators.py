"""Email and phone checks for the field types: the answers of email-validator and
phonenumbers, with the work they repeat for every value done once.

An import checks tens of thousands of addresses that share a few domains.  email-validator
spends most of an address's time on its domain (IDNA and special-use rules), so a plain
ASCII address (``local@domain``, the local part a dot-atom, nothing the library would
rewrite) takes its domain's verdict from a cache and is put together here as the library
would.  Every other address, and every address the library would refuse (for its exact
message), goes through the library itself.

A phone written in international form (``+`` and digits) is mostly just those digits:
when phonenumbers' metadata for its country code says the library would strip nothing and
call the length possible, the answer is put together here (about ten times faster);
anything else goes to phonenumbers.
"""

from __future__ import annotations

import functools
import re

#: A domain the fast path takes: letters, digits, dots and hyphens (the library judges it).
_HOSTNAME_CHARS = re.compile(r"[A-Za-z0-9.\-]+")
#: Domains whose verdicts are kept (an import meets a few; a cache miss only costs time).
DOMAIN_CACHE = 4096


class InvalidEmail(ValueError):
    """The library's message for an address it refuses."""


def normalized_email(value: str) -> str:
    """The address as email-validator normalizes it (``validate_email(value,
    check_deliverability=False).normalized``), or InvalidEmail with its message."""
    fast = _fast_email(value)
    return fast if fast is not None else _full_email(value)


def _full_email(value: str) -> str:
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from None


def _fast_email(value: str) -> str | None:
    """The normalized address of a plain ASCII address whose domain is valid; None for
    anything else (the caller asks the library)."""
    if not value.isascii() or value.count("@") != 1:
        return None
    local, _, domain = value.partition("@")
    rules = _email_rules()
    if not rules.dot_atom.match(local) or not _HOSTNAME_CHARS.fullmatch(domain):
        return None
    if not rules.usable:
        return None
    # RFC 2142 names (postmaster, abuse, ...) are lower-cased by the library: its own path.
    if local.lower() in rules.case_insensitive:
        return None
    module = rules.module
    verdict = _domain_verdict(domain, module.TEST_ENVIRONMENT, module.GLOBALLY_DELIVERABLE)
    if verdict is None:
        return None
    normalized_domain, ascii_domain = verdict
    normalized = f"{local}@{normalized_domain}"
    # the three lengths the library checks (as given, normalized, with the ASCII domain)
    limit = rules.max_length
    if len(value) > limit or len(ascii_domain) + len(local) + 1 > limit:
        return None
    if len(normalized.encode("utf-8")) > limit:
        return None
    return normalized


class _Rules:
    """email-validator's own constants, read once."""

    def __init__(self, module, constants):
        self.module = module
        self.dot_atom = constants.DOT_ATOM_TEXT  # the local part the library keeps as is
        self.case_insensitive = frozenset(constants.CASE_INSENSITIVE_MAILBOX_NAMES)
        self.max_length = constants.EMAIL_MAX_LENGTH

    @property
    def usable(self) -> bool:
        """The fast path gives the library's answer under its default settings only (a
        program may change them)."""
        m = self.module
        return bool(
            m.ALLOW_SMTPUTF8
            and not m.STRICT
            and not m.ALLOW_EMPTY_LOCAL
            and not m.ALLOW_DISPLAY_NAME
        )


@functools.cache
def _email_rules() -> _Rules:
    import email_validator
    from email_validator import rfc_constants

    return _Rules(email_validator, rfc_constants)


@functools.lru_cache(maxsize=DOMAIN_CACHE)
def _domain_verdict(
    domain: str, test_environment: bool, globally_deliverable: bool
) -> tuple[str, str] | None:
    """(normalized domain, ASCII domain) as the library makes them from an address at
    ``domain``; None when it refuses the domain (the caller then asks it for its message)."""
    from email_validator import EmailNotValidError, validate_email

    try:
        # the shortest local part: only the domain can be refused here
        result = validate_email(
            "a@" + domain,
            check_deliverability=False,
            test_environment=test_environment,
            globally_deliverable=globally_deliverable,
        )
    except EmailNotValidError:
        return None
    return result.domain, result.ascii_domain


# ------------------------------------------------------------------------------ phone
class InvalidPhone(ValueError):
    pass


@functools.cache
def _phonenumbers():
    import phonenumbers

    return phonenumbers


def e164_phone(value: str, region: str) -> str:
    """The number in E.164 as phonenumbers parses it in ``region``; InvalidPhone with the
    field's message otherwise."""
    fast = _fast_e164(value)
    return fast if fast is not None else _library_e164(value, region)


def _library_e164(value: str, region: str) -> str:
    phonenumbers = _phonenumbers()
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise InvalidPhone("not a phone number") from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidPhone("not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


#: A number written in international form: ``+``, then ASCII digits and the separators
#: people write (phonenumbers drops them all when it parses).
_INTERNATIONAL = re.compile(r"\+[0-9 ().\-]+")
_SEPARATORS = str.maketrans("", "", " ().-")
#: phonenumbers' own limits: the longest input it reads, a national number's lengths.
_MAX_INPUT, _MIN_NSN, _MAX_NSN = 250, 2, 17


def _fast_e164(value: str) -> str | None:
    """``"+" + digits`` for a number in international form whose answer is certainly that:
    its country code is known, its national part neither starts with 0 nor with what the
    country's national prefix for parsing matches (so phonenumbers strips nothing) and has
    a length the country's metadata calls possible.  None otherwise: the caller asks the
    library (which also words the refusals)."""
    if len(value) > _MAX_INPUT or not _INTERNATIONAL.fullmatch(value):
        return None
    digits = value[1:].translate(_SEPARATORS)
    if not digits or digits[0] == "0":
        return None
    for size in (1, 2, 3):  # phonenumbers takes the shortest known code, as here
        rule = _country_rule(digits[:size])
        if rule is not None:
            break
    else:
        return None
    national = digits[size:]
    if not national or national[0] == "0" or len(national) not in rule[1]:
        return None
    prefix = rule[0]
    if prefix is not None and prefix(national):
        return None
    return "+" + digits


@functools.cache
def _country_rule(code: str):
    """(the national prefix's match function or None, the possible national lengths) of a
    country calling code, from phonenumbers' metadata of its main region; None for a code
    phonenumbers does not know."""
    phonenumbers = _phonenumbers()
    if not code.isdigit() or int(code) not in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        return None
    country = int(code)
    region = phonenumbers.region_code_for_country_code(country)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country, region)
    if metadata is None:
        return None
    pattern = metadata.national_prefix_for_parsing
    prefix = re.compile(pattern).match if pattern else None
    # Whether a length is possible is all is_possible_number asks of a national number
    # without leading zeros: asked once per length of a number made of nines.
    lengths = frozenset(
        length
        for length in range(_MIN_NSN, _MAX_NSN + 1)
        if phonenumbers.is_possible_number(
            phonenumbers.PhoneNumber(country_code=country, national_number=int("9" * length))
        )
    )
    return prefix, lengths
