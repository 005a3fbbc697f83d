"""Small HTML renderings of results for notebooks (`_repr_html_` of the client's result models):
the attribution token heatmap and the attention head grid. Plain HTML and inline SVG, no script,
no network. Used by service/client.py only (the explorer page draws the same in JS)."""

from __future__ import annotations

from html import escape
from typing import Any

MAX_HEADS_SHOWN = 12
MAX_LAYERS_SHOWN = 8


def diverging(score: float, scale: float) -> str:
    """Blue (negative) - white - red (positive), saturated at |score| = scale."""
    t = max(-1.0, min(1.0, score / scale)) if scale > 0 else 0.0
    fade = int(round(255 * (1 - abs(t))))
    return f"rgb(255,{fade},{fade})" if t >= 0 else f"rgb({fade},{fade},255)"


def _token(t: str) -> str:
    shown = escape(t.replace("\n", "\\n"))
    return shown.replace(" ", "&#x2423;", 1) if t.startswith(" ") else shown  # a visible leading space


def attribution(result: dict[str, Any]) -> str:
    rows = []
    tokens = result["input_tokens"]
    spans = result.get("unit_spans")
    units = ["".join(tokens[a:b]) for a, b in spans] if spans else tokens
    for target, scores in zip(result["target_tokens"], result["scores"]):
        scale = max((abs(s) for s in scores), default=0.0) or 1.0
        cells = "".join(
            f'<span title="{escape(u)}: {s:+.4f}" style="background:{diverging(s, scale)};padding:1px 2px;'
            f'margin:1px;border-radius:2px;font-family:monospace">{_token(u)}</span>' for u, s in zip(units, scores))
        rows.append(f"<div style='margin:4px 0'><b>→ {_token(target)}</b> "
                    f"<span style='color:#666'>(max |score| {scale:.3g})</span><br>{cells}</div>")
    conv = result.get("convergence")
    note = ""
    if conv:
        err = ", ".join(f"{e:.3f}" for e in conv["relative_error"])
        note = f"<div style='color:#666'>IG: {conv['n_steps']} steps, completeness relative error {err}</div>"
    legend = ("<div style='color:#666;font-size:90%'>red: raises the target's "
              f"{escape(str(result.get('target_metric', 'score')))}, blue: lowers it; hover for the score</div>")
    return f"<div><b>attribution ({escape(result['method'])})</b>{''.join(rows)}{note}{legend}</div>"


def _matrix_svg(matrix: list[list[float]], size: int = 72) -> str:
    n = len(matrix)
    if n == 0:
        return ""
    cell = size / n
    peak = max((v for row in matrix for v in row), default=0.0) or 1.0
    rects = []
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v > 0:
                shade = int(round(255 * (1 - min(1.0, v / peak))))
                rects.append(f'<rect x="{j * cell:.2f}" y="{i * cell:.2f}" width="{cell:.2f}" height="{cell:.2f}" '
                             f'fill="rgb({shade},{shade},255)"/>')
    return (f'<svg width="{size}" height="{size}" style="border:1px solid #ccc">'
            f'{"".join(rects)}</svg>')


def attention(result: dict[str, Any]) -> str:
    layers = result.get("layers") or []
    if not layers:
        return "<div>attention: aggregated result (token_class); no maps to draw</div>"
    measure = "weights" if layers[0].get("weights") else "norms"
    rows = []
    for layer in layers[:MAX_LAYERS_SHOWN]:
        maps = layer.get(measure) or []
        cells = "".join(f"<td style='text-align:center;font-size:80%'>{_matrix_svg(m)}<br>H{h}</td>"
                        for h, m in zip(result["heads"], maps[:MAX_HEADS_SHOWN]))
        rows.append(f"<tr><th>L{layer['layer']}</th>{cells}</tr>")
    more = "" if len(layers) <= MAX_LAYERS_SHOWN else f"<div>… {len(layers) - MAX_LAYERS_SHOWN} more layers</div>"
    return (f"<div><b>attention {measure}</b> (rows: query token, columns: key token; darker = more) "
            f"over {len(result['tokens'])} tokens<table>{''.join(rows)}</table>{more}</div>")


RENDERERS = {"attribution": attribution, "attention": attention}


def render(kind: str, result: dict[str, Any]) -> str | None:
    """HTML for the kinds drawn here; None for others (the notebook falls back to repr)."""
    fn = RENDERERS.get(kind)
    return fn(result) if fn else None
