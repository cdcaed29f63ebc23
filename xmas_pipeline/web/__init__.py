"""The intake web app (FastAPI): signup webhook, unsubscribe, provider webhooks, health. No Dagster here."""
