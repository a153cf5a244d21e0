"""Public web forms on the administration pages: each form's public address, the snippet
that embeds it in another site, how many posts it took and refused, whether it is on, and
what keeps it from taking submissions (its user missing, a captcha not registered)."""

from __future__ import annotations

from flask import render_template, url_for

from ...public_forms import counts, setup_problem
from .. import context as C
from . import bp


@bp.get("/web-forms")
def web_forms():
    store, catalog = C.store(), C.catalog()
    tallies = counts(store)
    rows = []
    for form in sorted(catalog.web_forms.values(), key=lambda f: C.label(f).lower()):
        entity = catalog.entity(form.entity)
        embed = url_for("public_forms.embed", name=form.name, _external=True)
        tally = tallies.get(form.name, {})
        rows.append(
            {
                "name": form.name,
                "label": C.label(form),
                "entity": C.label(entity),
                "submit_as": form.submit_as,
                "url": url_for("public_forms.page", name=form.name, _external=True),
                "snippet": f'<script src="{embed}" async></script>',
                "origins": form.allowed_origins,
                "rate_limit": form.rate_limit.text,
                "captcha": form.captcha,
                "enabled": form.enabled,
                "accepted": tally.get("accepted", 0),
                "invalid": tally.get("invalid", 0),
                "spam": tally.get("spam", 0),
                "limited": tally.get("limited", 0),
                "problem": setup_problem(store, catalog, form) if form.enabled else None,
                "solution": form.solution,
            }
        )
    return render_template("admin/web_forms.html", rows=rows)
