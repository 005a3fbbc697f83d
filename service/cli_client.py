"""`lantern submit | jobs | get | cancel | models`: the API from a terminal, on service/client.py.

    lantern submit attribution --model smollm2-135m --prompt "When Mary and John ..." --target " Mary" --wait
    lantern submit logit_lens --model smollm2-135m --input '{"prompt": "..."}' --params '{"top_k": 3}' --wait --json
    lantern jobs          lantern get ID [--wait]          lantern cancel ID          lantern models

Configured by LANTERN_URL (default http://127.0.0.1:8000) and LANTERN_API_KEY. While waiting, a
progress bar on stderr; a finished attribution prints a token heatmap (ANSI 256-colour
backgrounds: red raises the target, blue lowers it), other kinds print their result as JSON.
`--json` prints the job view as JSON instead. Exit status: 0 finished (or not waited for), 1 the
job failed or was canceled, 2 an API error (its problem printed on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from service.client import Client, Job, LanternError

COMMANDS = ("submit", "jobs", "get", "cancel", "models")


def ansi_bg(score: float, scale: float) -> int:
    """An xterm-256 colour cube index: white at 0, red (positive) / blue (negative) at |score| = scale."""
    t = max(-1.0, min(1.0, score / scale)) if scale > 0 else 0.0
    fade = round(5 * (1 - abs(t)))
    r, g, b = (5, fade, fade) if t >= 0 else (fade, fade, 5)
    return 16 + 36 * r + 6 * g + b


def heatmap(result: dict[str, Any], color: bool = True) -> str:
    """Each target token's line of input tokens, coloured by score, then the scores themselves."""
    tokens = result["input_tokens"]
    spans = result.get("unit_spans")
    units = ["".join(tokens[a:b]) for a, b in spans] if spans else tokens
    lines = [f"attribution ({result['method']}, {result['target_metric']}): red raises the target, blue lowers it"]
    for target, scores in zip(result["target_tokens"], result["scores"]):
        scale = max((abs(s) for s in scores), default=0.0) or 1.0
        shown = [u.replace("\n", "\\n") for u in units]
        if color:
            row = "".join(f"\x1b[48;5;{ansi_bg(s, scale)}m\x1b[30m{u}\x1b[0m" for u, s in zip(shown, scores))
        else:
            row = " ".join(f"[{u}]" for u in shown)
        lines.append(f"→ {target!r}: {row}")
        lines.append("   " + "  ".join(f"{u.strip() or repr(u)}={s:+.3f}" for u, s in zip(shown, scores)))
    conv = result.get("convergence")
    if conv:
        lines.append(f"IG completeness relative error: {', '.join(f'{e:.3f}' for e in conv['relative_error'])} "
                     f"({conv['n_steps']} steps)")
    for w in result.get("warnings") or []:
        lines.append(f"warning {w['type']}: {w['detail']}")
    return "\n".join(lines)


class ProgressBar:
    """One line on stderr, redrawn on each change: status, queue position, a 30-cell bar."""

    def __init__(self, stream=sys.stderr, width: int = 30):
        self.stream, self.width = stream, width

    def __call__(self, job: Job) -> None:
        p = job.progress or 0.0
        filled = int(round(p * self.width))
        queued = job.status == "queued" and job.queue_position is not None
        where = f" (queue position {job.queue_position})" if queued else ""
        self.stream.write(f"\r{job.id[:12]} [{'#' * filled}{'.' * (self.width - filled)}] {p * 100:5.1f}% "
                          f"{job.status}{where}   ")
        if job.done:
            self.stream.write("\n")
        self.stream.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lantern", description="Lantern API client (LANTERN_URL, LANTERN_API_KEY)")
    parser.add_argument("--url", default=None, help="API base URL (default: LANTERN_URL or http://127.0.0.1:8000)")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit", help="submit a job")
    s.add_argument("kind")
    s.add_argument("--model", required=True)
    s.add_argument("--input", type=json.loads, default=None, help="the input as JSON")
    s.add_argument("--params", type=json.loads, default=None, help="the params as JSON")
    s.add_argument("--prompt", help="shorthand for input.prompt")
    s.add_argument("--target", help="shorthand for input.target")
    s.add_argument("--idempotency-key", default=None)
    s.add_argument("--wait", action="store_true", help="wait for the job to end (long polling)")
    s.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
    s.add_argument("--json", action="store_true", help="print the job view as JSON")
    j = sub.add_parser("jobs", help="list recent jobs")
    j.add_argument("--limit", type=int, default=20)
    j.add_argument("--json", action="store_true")
    g = sub.add_parser("get", help="show one job")
    g.add_argument("id")
    g.add_argument("--wait", action="store_true")
    g.add_argument("--timeout", type=float, default=None)
    g.add_argument("--json", action="store_true")
    c = sub.add_parser("cancel", help="cancel a job")
    c.add_argument("id")
    m = sub.add_parser("models", help="list models")
    m.add_argument("--json", action="store_true")
    return parser


