"""The load–latency curve of `make bench-curve`: an SVG and a markdown table.

`points` is {scenario: [(connections, {"rps", "p50", "p99", "errors"}), ...]}, as
measure.py measures them. Two panels share the x axis, connections on a log scale:
throughput (answers with a 2xx or 3xx status) on the left, p50 (dashed) and p99 (solid)
latency of all answers, 503s included, on a log scale on the right.
"""

import math
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 1000, 480
TOP, PLOT_HEIGHT = 80, 300
PANELS = [80, 580]  # left edges
PLOT_WIDTH = 360
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
FONT = 'font-family="sans-serif" font-size="12"'
TITLE_FONT = 'font-family="sans-serif" font-size="15" font-weight="bold"'


def svg(points, title):
    connections = sorted({c for series in points.values() for c, _ in series})
    rps_top = nice_ceiling(max(r["rps"] for series in points.values() for _, r in series))
    latencies = [r[p] for series in points.values() for _, r in series for p in ("p50", "p99")]
    low = 10 ** math.floor(math.log10(max(min(latencies), 0.01)))
    high = 10 ** math.ceil(math.log10(max(latencies)))

    def x(left, c):
        span = math.log2(connections[-1]) - math.log2(connections[0]) or 1
        return left + (math.log2(c) - math.log2(connections[0])) / span * PLOT_WIDTH

    def y_rps(value):
        return TOP + PLOT_HEIGHT - value / rps_top * PLOT_HEIGHT

    def y_ms(value):
        span = math.log10(high) - math.log10(low)
        return TOP + PLOT_HEIGHT - (math.log10(max(value, low)) - math.log10(low)) / span * PLOT_HEIGHT

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}">',
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="30" text-anchor="middle" {TITLE_FONT}>{escape(title)}</text>']
    rps_ticks = [rps_top * i / 5 for i in range(6)]
    ms_ticks = [10 ** e for e in range(round(math.log10(low)), round(math.log10(high)) + 1)]
    panels = [(PANELS[0], "throughput, 2xx/3xx answers a second", rps_ticks, y_rps, lambda v: f"{v / 1000:g}k"),
              (PANELS[1], "latency, ms (log scale)", ms_ticks, y_ms, lambda v: f"{v:,g}")]
    for left, label, ticks, y, form in panels:
        out += axes(left, label, connections, ticks, y, form, x)
    for i, (name, series) in enumerate(points.items()):
        color = COLORS[i % len(COLORS)]
        out.append(line([(x(PANELS[0], c), y_rps(r["rps"])) for c, r in series], color))
        out.append(line([(x(PANELS[1], c), y_ms(r["p99"])) for c, r in series], color))
        out.append(line([(x(PANELS[1], c), y_ms(r["p50"])) for c, r in series], color, dashed=True))
        out.append(legend(PANELS[0] + i * 150, HEIGHT - 30, name, color))
    out.append(legend(PANELS[1], HEIGHT - 30, "p99", "#444"))
    out.append(legend(PANELS[1] + 110, HEIGHT - 30, "p50", "#444", dashed=True))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def axes(left, label, connections, ticks, y, form, x):
    bottom = TOP + PLOT_HEIGHT
    out = [f'<rect x="{left}" y="{TOP}" width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" '
           f'fill="none" stroke="#888"/>',
           f'<text x="{left + PLOT_WIDTH / 2}" y="{TOP - 12}" text-anchor="middle" {FONT} '
           f'font-weight="bold">{label}</text>',
           f'<text x="{left + PLOT_WIDTH / 2}" y="{bottom + 40}" text-anchor="middle" {FONT}>'
           f'connections (log scale)</text>']
    for c in connections:
        out.append(f'<line x1="{x(left, c):.1f}" y1="{TOP}" x2="{x(left, c):.1f}" y2="{bottom}" '
                   f'stroke="#eee"/>')
        out.append(f'<text x="{x(left, c):.1f}" y="{bottom + 18}" text-anchor="middle" {FONT}>'
                   f'{c:,}</text>')
    for tick in ticks:
        out.append(f'<line x1="{left}" y1="{y(tick):.1f}" x2="{left + PLOT_WIDTH}" '
                   f'y2="{y(tick):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 8}" y="{y(tick) + 4:.1f}" text-anchor="end" {FONT}>'
                   f'{form(tick)}</text>')
    return out


def line(xy, color, dashed=False):
    path = " ".join(f"{px:.1f},{py:.1f}" for px, py in xy)
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    dots = "".join(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}"/>' for px, py in xy)
    return f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>{dots}'


def legend(left, top, name, color, dashed=False):
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    return (f'<line x1="{left}" y1="{top}" x2="{left + 30}" y2="{top}" stroke="{color}" '
            f'stroke-width="2"{dash}/><text x="{left + 38}" y="{top + 4}" {FONT}>{escape(name)}</text>')


def nice_ceiling(value):
    """A round number at or above `value`, for the top of an axis of five steps."""
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 4, 5, 6, 8, 10) if step * power >= value)


def table(points):
    lines = ["| scenario | conns | req/s | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|---:|"]
    for name, series in points.items():
        for c, r in series:
            lines.append(f"| {name} | {c} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} "
                         f"| {r['errors']} |")
    return "\n".join(lines)
