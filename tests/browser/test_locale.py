"""Numbers in the user's language in a real browser: a Russian user finds an amount shown
as "1 200,50" in the form, types a new one with a decimal comma, saves it, and reads a
list's advanced filter as a sentence instead of JSON."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from urllib.parse import quote

from .support import PASSWORD

OLGA = "olga@example.com"
NBSP = "\u00a0"


def test_a_russian_user_reads_and_types_amounts_her_way(visit, site):
    olga = site.store.add_user(
        OLGA, "Ольга", password=PASSWORD, roles=["user"], teams=["east"], locale="ru"
    )
    deal = site.store.records("opportunity", principal=site.store.principal(olga)).create(
        {
            "name": "Сделка Ольги",
            "account": site.acme["id"],
            "close_date": dt.date.today() + dt.timedelta(days=15),
            "amount": Decimal("1200.50"),
        }
    )
    page = visit.login(OLGA)
    visit.go(f"/r/opportunity/{deal['id']}/edit", "amount in Russian")
    assert page.input_value("#f-amount") == f"1{NBSP}200,50"
    assert page.get_attribute("#f-amount", "inputmode") == "decimal"

    page.fill("#f-amount", "2 500,75")
    with page.expect_navigation():
        page.click('[data-testid="save-stay"]')
    page.wait_for_load_state("networkidle")
    visit.shot("saved with a decimal comma")
    assert site.store.records("opportunity").get(deal["id"])["amount"] == Decimal("2500.75")
    assert page.input_value("#f-amount") == f"2{NBSP}500,75"

    flt = quote(json.dumps({"all": [["stage", "eq", "prospecting"], ["amount", "ge", 1000]]}))
    visit.go(f"/views/open_opportunities?filter={flt}", "filter in words")
    sentence = page.locator('[data-testid="filter-text"]').inner_text().replace(NBSP, " ")
    assert sentence.strip() == "Стадия: Поиск и Сумма ≥ 1 000,00 $"
    assert not page.locator('[data-testid="filter-json"]').is_visible()
