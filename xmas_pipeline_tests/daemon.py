"""Drive the real Definitions the way the Dagster daemon does: tick by tick, with a moving clock.

On each tick every sensor and schedule of the code location is evaluated against one persistent
instance (sensor cursors kept), each request becomes a queued run unless the daemon would refuse it
(a sensor's run key that already has a run, as `dagster/_daemon/sensor.py` does), and queued runs are
then executed in-process, enrollment first (it carries `dagster/priority`), with the campaign clock
pinned at the tick. Holding the queue (``hold=True``) models runs stuck behind a pool or a busy queue.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.events import DagsterEvent
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from xmas_pipeline.orchestration.resources import XmasResource
from xmas_pipeline.settings import Settings


@dataclass
class Launched:
    run_id: str
    job_name: str
    request: dg.RunRequest
    tags: dict
    at: dt.datetime


@dataclass
class DaemonSim:
    defs: dg.Definitions
    instance: dg.DagsterInstance
    settings_at: Callable[[dt.datetime], Settings]
    hold: bool = False
    cursors: dict[str, str | None] = field(default_factory=dict)
    queued: list[Launched] = field(default_factory=list)
    results: list[dg.ExecuteInProcessResult] = field(default_factory=list)
    skipped_keys: list[str] = field(default_factory=list)
    ticks: int = 0

    def resource(self, at: dt.datetime) -> XmasResource:
        return XmasResource.from_settings(self.settings_at(at))

    def tick(self, at: dt.datetime) -> None:
        """One daemon tick at ``at``: evaluate everything, queue what it asks for, run the queue."""
        self.ticks += 1
        resource = self.resource(at)
        repo = self.defs.get_repository_def()
        for sensor in repo.sensor_defs:
            context = dg.build_sensor_context(
                instance=self.instance, cursor=self.cursors.get(sensor.name), resources={"xmas": resource},
                definitions=self.defs, sensor_name=sensor.name,
            )
            data = sensor.evaluate_tick(context)
            self.cursors[sensor.name] = data.cursor
            for request in data.run_requests:
                if request.run_key and self._has_run(sensor.name, request.run_key):
                    self.skipped_keys.append(request.run_key)  # the daemon never launches a key twice
                    continue
                tags = {"dagster/sensor_name": sensor.name, **({"dagster/run_key": request.run_key} if request.run_key else {})}
                self._queue(request, request.job_name or sensor.job_name, tags, at)
        for schedule in repo.schedule_defs:
            context = dg.build_schedule_context(
                instance=self.instance, scheduled_execution_time=at, resources={"xmas": resource}, repository_def=repo
            )
            # The daemon holds one instance for its life; the test context would otherwise rebuild it
            # from its ref (and re-check its storage migrations) on every tick.
            context._instance = self.instance  # noqa: SLF001
            data = schedule.evaluate_tick(context)
            for request in data.run_requests or []:
                self._queue(request, schedule.job_name, {"dagster/schedule_name": schedule.name}, at)
        if not self.hold:
            self.run_queue(at)

    def _has_run(self, sensor_name: str, key: str) -> bool:
        records = self.instance.get_run_records(
            filters=dg.RunsFilter(tags={"dagster/run_key": key, "dagster/sensor_name": sensor_name})
        )
        return any(r.dagster_run.status != dg.DagsterRunStatus.NOT_STARTED for r in records)

    def _queue(self, request: dg.RunRequest, job_name: str, extra_tags: dict, at: dt.datetime) -> None:
        job = self.defs.resolve_job_def(job_name)
        tags = {**(request.tags or {}), **extra_tags}
        if request.partition_key:
            tags["dagster/partition"] = request.partition_key
        # A queued run must say where its code lives (the daemon's runs point at the workspace's location).
        origin = RemoteJobOrigin(
            repository_origin=RemoteRepositoryOrigin(
                code_location_origin=InProcessCodeLocationOrigin(
                    LoadableTargetOrigin(module_name="xmas_pipeline.definitions", attribute="defs"), location_name="xmas_pipeline"
                ),
                repository_name="__repository__",
            ),
            job_name=job_name,
        )
        run = self.instance.create_run_for_job(job, run_config=_plain(request.run_config), tags=tags, remote_job_origin=origin)
        # What the QueuedRunCoordinator does on submit: the run is QUEUED until the daemon dequeues it.
        self.instance.report_dagster_event(DagsterEvent.job_enqueue(run), run_id=run.run_id)
        self.queued.append(Launched(run.run_id, job_name, request, tags, at))

    def run_queue(self, at: dt.datetime) -> list[dg.ExecuteInProcessResult]:
        """Start every queued run (highest dagster/priority first), in-process, with the clock at ``at``."""
        if not self.queued:
            return []
        queue = sorted(self.queued, key=lambda q: -int(q.tags.get("dagster/priority", "0")))
        self.queued = []
        resource = self.resource(at)
        done = []
        for item in queue:
            # Dequeue and launch. (In-process execution makes its own run record, so the queued one goes;
            # the run key and tags carry over, which is what the sensor follows.)
            self.instance.delete_run(item.run_id)
            job = self.defs.resolve_job_def(item.job_name)
            result = job.execute_in_process(
                run_config=_plain(item.request.run_config), instance=self.instance, partition_key=item.request.partition_key,
                tags=item.tags, resources={"xmas": resource}, raise_on_error=False,
            )
            done.append(result)
        self.results.extend(done)
        return done

    def cancel_queued(self) -> None:
        """Cancel every queued run before it starts (an operator clears the queue)."""
        for item in self.queued:
            self.instance.report_run_canceled(self.instance.get_run_by_id(item.run_id), message="canceled while queued")
        self.queued = []

    def check_results(self, name: str) -> list[dg.AssetCheckEvaluation]:
        return [e for r in self.results for e in r.get_asset_check_evaluations() if e.check_name == name]


def definitions_for(settings: Settings) -> dg.Definitions:
    """The real definitions, with the resource holding the test's values instead of environment variables."""
    from xmas_pipeline.definitions import build_definitions

    return build_definitions(settings, resource=XmasResource.from_settings(settings))


def _plain(run_config) -> dict:
    if run_config is None:
        return {}
    return run_config.to_config_dict() if isinstance(run_config, dg.RunConfig) else dict(run_config)
