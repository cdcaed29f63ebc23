"""From a rendered template to an OutgoingMessage: footer, unsubscribe headers, stable ids."""

from __future__ import annotations

import html as html_lib

from xmas_pipeline.campaign.journey import Journey, Trigger
from xmas_pipeline.campaign.rendering import Rendered
from xmas_pipeline.mail.base import OutgoingMessage
from xmas_pipeline.mail.message import message_id_for


def unsubscribe_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/u/{token}"


# Why this person gets this journey's mail: CASL wants the reader to see how we came to write.
WHY_YOU = {
    Trigger.SIGNUP: "you completed our assessment and asked for your results",
    Trigger.BOOKING_CREATED: "you booked a call with us",
    Trigger.NO_SHOW: "you booked a call with us",
    Trigger.CALL_OUTCOME_MAYBE: "you had a call with us",
    Trigger.PAYMENT_PAID: "you are a client of ours",
}


def _why(campaign: Journey) -> str:
    return f"You are receiving this because {WHY_YOU[campaign.trigger]} ({campaign.name})."


def _footer_text(campaign: Journey, unsub_url: str) -> str:
    sender = campaign.sender
    lines = [
        "--",
        _why(campaign),
        f"{sender.name} · {sender.postal_address}",
    ]
    if sender.website:
        lines.append(sender.website)
    lines.append(f"Unsubscribe (one click, no login): {unsub_url}")
    return "\n".join(lines)


def _footer_html(campaign: Journey, unsub_url: str) -> str:
    sender = campaign.sender
    esc = html_lib.escape
    website = f' · <a href="{esc(sender.website)}">{esc(sender.website)}</a>' if sender.website else ""
    return (
        '<hr style="border:none;border-top:1px solid #ddd;margin:32px 0 16px">'
        '<p style="font-size:12px;color:#666;line-height:1.5">'
        f"{esc(_why(campaign))}<br>"
        f"{esc(sender.name)} · {esc(sender.postal_address)}{website}<br>"
        f'<a href="{esc(unsub_url)}">Unsubscribe</a> with one click, no login needed.'
        "</p>"
    )


def compose(
    *,
    campaign: Journey,
    rendered: Rendered,
    to: str,
    key: str,
    unsub_url: str,
    token: str,
    tags: dict[str, str],
) -> OutgoingMessage:
    """The message every sender gets; RFC 8058 headers and a CASL footer are added here, not by templates."""
    sender = campaign.sender
    list_unsubscribe = f"<{unsub_url}>"
    if sender.unsubscribe_mailto:
        list_unsubscribe += f", <mailto:{sender.unsubscribe_mailto}?subject=unsubscribe-{token}>"
    html_body = f'<div style="font-family:Georgia,serif;max-width:600px">{rendered.html}{_footer_html(campaign, unsub_url)}</div>'
    return OutgoingMessage(
        key=key,
        to=to,
        from_=sender.formatted,
        reply_to=str(sender.reply_to) if sender.reply_to else None,
        subject=rendered.subject,
        text=f"{rendered.text}\n\n{_footer_text(campaign, unsub_url)}\n",
        html=html_body,
        message_id=message_id_for(key, sender.domain),
        headers={
            "List-Unsubscribe": list_unsubscribe,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        tags=tags,
    )
