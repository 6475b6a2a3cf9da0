"""Alert webhooks: which addresses a webhook may reach, how a delivery is signed, and who delivers it.

A webhook URL is chosen by a tenant's admin, so it is hostile input aimed at our own network: every
address its host resolves to is checked (loopback, private, link-local, multicast, unspecified, reserved
and cloud-metadata addresses are refused unless ``TWIN_WEBHOOK_ALLOW`` admits them), at registration and
again at every delivery, and the delivery connects to the very address that was checked — no second DNS
lookup for a rebinding resolver to answer differently — with no proxy and no redirect followed.

Each tenant has its own delivery worker, so one tenant's hung endpoint delays only that tenant's alerts.
What is still to be delivered lives in the registry (``webhook_deliveries``: attempts, next try, last
error), so a restart, or another process, resumes it. The body carries its own ``sent_ns`` and
``delivery`` id under the HMAC, which lets a receiver refuse replays (README, "Webhooks").
"""

from cloud.webhooks.delivery import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliverySettings,
    Outcome,
    WebhookDispatcher,
    post,
    sign,
)
from cloud.webhooks.hooks import create, list_page, new_secret, remove, rotate, webhook_dict
from cloud.webhooks.targets import (
    METADATA_ADDRESSES,
    AddressPolicy,
    Target,
    WebhookRefused,
    WebhookUnresolved,
    forbidden_reason,
    parse_allow,
    redact,
    resolve,
)

__all__ = [
    "DELIVERY_HEADER", "EVENT_HEADER", "METADATA_ADDRESSES", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "AddressPolicy",
    "DeliverySettings", "Outcome", "Target", "WebhookDispatcher", "WebhookRefused", "WebhookUnresolved", "create",
    "forbidden_reason", "list_page", "new_secret", "parse_allow", "post", "redact", "remove", "resolve", "rotate",
    "sign", "webhook_dict",
]
