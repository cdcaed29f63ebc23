"""Local durable state: the inbound queue, the CRM mirror, the delivery ledger, suppressions, consent."""
