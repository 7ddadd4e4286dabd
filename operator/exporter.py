"""Prometheus metrics of the operator, on their own registry.

A registry per operator instance (not prometheus-client's process-wide default)
keeps tests that start several operators in one process independent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lightbox.api.audit import Drift
from lightbox.api.results import ScoreReport
from lightbox.operator.runs import Capacity

_VERDICT_VALUE = {"Passed": 1.0, "Inconclusive": 0.5, "Failed": 0.0}
# Label names of the per-Validation series, in the order ``labels()`` and ``remove()`` take them.
_METRIC_LABELS = ("namespace", "validation", "metric", "bound")
_VERDICT_LABELS = ("namespace", "validation")
_DEGRADED_LABELS = ("namespace", "validation", "metric")
_SHIFT_LABELS = ("namespace", "validation", "dimension")

ActiveJobs = Callable[[], Mapping[str, Mapping[str, int]]]


class _ActiveJobsCollector(Collector):
    """lightbox_runs_active and lightbox_gpus_in_use per namespace, computed when scraped."""

    def __init__(self, source: ActiveJobs) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        # Scrapes run on the metrics server's thread while the event loop changes these dicts:
        # dict(d) of a dict copies it in one step under the GIL; iterating the live dict is not safe.
        snapshot = {namespace: dict(jobs) for namespace, jobs in dict(self._source()).items()}
        runs = GaugeMetricFamily("lightbox_runs_active", "Runs with a Job that has not finished, per namespace.",
                                 labels=["namespace"])
        gpus = GaugeMetricFamily("lightbox_gpus_in_use",
                                 "GPUs requested by runs with a Job that has not finished, per namespace.",
                                 labels=["namespace"])
        for namespace, jobs in sorted(snapshot.items()):
            runs.add_metric([namespace], len(jobs))
            gpus.add_metric([namespace], sum(jobs.values()))
        yield runs
        yield gpus


class Exporter:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.validation_metric = Gauge(
            "lightbox_validation_metric",
            "Latest metric of a validation: point estimate (bound=point) and confidence bounds (lower, upper).",
            _METRIC_LABELS,
            registry=self.registry,
        )
        self.validation_verdict = Gauge(
            "lightbox_validation_verdict",
            "Latest verdict: 1 Passed, 0.5 Inconclusive, 0 Failed.",
            _VERDICT_LABELS,
            registry=self.registry,
        )
        self.runs_total = Counter(
            "lightbox_runs_total", "Finished sandbox runs by reason (Succeeded or the failure reason).", ["reason"],
            registry=self.registry,
        )
        self.runs_queued = Gauge(
            "lightbox_runs_queued", "Runs waiting for a slot, per namespace.", ["namespace"], registry=self.registry
        )
        # Runs and GPUs held are read from the Job watch's count at each scrape: a gauge set
        # where a start is decided went stale as soon as the Job was created or finished.
        self._active_jobs: ActiveJobs = dict
        self.registry.register(_ActiveJobsCollector(lambda: self._active_jobs()))
        self.gpus_limit = Gauge(
            "lightbox_gpus_limit",
            "GPUs the namespace's SandboxPolicy lets its runs hold at once (maxGpusInUse; 0 without a policy).",
            ["namespace"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "lightbox_leader",
            "1 on the replica that acts (holds the leader Lease, or runs alone), 0 on a standby.",
            registry=self.registry,
        )
        self.namespace_isolated = Gauge(
            "lightbox_namespace_isolated",
            "1 when the last isolation probe in the namespace reached nothing, else 0.",
            ["namespace", "policy"],
            registry=self.registry,
        )

        self.validation_degraded = Gauge(
            "lightbox_validation_degraded",
            "1 when the latest run's metric lies wholly below its baseline (Degraded), 0 when compared and not.",
            _DEGRADED_LABELS,
            registry=self.registry,
        )
        self.validation_input_shift = Gauge(
            "lightbox_validation_input_shift",
            "Population stability index of the latest run's case mix against the baseline's, per cohort dimension "
            "(InputShift when above 0.25 and the chi-square test agrees).",
            _SHIFT_LABELS,
            registry=self.registry,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:  # noqa: S104  (scraped from other pods)
        server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return server.server_address[1]

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def record_report(self, namespace: str, validation: str, report: ScoreReport, verdict: str | None) -> None:
        for name, metric in report.metrics.items():
            self.validation_metric.labels(namespace, validation, name, "point").set(metric.value)
            if metric.lower is not None:
                self.validation_metric.labels(namespace, validation, name, "lower").set(metric.lower)
            if metric.upper is not None:
                self.validation_metric.labels(namespace, validation, name, "upper").set(metric.upper)
        if verdict in _VERDICT_VALUE:
            self.validation_verdict.labels(namespace, validation).set(_VERDICT_VALUE[verdict])

    def record_drift(self, namespace: str, validation: str, drift: Drift) -> None:
        degraded = {d.metric for d in drift.degraded}
        for metric in drift.compared:
            self.validation_degraded.labels(namespace, validation, metric).set(1.0 if metric in degraded else 0.0)
        for shift in drift.input_shift:
            self.validation_input_shift.labels(namespace, validation, shift.dimension).set(shift.psi)

    def record_finished(self, reason: str) -> None:
        self.runs_total.labels(reason).inc()

    def count_active_jobs(self, source: ActiveJobs) -> None:
        """Where runs and GPUs held come from: namespace -> {unfinished run Job: GPUs} (the scheduler's)."""
        self._active_jobs = source

    def record_capacity(self, namespace: str, capacity: Capacity) -> None:
        """The GPU limit a start decision in ``namespace`` saw (the governing policy's maxGpusInUse)."""
        self.gpus_limit.labels(namespace).set(capacity.max_gpus)

    def forget_validation(self, namespace: str, validation: str) -> None:
        """Drop every series of a deleted Validation, found through the collectors' public ``collect()``."""
        for collector, names in (
            (self.validation_metric, _METRIC_LABELS),
            (self.validation_verdict, _VERDICT_LABELS),
            (self.validation_degraded, _DEGRADED_LABELS),
            (self.validation_input_shift, _SHIFT_LABELS),
        ):
            stale = {
                tuple(sample.labels[name] for name in names)
                for family in collector.collect()
                for sample in family.samples
                if sample.labels.get("namespace") == namespace and sample.labels.get("validation") == validation
            }
            for values in stale:
                collector.remove(*values)

    def record_isolation(self, namespace: str, policy: str, isolated: bool) -> None:
        self.namespace_isolated.labels(namespace, policy).set(1.0 if isolated else 0.0)
