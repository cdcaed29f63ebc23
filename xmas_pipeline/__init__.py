"""xmas_pipeline: a holiday lead-nurture email campaign run by Dagster, with Notion as the CRM."""
