"""Small server-rendered SVG charts (no JavaScript, no CDN): every text is escaped."""

from __future__ import annotations

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 600, 160, 30


def duration_chart(points: list[tuple[str, float, str]]) -> Markup:
    """Durations over time as bars, oldest left: ``points`` are (label, seconds, state)."""
    if not points:
        return Markup("<p><em>No finished run yet.</em></p>")
    top = max(seconds for _, seconds, _ in points) or 1.0
    step = (WIDTH - 2 * PAD) / len(points)
    bars = []
    for index, (label, seconds, state) in enumerate(points):
        height = (HEIGHT - 2 * PAD) * seconds / top
        x, y = PAD + index * step, HEIGHT - PAD - height
        bars.append(
            Markup(
                '<rect class="bar state-{}" x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}">'
                "<title>{}: {:.2f} s</title></rect>"
            ).format(state, x, y, max(step - 1, 1), max(height, 1), label, seconds)
        )
    axis = Markup('<text x="2" y="{}" font-size="11">{}</text><text x="2" y="{}" font-size="11">0 s</text>').format(
        PAD, escape(f"{top:.1f} s"), HEIGHT - PAD
    )
    return Markup(
        '<svg class="duration-chart" role="img" aria-label="run durations" viewBox="0 0 {w} {h}" width="{w}" height="{h}">'
        '<line x1="{p}" y1="{b}" x2="{r}" y2="{b}" stroke="#adb5bd"/>{axis}{bars}</svg>'
    ).format(w=WIDTH, h=HEIGHT, p=PAD, b=HEIGHT - PAD, r=WIDTH - PAD, axis=axis, bars=Markup("").join(bars))
