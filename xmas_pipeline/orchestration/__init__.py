"""The Dagster layer: resources, assets, checks, jobs, sensors and schedules. The only place dagster is imported."""