def _show(job: Job, as_json: bool, out) -> int:
    if as_json:
        out.write(json.dumps(job.view, indent=2) + "\n")
    elif job.status == "finished" and job.kind == "attribution":
        out.write(heatmap(job.view["result"], color=out.isatty() or _force_color()) + "\n")
    elif job.status == "finished":
        out.write(json.dumps(job.view["result"], indent=2) + "\n")
    elif job.status in ("failed", "canceled"):
        err = job.view.get("error") or {}
        out.write(f"{job.id} {job.status}: {err.get('title', '')}: {err.get('detail', '')}\n")
    else:
        pos = f", queue position {job.queue_position}" if job.queue_position is not None else ""
        out.write(f"{job.id} {job.kind} on {job.model}: {job.status}, progress {job.progress or 0:.0%}{pos}\n")
    return 1 if job.status in ("failed", "canceled") else 0


def _force_color() -> bool:
    import os

    return os.environ.get("FORCE_COLOR", "") not in ("", "0")


def main(argv: list[str], out=None) -> int:
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    client = Client(args.url)
    try:
        if args.command == "submit":
            data = dict(args.input or {})
            for field in ("prompt", "target"):
                if getattr(args, field) is not None:
                    data[field] = getattr(args, field)
            job = client.submit(args.kind, args.model, data, args.params, idempotency_key=args.idempotency_key)
            if args.wait:
                job.wait(args.timeout, on_progress=None if args.json else ProgressBar())
            return _show(job, args.json, out)
        if args.command == "get":
            job = client.job(args.id)
            if args.wait:
                job.wait(args.timeout, on_progress=None if args.json else ProgressBar())
            return _show(job, args.json, out)
        if args.command == "cancel":
            job = client.cancel(args.id)
            out.write(f"{job.id}: {job.status}{' (cancel requested)' if job.view.get('cancel_requested') else ''}\n")
            return 0
        if args.command == "jobs":
            jobs = client.jobs(limit=args.limit)
            if args.json:
                out.write(json.dumps([j.view for j in jobs], indent=2) + "\n")
            for j in [] if args.json else jobs:
                out.write(f"{j.id}  {j.kind:<20} {j.model:<14} {j.status:<9} {(j.progress or 0):5.0%}  "
                          f"{j.view.get('created_at') or ''}\n")
            return 0
        models = client.models()
        if args.json:
            out.write(json.dumps(models, indent=2) + "\n")
        for m in [] if args.json else models:
            out.write(f"{m['id']:<16} {m['task']:<10} workers={m['workers']}  layers={m.get('n_layers')} "
                      f"heads={m.get('n_heads')}  {m.get('architecture') or ''}\n")
        return 0
    except LanternError as e:
        sys.stderr.write(f"error: {e}\n{json.dumps(e.problem, indent=2)}\n")
        return 2
    except TimeoutError as e:
        sys.stderr.write(f"\n{e}\n")
        return 1
    finally:
        client.close()
