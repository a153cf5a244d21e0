"""Every text the UI shows has a Russian translation: the literal ``_("...")`` texts of
the templates and the UI's code, and the words it translates from tables (operators,
system columns, scopes, the administration menu)."""

from __future__ import annotations

import re
from pathlib import Path

from xrm.metadata.model import ACTIONS
from xrm.web.ui import i18n
from xrm.web.ui.context import SYSTEM_LABELS
from xrm.web.ui.filtering import OPERATOR_WORDS

WEB = Path(__file__).resolve().parents[1] / "xrm" / "web"
LITERAL = re.compile(r"""\b_\(\s*(?P<q>["'])(?P<text>(?:\\.|(?!(?P=q)).)*)(?P=q)""")


def used_texts() -> set[str]:
    texts: set[str] = set()
    files = list((WEB / "templates" / "ui").glob("*.html")) + list(
        (WEB / "templates" / "admin").glob("*.html")
    )
    files += list((WEB / "templates" / "setup").glob("*.html"))
    files += list((WEB / "ui").rglob("*.py"))
    for path in files:
        for match in LITERAL.finditer(path.read_text(encoding="utf-8")):
            texts.add(match.group("text").replace('\\"', '"').replace("\\'", "'"))
    menu = (WEB / "templates" / "admin" / "_base.html").read_text(encoding="utf-8")
    texts.update(re.findall(r"\('ui_admin\.\w+', '([^']+)'", menu))
    index = (WEB / "templates" / "admin" / "index.html").read_text(encoding="utf-8")
    texts.update(re.findall(r"\('ui_admin\.\w+', '([^']+)'", index))
    texts.update(OPERATOR_WORDS.values())
    texts.update(SYSTEM_LABELS.values())
    texts.update(ACTIONS)
    texts.update(("none", "own", "team", "all"))
    return texts - {"ID"}


def test_every_ui_text_has_a_russian_translation():
    missing = sorted(t for t in used_texts() if t not in i18n.RU)
    assert not missing, missing


def test_translations_keep_their_placeholders():
    for english, russian in i18n.RU.items():
        assert sorted(re.findall(r"%\((\w+)\)s", english)) == sorted(
            re.findall(r"%\((\w+)\)s", russian)
        ), english


def test_unknown_languages_fall_back_to_english():
    assert i18n.translate("Save", "ru_RU") == "Сохранить"
    assert i18n.translate("Save", "de") == "Save"
    assert i18n.translate("%(count)s records", "ru", count=3) == "Записей: 3"
