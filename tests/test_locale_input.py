"""Numbers and dates as people write them in their language, one parser for every door:
the field registry reads number text by the locale (Babel's symbols, spaces always
grouping, the machine form always accepted, a wrong grouping refused), the records service
reads with its user's locale, the API hands number text to it (and keeps JSON decimals
exact), and forms show values as the user's locale writes them.  Also the readable words
around them: filters as sentences, stage labels in messages, labelled error summaries and
the role page's column headers."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from decimal import Decimal

import pytest
from browser.support import ADMIN, PASSWORD, SELLER, Client, world
from hypothesis import given, settings
from hypothesis import strategies as st

from xrm.metadata import CoercionError
from xrm.metadata.fieldtypes import number_format, parse_local_date, parse_number
from xrm.metadata.labels import Label
from xrm.metadata.model import Field
from xrm.storage.records import ValidationFailed
from xrm.web.ui import i18n

D = Decimal
NBSP, NNBSP = "\u00a0", "\u202f"
RU_USER = "roman@example.com"
RU_ADMIN = "anna@example.com"


def make(type_name: str, **params) -> Field:
    return Field(name="f", type=type_name, label=Label.of({"en": "F"}), entity="t", params=params)


# ------------------------------------------------------------------------ the parser
@pytest.mark.parametrize(
    "text, locale, expected",
    [
        ("400 000", "en", D("400000")),
        ("400 000", "ru", D("400000")),
        (f"400{NBSP}000", "en", D("400000")),
        (f"400{NNBSP}000", "fr", D("400000")),
        ("1 234,5", "ru", D("1234.5")),
        (f"1{NBSP}234,5", "ru", D("1234.5")),  # what Babel writes for ru
        ("1,234.5", "en", D("1234.5")),
        ("1 234.5", "en", D("1234.5")),
        ("1 234.5", "ru", D("1234.5")),  # a dot is a decimal point wherever it does not group
        ("1,234", "ru", D("1.234")),  # the comma is ru's decimal symbol
        ("1.234,5", "de", D("1234.5")),
        ("1.234.567", "de", D("1234567")),
        ("1.234", "de", D("1234")),  # grouped as de's forms show it, not the machine 1.234
        ("1.5", "de", D("1.5")),
        ("12,34,567.5", "en_IN", D("1234567.5")),  # Indian grouping, from CLDR
        ("1,234,567", "en_IN", D("1234567")),  # groups of three are always understood
        ("1234.5", "ru", D("1234.5")),  # the machine form, in every locale
        ("1234.5", "de", D("1234.5")),
        ("-0.25", "ru", D("-0.25")),
        ("\u22125", "en", D("-5")),  # a typographic minus
        ("1e3", "ru", D("1E+3")),
        (",5", "ru", D("0.5")),
        ("1,234.5", "ru_RU", None),  # two decimal symbols for ru: refused below
        ("1,234", "xx", D("1234")),  # an unknown locale reads as English
        ("1,234", "ru-RU", D("1.234")),
    ],
)
def test_number_text_is_read_by_locale(text, locale, expected):
    if expected is None:
        with pytest.raises(CoercionError, match="expected a number"):
            parse_number(text, locale)
    else:
        assert parse_number(text, locale) == expected


@pytest.mark.parametrize(
    "text, locale, message",
    [
        ("1,5", "en", "digits are grouped wrongly: numbers look like 1,234,567.89 or 1234567.89"),
        ("1 234,5", "en", "digits are grouped wrongly"),  # English groups with both here
        ("1 23", "ru", f"numbers look like 1{NBSP}234{NBSP}567,89 or 1234567.89 here"),
        ("1,2345", "en", "digits are grouped wrongly"),
        ("1.234,5", "ru", "expected a number"),
        ("abc", "en", "expected a number"),
        ("NaN", "ru", "expected a finite number"),
        ("1e99999999999999999999", "en", "number is too large"),
        ("١٢٣", "ar", "expected a number"),  # only ASCII digits
    ],
)
def test_wrong_number_text_is_refused_with_a_reason(text, locale, message):
    with pytest.raises(CoercionError) as caught:
        parse_number(text, locale)
    assert message in caught.value.message


def test_a_russian_reader_is_told_in_russian():
    with pytest.raises(CoercionError) as caught:
        parse_number("1 23", "ru")
    assert i18n.translate_error(caught.value.message, "ru") == (
        f"цифры сгруппированы неверно: числа пишутся так: 1{NBSP}234{NBSP}567,89 или 1234567.89"
    )


def test_number_formats_come_from_babel():
    assert number_format("en")[:3] == (".", ",", (3, 3))
    assert number_format("ru")[:3] == (",", NBSP, (3, 3))
    assert number_format("en_IN").grouping == (3, 2)


def test_number_types_read_by_the_locale_they_are_given():
    integer, money, percent, rating = (
        make("integer"),
        make("money"),
        make("percent"),
        make("rating"),
    )
    assert integer.kind.coerce_input(integer, "400 000", locale="ru") == 400000
    assert integer.kind.coerce_input(integer, "1,000", locale="en") == 1000
    with pytest.raises(CoercionError, match="expected a whole number"):
        integer.kind.coerce_input(integer, "1,5", locale="ru")
    with pytest.raises(CoercionError, match="grouped wrongly"):
        integer.kind.coerce_input(integer, "1,5", locale="en")  # never 15
    assert money.kind.coerce_input(money, "61 829,35", locale="ru") == D("61829.35")
    assert percent.kind.coerce_input(percent, f"12,5{NBSP}%", locale="ru") == D("12.50")
    assert rating.kind.coerce_input(rating, "4", locale="ru") == 4
    duration = make("duration")  # written the same in every language
    assert duration.kind.coerce_input(duration, "1h30m", locale="ru") == 5400


LOCALES = ["en", "ru", "de", "fr", "en_IN", "de_CH"]


@settings(max_examples=150, deadline=None)
@given(
    locale=st.sampled_from(LOCALES),
    number=st.decimals(min_value=-(10**13), max_value=10**13, places=4, allow_nan=False),
)
def test_what_a_form_shows_reads_back_to_the_same_decimal(locale, number):
    f = make("decimal")
    value = f.coerce(number)
    shown = f.kind.edit_text(f, value, locale)
    assert f.kind.coerce_input(f, shown, locale=locale) == value


@settings(max_examples=100, deadline=None)
@given(locale=st.sampled_from(LOCALES), number=st.integers(-(2**63), 2**63 - 1))
def test_what_a_form_shows_reads_back_to_the_same_integer(locale, number):
    f = make("integer")
    assert f.kind.coerce_input(f, f.kind.edit_text(f, number, locale), locale=locale) == number


def test_edit_text_keeps_every_stored_digit():
    decimal, money = make("decimal"), make("money")
    assert decimal.kind.edit_text(decimal, D("1.2345"), "en") == "1.2345"  # not Babel's 1.235
    assert money.kind.edit_text(money, D("61829.35"), "ru") == f"61{NBSP}829,35"
    assert money.kind.edit_text(money, D("100.00"), "en") == "100.00"
    phone = make("phone")
    assert phone.kind.edit_text(phone, "+12065550100", "ru") == "+1 206-555-0100"
    assert phone.coerce("+1 206-555-0100") == "+12065550100"


# ------------------------------------------------------------------------ dates
def test_dates_are_read_in_the_locales_short_format_and_iso():
    f = make("date")
    december = dt.date(2026, 12, 31)
    assert f.kind.coerce_input(f, "31.12.2026", locale="ru") == december
    assert f.kind.coerce_input(f, "2026-12-31", locale="ru") == december
    assert f.kind.coerce_input(f, "12/31/26", locale="en") == december
    assert f.kind.coerce_input(f, "01/02/2026", locale="en_GB") == dt.date(2026, 2, 1)
    assert f.kind.coerce_input(f, "01/02/2026", locale="en") == dt.date(2026, 1, 2)
    assert f.kind.coerce_input(f, "2026/01/02", locale="ja") == dt.date(2026, 1, 2)
    with pytest.raises(CoercionError, match=r"expected a date \(YYYY-MM-DD\)"):
        f.kind.coerce_input(f, "31/12", locale="ru")


def test_two_digit_years_fall_within_eighty_years_back_and_twenty_ahead():
    this_year = dt.date.today().year
    ahead = (this_year + 20) % 100
    behind = (this_year + 21) % 100
    assert parse_local_date(f"01.01.{ahead:02d}", "ru").year == this_year + 20
    assert parse_local_date(f"01.01.{behind:02d}", "ru").year == this_year - 79


# ------------------------------------------------------------------------ the records service
@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("locale-input")) as built:
        built.roman = built.store.add_user(
            RU_USER, "Роман", password=PASSWORD, roles=["user"], teams=["east"], locale="ru"
        )
        built.store.add_user(
            RU_ADMIN, "Анна", password=PASSWORD, roles=["administrator"], locale="ru"
        )
        yield built


def records_as(w, user_id: int, entity: str):
    return w.store.records(entity, principal=w.store.principal(user_id))


def test_the_records_service_reads_numbers_in_its_users_locale(w):
    ru = records_as(w, w.roman, "opportunity")
    deal = ru.create(
        {
            "name": "Рубли",
            "account": w.acme["id"],
            "close_date": "31.12.2026",
            "amount": "61 829,35",
        }
    )
    assert deal["amount"] == D("61829.35") and deal["close_date"] == dt.date(2026, 12, 31)
    assert ru.update(deal["id"], {"amount": "1,5"})["amount"] == D("1.50")
    en = records_as(w, w.seller, "opportunity")
    deal = en.create({"name": "Dollars", "account": w.acme["id"], "close_date": "12/31/2026"})
    with pytest.raises(ValidationFailed) as caught:
        en.update(deal["id"], {"amount": "1,5"})
    assert caught.value.errors == {
        "amount": ["digits are grouped wrongly: numbers look like 1,234,567.89 or 1234567.89 here"]
    }
    assert en.update(deal["id"], {"amount": "1,500"})["amount"] == D("1500.00")


def test_stage_messages_name_the_stage_by_its_label_in_the_users_language(w):
    deal = records_as(w, w.roman, "opportunity").create(
        {"name": "Этапы", "account": w.acme["id"], "close_date": dt.date(2026, 12, 31)}
    )
    with pytest.raises(ValidationFailed) as caught:
        records_as(w, w.roman, "opportunity").update(deal["id"], {"stage": "qualification"})
    assert caught.value.errors == {"contact": ["required for stage Квалификация"]}
    deal = records_as(w, w.seller, "opportunity").create(
        {"name": "Stages", "account": w.acme["id"], "close_date": dt.date(2026, 12, 31)}
    )
    with pytest.raises(ValidationFailed) as caught:
        records_as(w, w.seller, "opportunity").update(deal["id"], {"stage": "won"})
    assert caught.value.errors["stage"] == ["cannot move from Prospecting to Won"]
    assert caught.value.errors["amount"] == ["required for stage Won"]
    assert (
        i18n.translate_error("required for stage Квалификация", "ru")
        == "обязательно для стадии «Квалификация»"
    )


# ------------------------------------------------------------------------ the API
@pytest.fixture(scope="module")
def tokens(w):
    return {
        "ru": w.store.create_token(w.roman, "locale tests"),
        "en": w.store.create_token(w.seller, "locale tests"),
    }


def api(app, token: str, method: str, path: str, body):
    client = app.test_client()
    return client.open(
        f"/api/v1{path}",
        method=method,
        data=json.dumps(body) if not isinstance(body, str) else body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def new_deal(**values) -> dict:
    return {"name": "API deal", "close_date": "2026-12-31", **values}


def test_the_api_accepts_number_text_in_the_callers_locale(w, app, tokens):
    body = new_deal(account=w.acme["id"], amount="1 234,5")
    created = api(app, tokens["ru"], "POST", "/opportunity", body)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["amount"] == "1234.50"
    account = api(app, tokens["en"], "POST", "/account", {"name": "Big Co", "employees": "400 000"})
    assert account.status_code == 201 and account.get_json()["employees"] == 400000


def test_the_api_and_the_python_api_refuse_with_the_same_message(w, app, tokens):
    refused = api(
        app, tokens["en"], "POST", "/opportunity", new_deal(account=w.acme["id"], amount="1,5")
    )
    assert refused.status_code == 422
    with pytest.raises(ValidationFailed) as caught:
        records_as(w, w.seller, "opportunity").create(new_deal(account=w.acme["id"], amount="1,5"))
    assert refused.get_json()["errors"]["amount"] == caught.value.errors["amount"]
    # when the schema refuses another member, the number's problem is listed all the same
    both = api(app, tokens["en"], "POST", "/account", {"name": "X", "employees": "many", "tags": 5})
    assert both.status_code == 422
    assert both.get_json()["errors"]["employees"] == ["expected a whole number"]
    assert "tags" in both.get_json()["errors"]


def test_json_decimals_stay_exact(w, app, tokens):
    # The largest amount a money column holds; read as a float it is 1e16, which the
    # column refuses as too large, so a 201 proves the digits arrived as they were sent.
    # (Each deal gets an account of its own: the account's pipeline rollup sums amounts.)
    def deal(account_name: str) -> str:
        account = records_as(w, w.seller, "account").create({"name": account_name})["id"]
        return (
            f'{{"name": "Exact", "close_date": "2026-12-31", "account": {account},'
            ' "amount": 9999999999999999.99}'
        )

    created = api(app, tokens["en"], "POST", "/opportunity", deal("Exact one"))
    assert created.status_code == 201, created.get_json()
    bulk = api(
        app, tokens["en"], "POST", "/opportunity/bulk", f'{{"records": [{deal("Exact two")}]}}'
    )
    assert bulk.status_code == 201, bulk.get_json()
    if w.store.engine.dialect.name == "postgresql":  # SQLite keeps NUMERIC as a double
        assert created.get_json()["amount"] == "9999999999999999.99"
        stored = w.store.records("opportunity").get(bulk.get_json()["created"][0])
        assert stored["amount"] == D("9999999999999999.99")
    # an exponent no Decimal holds is the infinity it always was: refused, not a crash
    huge = '{"name": "Huge", "employees": 1e99999999999999999999}'
    refused = api(app, tokens["en"], "POST", "/account", huge)
    assert refused.status_code == 422 and refused.get_json()["errors"]["employees"]


def test_the_openapi_document_says_numbers_take_text(app, tokens):
    response = app.test_client().get(
        "/api/v1/openapi.json", headers={"Authorization": f"Bearer {tokens['en']}"}
    )
    schemas = response.get_json()["components"]["schemas"]
    amount = schemas["opportunity.Input"]["properties"]["amount"]
    employees = schemas["account.Input"]["properties"]["employees"]
    assert amount["type"] == ["number", "string", "null"] and amount["minimum"] == 0
    assert employees["type"] == ["integer", "string", "null"]
    assert "1 234,5 in Russian" in amount["description"]
    assert "text read in the language" in response.get_json()["info"]["description"]


# ------------------------------------------------------------------------ forms
@pytest.fixture(scope="module")
def roman(app):
    return Client(app).login(RU_USER)


@pytest.fixture(scope="module")
def seller(app):
    return Client(app).login(SELLER)


def input_value(page: str, name: str) -> str:
    match = re.search(rf'<input[^>]*name="{name}" value="([^"]*)"', page)
    assert match, name
    return html.unescape(match.group(1))


def test_forms_show_numbers_and_phones_as_the_users_locale_writes_them(w, roman, seller):
    deal = records_as(w, w.roman, "opportunity").create(
        {"name": "Shown", "account": w.acme["id"], "close_date": "2026-12-31", "amount": "61829.35"}
    )
    ru_page = roman.get(f"/r/opportunity/{deal['id']}/edit").get_data(as_text=True)
    assert input_value(ru_page, "amount") == f"61{NBSP}829,35"
    assert input_value(ru_page, "probability") == "10"
    assert re.search(r'name="amount" value="[^"]*"[^>]*', ru_page)
    assert 'inputmode="decimal" id="f-amount"' in ru_page
    en_page = seller.get(f"/r/opportunity/{deal['id']}/edit").get_data(as_text=True)
    assert input_value(en_page, "amount") == "61,829.35"
    # what the page shows is posted back unchanged: the value stays the same
    form = [("_fields", "amount"), ("_version", str(deal["version"]))]
    response = roman.post(
        f"/r/opportunity/{deal['id']}", [*form, ("amount", input_value(ru_page, "amount"))]
    )
    assert response.status_code == 303
    assert w.store.records("opportunity").get(deal["id"])["amount"] == D("61829.35")

    account = records_as(w, w.roman, "account").create(
        {"name": "Phoned", "phone": "+12065550100", "employees": 12000}
    )
    page = roman.get(f"/r/account/{account['id']}/edit").get_data(as_text=True)
    assert input_value(page, "phone") == "+1 206-555-0100"
    assert input_value(page, "employees") == f"12{NBSP}000"


def test_a_russian_user_types_decimal_commas_and_an_english_one_is_told_why_not(w, roman, seller):
    form = [("_fields", n) for n in ("name", "account", "close_date", "amount")]
    values = [("name", "Запятая"), ("account", str(w.acme["id"])), ("close_date", "2027-02-01")]
    response = roman.post("/r/opportunity/new", [*form, *values, ("amount", "1 234,5")])
    assert response.status_code == 303
    ident = int(response.location.rsplit("/", 1)[1])
    assert w.store.records("opportunity").get(ident)["amount"] == D("1234.50")

    response = seller.post("/r/opportunity/new", [*form, *values, ("amount", "1,5")], htmx=True)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'value="1,5"' in page  # what was typed stays
    assert "digits are grouped wrongly: numbers look like 1,234,567.89" in html.unescape(page)


def summary(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'data-testid="form-error">([^<]*)<', page)]


def test_the_error_summary_names_each_field(w, roman, seller):
    form = [("_fields", n) for n in ("name", "account", "close_date")]
    response = seller.post("/r/opportunity/new", [*form, ("name", ""), ("account", "")], htmx=True)
    assert response.status_code == 422
    assert set(summary(response.get_data(as_text=True))) >= {
        "Name: required",
        "Account: required",
        "Close date: required",
    }
    response = roman.post("/r/opportunity/new", [*form, ("name", "")], htmx=True)
    assert "Название: обязательное поле" in summary(response.get_data(as_text=True))


def test_a_refused_stage_move_names_field_and_stage_in_the_users_language(w, roman):
    deal = records_as(w, w.roman, "opportunity").create(
        {"name": "Стадия", "account": w.acme["id"], "close_date": dt.date(2026, 12, 31)}
    )
    response = roman.post(
        f"/r/opportunity/{deal['id']}/stage",
        {"stage": "qualification", "_version": str(deal["version"])},
        htmx=True,
    )
    assert response.status_code == 422
    assert "Контакт: обязательно для стадии «Квалификация»" in summary(
        response.get_data(as_text=True)
    )


# ------------------------------------------------------------------------ filters in words
def filter_text(page: str) -> str:
    match = re.search(r'data-testid="filter-text"><i class="bi bi-funnel"></i> ([^<]*)<', page)
    return html.unescape(match.group(1)) if match else ""


def test_a_saved_views_filter_reads_as_a_sentence(w, roman, seller):
    flt = {"all": [["stage", "eq", "proposal"], ["amount", "ge", 10000]]}
    response = seller.post(
        "/views/open_opportunities/saved", {"name": "Big proposals", "filter": json.dumps(flt)}
    )
    saved = re.search(r"saved=(\d+)", response.location).group(1)
    page = seller.get(f"/views/open_opportunities?saved={saved}").get_data(as_text=True)
    assert filter_text(page) == "Stage is Proposal and Amount ≥ $10,000.00"
    assert '<details class="mt-2 small">' in page  # the filter language stays folded away

    flt = {
        "any": [
            ["account", "eq", w.acme["id"]],
            {"all": [["owner", "eq", "current_user"], ["close_date", "this_month"]]},
            ["name", "contains", "Рубли"],
        ]
    }
    url = "/views/open_opportunities?filter=" + json.dumps(flt)
    assert filter_text(seller.get(url).get_data(as_text=True)) == (
        "Account is Acme Corporation or (Owner is me and Close date is this month)"
        " or Name contains “Рубли”"
    )
    assert filter_text(roman.get(url).get_data(as_text=True)) == (
        "Контрагент: Acme Corporation или (Ответственный: я и Дата закрытия: в этом месяце)"
        " или Название содержит «Рубли»"
    )


def test_the_filter_builder_reads_numbers_as_the_user_writes_them(roman, seller):
    builder = "/views/open_opportunities?fb.field=amount&fb.op=ge&fb.value="
    page = roman.get(builder + "1 000,5").get_data(as_text=True)
    assert filter_text(page) == f"Сумма ≥ 1{NBSP}000,50{NBSP}$"
    refused = seller.get(builder + "1,5")
    assert refused.status_code == 302  # back to the plain list, saying why
    page = seller.get(refused.location).get_data(as_text=True)
    assert "digits are grouped wrongly" in html.unescape(page)


def test_filter_sentences_translate_every_word():
    from xrm.web.ui import filter_text

    with open(filter_text.__file__, encoding="utf-8") as file:
        source = file.read()
    used = set(re.findall(r'C\._\(\s*"([^"]+)"', source))
    assert used and not sorted(t for t in used if t not in i18n.RU)


# ------------------------------------------------------------------------ role pages
def test_role_pages_head_their_columns_with_translated_action_names(w, app):
    admin = Client(app).login(ADMIN)
    for path in ("/admin/roles", "/admin/roles/user"):
        page = admin.get(path).get_data(as_text=True)
        headers = re.findall(r'<th scope="col">([^<]*)</th>', page)
        assert headers[:4] == ["Create", "Read", "Update", "Delete"], path
    page = Client(app).login(RU_ADMIN).get("/admin/roles/user").get_data(as_text=True)
    headers = re.findall(r'<th scope="col">([^<]*)</th>', page)
    assert headers[:4] == ["Создание", "Чтение", "Изменение", "Удаление"]
