"""The pages under the Content-Security-Policy in a real browser: the API documentation
(swagger-ui), the rich-text editor (Trix, whose one <style> element carries the page's
nonce), the token and settings pages; and changing one's own password, which keeps this
browser signed in.  Any CSP refusal on any page fails the test (the ``visit`` fixture)."""

from __future__ import annotations

from .support import ADMIN, PASSWORD, READER, toast


def test_pages_work_under_the_content_security_policy(visit, site):
    page = visit.login(ADMIN)
    policy = page.request.get(visit.base + "/").headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy

    visit.go("/api/docs", "api documentation")
    page.wait_for_selector(".swagger-ui .information-container .title")
    assert page.locator(".swagger-ui .opblock-tag").count() > 0
    page.locator(".swagger-ui .opblock-tag").first.click()
    page.locator(".swagger-ui .opblock-summary").first.click()
    page.wait_for_selector(".swagger-ui .opblock-body")
    visit.shot("an operation opened")

    visit.go("/r/opportunity/new", "rich text editor")
    # Trix's own stylesheet got in by the nonce, so its editor is laid out and types text.
    assert page.locator("style[data-tag-name='trix-editor']").count() == 1
    page.get_by_role("tab", name="Details").click()
    page.click("trix-editor")
    page.keyboard.type("Typed under the policy")
    assert "Typed under the policy" in page.locator("trix-editor").inner_text()

    visit.go("/admin/tokens", "api tokens")
    assert page.locator("[data-testid=tokens-table]").is_visible()


def test_change_ones_own_password_and_stay_signed_in(visit, site):
    page = visit.login(READER)
    visit.go("/me", "settings")
    new_password = "a brand new passphrase"
    page.fill("#pw-current", PASSWORD)
    page.fill("#pw-new", new_password)
    page.fill("#pw-again", new_password)
    page.click("[data-testid=password-form] button[type=submit]")
    page.wait_for_load_state("networkidle")
    visit.shot("password changed")
    assert page.url.endswith("/me")
    toast(page, "Пароль изменён.")  # the confirmation, in the reader's Russian
    # still signed in: the settings page is shown, not the sign-in form
    assert page.locator("[data-testid=password-form]").is_visible()
    visit.go("/logout", "sign out")
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    visit.login(READER, new_password)
    assert page.url.rstrip("/") == visit.base
