"""The one Definitions object: backends are picked from settings (environment variables)."""

import warnings

import dagster as dg

# Dagster warns that parts of its own API it calls while loading these definitions are "beta" or
# "preview" (dozens of lines in every run's log) - nothing an operator can act on. Filtered here,
# before anything below is imported or built, in every process that loads the code location.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

from xmas_pipeline.orchestration.assets import build_assets, build_funnel, build_overdue_check
from xmas_pipeline.orchestration.jobs import build_enroll_job, delivery_job
from xmas_pipeline.orchestration.resources import XmasResource
from xmas_pipeline.orchestration.schedules import build_delivery_schedule
from xmas_pipeline.orchestration.sensors import build_signup_sensor
from xmas_pipeline.settings import Settings, load_settings


def build_definitions(settings: Settings, resource: XmasResource | None = None) -> dg.Definitions:
    journeys = settings.journeys()
    assets = build_assets(journeys, settings)
    overdue = build_overdue_check(assets[-1], settings.delivery_cron)
    # Unpartitioned, downstream of the daily deliveries: each delivery run (whatever its day) refreshes it.
    assets.append(build_funnel(assets[-1], settings))
    daily = delivery_job(dg.AssetSelection.assets(*assets) | dg.AssetSelection.checks(overdue))
    enroll = build_enroll_job(settings.crm)
    return dg.Definitions(
        assets=assets,
        asset_checks=[overdue],
        jobs=[enroll, daily],
        sensors=[build_signup_sensor(settings.sensor_interval_s, enroll)],
        schedules=[build_delivery_schedule(daily, journeys, settings.delivery_cron)],
        resources={"xmas": resource or XmasResource.from_settings(settings, secrets_from_env=True)},
    )


defs = build_definitions(load_settings())
