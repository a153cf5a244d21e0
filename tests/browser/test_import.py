"""Import in a real browser: a CSV uploaded from the list's Import button, two columns
mapped by hand, the preview naming the row whose contact exists already (by the
duplicate rule ticked), then the import run with its progress, skipping that row."""

from __future__ import annotations

from test_import import numbered_people, stopped_halfway

from .support import SELLER, settled


def test_import_a_csv_with_a_mapping_and_a_duplicate_found(visit, site, tmp_path):
    page = visit.login(SELLER)
    store = site.store
    before = store.records("contact").count().value
    path = tmp_path / "people.csv"
    path.write_text(
        "Surname;E-mail;Company\n"
        "Doe;Jane@Acme-Corp.com;Acme Corporation\n"
        "Moss;maurice.moss@example.com;Globex\n",
        encoding="utf-8",
    )
    visit.go("/e/contact", "contacts")
    page.click('[data-testid="import-records"]')
    page.set_input_files("#import-file", str(path))
    page.click('[data-testid="import-upload-submit"]')
    # The preview page's mapping reacts to a change once htmx has bound it: a choice made
    # while its scripts still load would go unnoticed.
    page.wait_for_load_state("networkidle")
    problems = page.locator('[data-testid="import-problems"]')
    problems.wait_for()
    assert "last_name" in problems.inner_text() or "Last name" in problems.inner_text()
    assert page.locator('[data-testid="import-run"]').is_disabled()

    page.select_option('[data-testid="map-Surname"]', "last_name")
    problems.wait_for(state="detached")
    settled(page)
    page.select_option('[data-testid="map-Company"]', "account")
    page.locator('[data-testid="import-preview"] th', has_text="Company").wait_for()
    settled(page)
    page.check('[data-testid="dedupe-same_email"]')
    duplicate = page.locator('[data-testid="preview-row-2"] [data-testid="preview-duplicate"]')
    duplicate.wait_for()
    visit.shot("preview with a duplicate")
    assert "Jane Doe" in duplicate.inner_text()
    assert duplicate.locator("a").get_attribute("href").endswith(f"/r/contact/{site.jane['id']}")
    assert "will be created" in page.locator('[data-testid="preview-row-3"]').inner_text()
    assert store.records("contact").count().value == before  # nothing written by the preview

    page.click('[data-testid="import-run"]')
    done = page.locator('[data-testid="import-done"]')
    done.wait_for()
    visit.shot("import done")
    assert "1 created, 0 updated, 1 skipped as duplicates, 0 rejected" in done.inner_text()
    moss = store.records("contact").query(filter=["last_name", "eq", "Moss"]).rows
    assert moss[0]["account"] == site.globex["id"] and moss[0]["owner"] == site.seller
    assert store.records("contact").count().value == before + 1


def test_a_stopped_partial_import_continues_from_the_page(visit, site, tmp_path):
    """An import of the good rows that stopped halfway (two chunks committed) is offered
    to continue after its last committed row; continuing writes only the rest."""
    page = visit.login(SELLER)
    store = site.store
    path = tmp_path / "long.csv"
    path.write_text(numbered_people("Later"), encoding="utf-8")
    stopped_halfway(store, path, principal=store.principal(site.seller))

    def count() -> int:
        return store.records("contact").count(["last_name", "starts_with", "Later"]).value

    assert count() == 10
    visit.go("/e/contact/import", "import")
    page.set_input_files("#import-file", str(path))
    page.click('[data-testid="import-upload-submit"]')
    page.wait_for_load_state("networkidle")  # htmx bound, as above
    page.locator('[data-testid="import-preview"]').wait_for()
    page.check("#import-partial")
    notice = page.locator('[data-testid="import-stopped"]')
    notice.wait_for()
    assert "stopped after row 11" in notice.inner_text()
    assert page.locator('[data-testid="import-resume"]').is_checked()
    visit.shot("a stopped import offered to continue")
    page.click('[data-testid="import-run"]')
    done = page.locator('[data-testid="import-done"]')
    done.wait_for()
    assert "Continued after row 11" in done.inner_text()
    assert "15 created" in done.inner_text()
    assert count() == 25
