"""A process definition as an SVG flow chart: trigger, steps top to bottom, branches side
by side (if/else, approval outcomes, a wait's timeout), and the end.

Layout is computed bottom-up (each block knows its width and height), so the chart is
deterministic and needs no layout library or JavaScript.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from ..metadata.processes import BRANCHES, Process, Step

BOX_W, BOX_H, GAP, COLUMN_GAP, PAD = 220, 46, 28, 24, 20
COLORS = {
    "if": "#fff4d6",
    "wait": "#e8f0fe",
    "approval": "#fde7e9",
    "webhook": "#efe7fd",
    "notify": "#e6f4ea",
    "send_report": "#e6f4ea",
    "mass_email": "#e6f4ea",
    "start": "#f1f3f4",
    "stop": "#f1f3f4",
}


def _summary(step: Step) -> str:
    spec = step.spec
    if step.kind == "notify":
        to = spec["to"] if isinstance(spec["to"], str) else ", ".join(spec["to"])
        return f"notify {to}: {spec['template']}"
    if step.kind == "wait":
        if "for" in spec:
            return f"wait {spec['for']}"
        if "until" in spec:
            return f"wait until {spec['until']} {spec.get('offset', '')}".strip()
        return "wait for a condition" + (f" ({spec['timeout']} max)" if spec.get("timeout") else "")
    if step.kind == "create":
        return f"create {spec['entity']}"
    if step.kind == "activity":
        return f"{spec.get('entity', 'task')}: {spec['subject']}"
    if step.kind == "set":
        return "set " + ", ".join(spec)
    if step.kind == "update":
        return f"update {spec['related']}"
    if step.kind == "assign":
        return f"assign {spec.get('method', 'round_robin').replace('_', ' ')}"
    if step.kind == "approval":
        return f"approval ({spec.get('require', 'all')})"
    if step.kind == "webhook":
        return f"{spec.get('method', 'POST')} {spec['url']}"
    if step.kind == "start":
        return f"start {spec['process']}"
    if step.kind == "send_report":
        to = spec["to"] if isinstance(spec["to"], str) else ", ".join(spec["to"])
        what = f"report {spec['report']}" if "report" in spec else f"dashboard {spec['dashboard']}"
        return f"email {what} to {to}"
    if step.kind == "rescore":
        return f"score every {spec} again"
    if step.kind == "mass_email":
        return f"email every consenting {spec['entity']}: {spec['template']}"
    if step.kind == "if":
        return "if " + _condition_text(spec)
    return step.kind


def _condition_text(raw) -> str:
    if isinstance(raw, list | tuple):
        return " ".join(str(p) for p in raw)
    if isinstance(raw, dict) or hasattr(raw, "items"):
        ((key, value),) = raw.items()
        if key == "not":
            return "not (" + _condition_text(value) + ")"
        return f" {key} ".join("(" + _condition_text(v) + ")" for v in value)
    return str(raw)


def _text(step: Step) -> str:
    text = (
        step.label.get()
        if step.label
        else (step.name.replace("_", " ") if step.name else _summary(step))
    )
    return text if len(text) <= 34 else text[:33] + "…"


class _Block:
    def __init__(self, steps: tuple[Step, ...]):
        self.items = []
        width, height = BOX_W, 0
        for step in steps:
            branches = [
                (name, _Block(step.branches.get(name, ())))
                for name in BRANCHES.get(step.kind, ())
                if name in step.branches or step.kind == "if"
            ]
            if step.kind == "approval" and not branches:
                branches = []
            branch_width = sum(b.width for _, b in branches) + COLUMN_GAP * max(
                len(branches) - 1, 0
            )
            branch_height = max((b.height for _, b in branches), default=0)
            item_height = BOX_H + GAP + ((branch_height + GAP * 2) if branches else 0)
            self.items.append((step, branches, item_height))
            width = max(width, branch_width)
            height += item_height
        self.width = width
        self.height = height


def _trigger_text(process: Process) -> str:
    parts = []
    for t in process.triggers:
        if t.kind == "updated" and t.fields:
            parts.append("updated: " + ", ".join(t.fields))
        elif t.kind in ("enter_stage", "exit_stage"):
            parts.append(f"{t.kind.replace('_', ' ')}: {', '.join(t.stages)}")
        elif t.kind == "schedule":
            parts.append(f"schedule {t.cron}")
        elif t.kind == "date":
            parts.append(
                f"{t.date_field}"
                + (f" - {t.before_field}" if t.before_field else "")
                + (f" {t.offset:+d}s" if t.offset else "")
            )
        else:
            parts.append(t.kind)
    head = f"{process.entity}: " if process.entity else ""
    text = head + "; ".join(parts or ["started by another process"])
    return text if len(text) <= 40 else text[:39] + "…"


def diagram(process: Process) -> str:
    """The SVG document for one process."""
    block = _Block(process.steps)
    width = block.width + PAD * 2
    height = block.height + BOX_H * 2 + GAP * 2 + PAD * 2
    out: list[str] = []
    center = width / 2
    y = PAD
    _pill(out, center, y, _trigger_text(process), "#d2e3fc")
    y += BOX_H
    _line(out, center, y, center, y + GAP)
    y += GAP
    y = _draw(out, block, center, y)
    _pill(out, center, y, "end", "#f1f3f4")
    title = escape(process.label.get())
    # the label also sits in an attribute, where a quote would end it: escape quotes there
    title_attribute = escape(process.label.get(), {'"': "&quot;", "'": "&#x27;"})
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'font-family="system-ui, sans-serif" font-size="12" role="img" aria-label="{title_attribute}">'
        f"<title>{title}</title>"
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#5f6368"/></marker></defs>' + "".join(out) + "</svg>"
    )


def _draw(out: list[str], block: _Block, center: float, y: float) -> float:
    for step, branches, item_height in block.items:
        _box(
            out,
            center,
            y,
            _text(step),
            COLORS.get(step.kind, "#ffffff"),
            step.kind,
            diamond=step.kind == "if",
        )
        bottom = y + BOX_H
        if not branches:
            _line(out, center, bottom, center, bottom + GAP)
            y = bottom + GAP
            continue
        total = sum(b.width for _, b in branches) + COLUMN_GAP * (len(branches) - 1)
        left = center - total / 2
        top = bottom + GAP
        end = y + item_height - GAP
        for name, sub in branches:
            middle = left + sub.width / 2
            out.append(
                f'<path d="M {center:.1f} {bottom:.1f} V {bottom + GAP / 2:.1f} H {middle:.1f} V {top:.1f}" fill="none" stroke="#5f6368" marker-end="url(#arrow)"/>'
            )
            out.append(
                f'<text x="{middle + 4:.1f}" y="{bottom + GAP / 2 - 3:.1f}" fill="#5f6368">{escape(name.replace("_", " "))}</text>'
            )
            branch_end = _draw(out, sub, middle, top) if sub.items else top
            out.append(
                f'<path d="M {middle:.1f} {branch_end:.1f} V {end - GAP / 2:.1f} H {center:.1f}" fill="none" stroke="#5f6368"/>'
            )
            left += sub.width + COLUMN_GAP
        _line(out, center, end - GAP / 2, center, end + GAP)
        y = end + GAP
    return y


def _box(out, center, y, text, fill, kind, diamond=False) -> None:
    x = center - BOX_W / 2
    radius = 22 if diamond else 6
    out.append(
        f'<g class="step step-{kind}"><rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="{radius}" fill="{fill}" stroke="#5f6368"/>'
    )
    out.append(
        f'<text x="{center:.1f}" y="{y + 18:.1f}" text-anchor="middle" fill="#5f6368" font-size="10">{escape(kind)}</text>'
    )
    out.append(
        f'<text x="{center:.1f}" y="{y + 34:.1f}" text-anchor="middle" fill="#202124">{escape(text)}</text></g>'
    )


def _pill(out, center, y, text, fill) -> None:
    x = center - BOX_W / 2
    out.append(
        f'<g class="terminal"><rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="{BOX_H / 2}" fill="{fill}" stroke="#5f6368"/>'
    )
    out.append(
        f'<text x="{center:.1f}" y="{y + 28:.1f}" text-anchor="middle" fill="#202124">{escape(text)}</text></g>'
    )


def _line(out, x1, y1, x2, y2) -> None:
    out.append(
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#5f6368" marker-end="url(#arrow)"/>'
    )
