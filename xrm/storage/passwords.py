"""The password policy: long enough, not built from the email, not a common password.

``Users.add_user`` and ``Users.set_password`` check every new password against the policy
of their database, so ``xrm user add``, ``xrm setup``, the administrators' people pages
and a user's own password change all refuse the same passwords with the same messages.

The policy is kept in the organization settings (``xrm_setting``), so the command line and
every web worker apply the same one: ``password_min_length`` (default 10) and
``password_deny`` (words refused on top of the built-in list; ``xrm setup
--password-min-length 12 --password-deny acme,widget`` sets both).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MIN_LENGTH = 10
#: The sign-in form takes no more, so a longer password could never be used.
MAX_LENGTH = 1024
#: An email's name part shorter than this is too likely to occur by chance to refuse.
NAME_PART_MIN = 3

#: Passwords tried first by anyone guessing, compared without case and without the digits
#: and punctuation people add around a word ("Password2024!" is "password").
COMMON = frozenset(
    """
    password password1 password12 password123 password1234 passw0rd p@ssw0rd p@ssword
    123456 1234567 12345678 123456789 1234567890 12345678910 0123456789 9876543210
    111111 1111111111 000000 0000000000 123123 123123123 654321 666666 121212 112233
    qwerty qwerty123 qwerty1234 qwertyuiop qwertz asdfgh asdfghjkl zxcvbnm 1q2w3e4r
    1q2w3e4r5t 1qaz2wsx zaq12wsx abc123 abcdef abcdefgh abcdefghij abcd1234 a1b2c3d4
    iloveyou letmein welcome admin administrator root login guest test testing default
    changeme secret master monkey dragon football baseball soccer hockey shadow sunshine
    princess superman batman trustno1 starwars whatever freedom computer internet
    hello qazwsx michael jennifer jordan hunter ranger killer charlie summer winter
    """.split()
)

_AROUND = string.digits + string.punctuation + string.whitespace


def _words(value) -> frozenset[str]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, Iterable):
        return frozenset()
    return frozenset(str(w).strip().casefold() for w in value if str(w).strip())


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int = MIN_LENGTH
    deny: frozenset[str] = frozenset()  # refused on top of COMMON, lower case

    @classmethod
    def from_settings(cls, settings: Mapping) -> PasswordPolicy:
        """The policy of a database's organization settings (defaults where unset)."""
        try:
            length = int(settings.get("password_min_length") or MIN_LENGTH)
        except (TypeError, ValueError):
            length = MIN_LENGTH
        return cls(min(max(length, 1), MAX_LENGTH), _words(settings.get("password_deny") or ()))

    def problems(self, password: str, email: str = "") -> list[str]:
        """What is wrong with ``password`` for the user with ``email``; empty when nothing."""
        found = []
        if len(password) < self.min_length:
            found.append(f"the password needs at least {self.min_length} characters")
        if len(password) > MAX_LENGTH:
            found.append(f"the password may have at most {MAX_LENGTH} characters")
        folded = password.casefold()
        name = email.strip().casefold().rpartition("@")[0]
        if name and (folded == name or (len(name) >= NAME_PART_MIN and name in folded)):
            found.append("the password must not contain the part of the email before the @")
        core = folded.strip(_AROUND)
        denied = COMMON | self.deny
        if folded.strip() in denied or (core and core in denied):
            found.append("the password is too common: it is among the first ones guessed")
        return found

    def generate(self, email: str = "") -> str:
        """A random password this policy accepts (shown once by ``xrm setup``)."""
        while True:
            # 16 characters of 64 symbols (96 bits), or the minimum length if that is more.
            candidate = secrets.token_urlsafe(max(12, self.min_length))[: max(16, self.min_length)]
            if not self.problems(candidate, email):
                return candidate
