"""Numbers as pictures: the figures of today, and small inline SVG charts rendered on the server."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from markupsafe import Markup, escape
from sqlalchemy.engine import Connection

from orderstream.dashboard import board, bridges
from orderstream.dashboard.users import User
from orderstream.orders.models import order_history


@dataclass(frozen=True)
class Figures:
    """Today's numbers for the user's locations."""

    orders_per_hour: list[tuple[str, float]]  # local hour "00".."23" -> orders placed
    on_time: tuple[int, int]  # (delivered on time, delivered with a promised time)
    fee_by_provider: list[tuple[str, float]] | None  # None: dispatch not installed
    redispatch: tuple[int, int] | None  # (orders with more than one attempt, orders with attempts)


def bar_chart(
    values: list[tuple[str, float]], *, title: str, unit: str = "", width: int = 720, height: int = 220
) -> Markup:
    """A vertical bar chart as an inline SVG (labels under the bars, values above)."""
    pad_left, pad_bottom, pad_top = 8, 22, 16
    inner_h = height - pad_bottom - pad_top
    top = max((v for _, v in values), default=0) or 1
    step = (width - pad_left) / max(len(values), 1)
    bar_w = max(step * 0.7, 2)
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{pad_left}" y1="{height - pad_bottom}" x2="{width}" y2="{height - pad_bottom}"/>',
    ]
    for i, (label, value) in enumerate(values):
        h = inner_h * value / top
        x = pad_left + i * step + (step - bar_w) / 2
        y = height - pad_bottom - h
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
            f"<title>{escape(label)}: {value:g}{escape(unit)}</title></rect>"
        )
        if value:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle">{value:g}</text>')
        parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - 6}" text-anchor="middle">{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def rate_bar(part: int, whole: int, *, title: str, width: int = 320, height: int = 28) -> Markup:
    """A horizontal bar filled to part/whole, with the percentage (or 'no data')."""
    share = part / whole if whole else 0.0
    text = f"{share:.0%} ({part}/{whole})" if whole else "no data yet"
    return Markup(
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}: {text}">'
        f"<title>{escape(title)}</title>"
        f'<rect x="0" y="4" width="{width}" height="{height - 8}" rx="4" fill="#e1e4ea"/>'
        f'<rect class="bar" x="0" y="4" width="{width * share:.1f}" height="{height - 8}" rx="4"/>'
        f'<text x="{width - 6}" y="{height / 2 + 4:.0f}" text-anchor="end" style="fill:#1d2330">{text}</text></svg>'
    )


def _completed_at(conn: Connection, order_ids: list[str]) -> dict[str, datetime]:
    if not order_ids:
        return {}
    rows = conn.execute(
        sa.select(order_history.c.order_id, sa.func.min(order_history.c.at))
        .where(order_history.c.order_id.in_(order_ids), order_history.c.to_status == "completed")
        .group_by(order_history.c.order_id)
    ).all()
    out: dict[str, datetime] = {}
    for order_id, at in rows:
        # min() over a column loses its type on SQLite: the value may come back as text
        value = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
        out[order_id] = value if value.tzinfo else value.replace(tzinfo=ZoneInfo("UTC"))
    return out


def figures(conn: Connection, user: User, *, now: datetime, location_id: int | None = None) -> Figures:
    """Today's figures (each location's own day) for the user's locations."""
    today = board.today_select(conn, user, now=now, location_id=location_id)
    rows = list(conn.execute(today).mappings()) if today is not None else []
    hours: Counter[str] = Counter()
    for row in rows:
        placed = row["placed_at"] or row["created_at"]
        hours[placed.astimezone(ZoneInfo(row["location_timezone"])).strftime("%H")] += 1
    per_hour = [(f"{h:02d}", float(hours.get(f"{h:02d}", 0))) for h in range(24)]
    delivery_ids = [r["id"] for r in rows if r["fulfillment_type"] in ("delivery", "merchant_managed_delivery")]
    infos = bridges.delivery_info(conn, delivery_ids)
    done = _completed_at(conn, delivery_ids)
    on_time = total = 0
    for row in rows:
        info = infos.get(row["id"])
        promised = info.promised_at if info is not None and info.promised_at else row["requested_for"]
        if row["id"] in done and promised is not None:
            total += 1
            on_time += done[row["id"]] <= promised
    return Figures(
        orders_per_hour=per_hour,
        on_time=(on_time, total),
        fee_by_provider=bridges.fee_by_provider(conn, delivery_ids),
        redispatch=bridges.redispatch_counts(conn, delivery_ids),
    )
