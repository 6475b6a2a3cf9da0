"""What an alert event looks like on each notification channel, and which channels an event is routed to.

A channel is a webhook row with a ``kind``: ``json`` (our signed body), ``slack`` (an incoming-webhook body,
``text`` plus ``blocks``; Mattermost and Rocket.Chat read the same), ``teams`` (an Office 365 connector
``MessageCard``, which Teams' incoming webhooks and its Workflows accept), or ``email`` (``mailto:`` URL, sent
through ``TWIN_SMTP_HOST``). Routing: an alert of at least ``min_severity`` on an asset in ``asset_group``.
"""

from __future__ import annotations

import json
from email.message import EmailMessage
from typing import Any

KINDS = ("json", "slack", "teams", "email")
SEVERITIES = ("low", "medium", "high", "critical")
GROUP_KEYS = ("site", "line", "type")
_COLOUR = {"low": "2E86C1", "medium": "F1C40F", "high": "E67E22", "critical": "C0392B"}


def check_group(group: str | None) -> str | None:
    """``site:<id>``, ``line:<id>`` or ``type:<id>``; ValueError naming the accepted forms otherwise."""
    if group is None:
        return None
    key, _, value = group.partition(":")
    if key not in GROUP_KEYS or not value:
        raise ValueError(f"asset_group {group!r}: expected site:<id>, line:<id> or type:<id>")
    return group


def routed(event: dict, min_severity: str, group: str | None, asset_groups: set[str]) -> bool:
    """Does a channel with this route take this event? ``asset_groups``: the alert's asset's groups."""
    severity = (event.get("alert") or {}).get("severity")
    if severity in SEVERITIES and SEVERITIES.index(severity) < SEVERITIES.index(min_severity):
        return False
    return group is None or group in asset_groups


def asset_groups(site: str | None, line: str | None, asset_type: str | None) -> set[str]:
    return {f"{k}:{v}" for k, v in zip(GROUP_KEYS, (site, line, asset_type), strict=True) if v}


def _summary(event: dict) -> tuple[str, dict[str, Any]]:
    a = event.get("alert") or {}
    what = str(event.get("event", "alert")).removeprefix("alert.")
    return f"[{str(a.get('severity', '?')).upper()}] {a.get('asset', '?')}: {a.get('title', '')} ({what})", a


def _facts(a: dict) -> list[tuple[str, str]]:
    return [("Asset", str(a.get("asset", ""))), ("Rule", str(a.get("rule", ""))),
            ("Severity", str(a.get("severity", ""))), ("State", str(a.get("state", ""))),
            ("Alert", str(a.get("id", "")))]


def chat_body(kind: str, event: dict) -> bytes:
    """The body of a Slack or Teams incoming webhook for one alert event."""
    title, a = _summary(event)
    facts = _facts(a)
    if kind == "slack":
        body: dict[str, Any] = {"text": title, "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in facts]}]}
    elif kind == "teams":
        body = {"@type": "MessageCard", "@context": "https://schema.org/extensions", "summary": title,
                "themeColor": _COLOUR.get(str(a.get("severity")), "808080"), "title": title,
                "sections": [{"facts": [{"name": k, "value": v} for k, v in facts]}]}
    else:
        raise ValueError(f"not a chat format: {kind}")
    return json.dumps(body, separators=(",", ":")).encode()


def email_message(sender: str, to: str, event: dict, delivery: int) -> EmailMessage:
    title, a = _summary(event)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, title
    msg["X-Twin-Delivery"] = str(delivery)
    lines = [title, "", *(f"{k}: {v}" for k, v in _facts(a)), "", "Evidence:",
             json.dumps(a.get("evidence", {}), indent=2, sort_keys=True, default=str)]
    msg.set_content("\n".join(lines))
    return msg
