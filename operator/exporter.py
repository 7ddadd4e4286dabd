"""Prometheus metrics of the operator, on their own registry.

A registry per operator instance (not prometheus-client's process-wide default)
keeps tests that start several operators in one process independent.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server

from lightbox.api.audit import Drift
from lightbox.api.results import ScoreReport
from lightbox.operator.runs import Capacity

_VERDICT_VALUE = {"Passed": 1.0, "Inconclusive": 0.5, "Failed": 0.0}
# Label names of the per-Validation series, in the order ``labels()`` and ``remove()`` take them.
_METRIC_LABELS = ("namespace", "validation", "metric", "bound")
_VERDICT_LABELS = ("namespace", "validation")
_DEGRADED_LABELS = ("namespace", "validation", "metric")
_SHIFT_LABELS = ("namespace", "validation", "dimension")


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
        self.runs_active = Gauge(
            "lightbox_runs_active", "Runs with a Job that has not finished, per namespace.", ["namespace"],
            registry=self.registry,
        )
        self.runs_queued = Gauge(
            "lightbox_runs_queued", "Runs waiting for a slot, per namespace.", ["namespace"], registry=self.registry
        )
        self.gpus_in_use = Gauge(
            "lightbox_gpus_in_use",
            "GPUs requested by runs with a Job that has not finished, per namespace.",
            ["namespace"],
            registry=self.registry,
        )
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

    def record_capacity(self, namespace: str, capacity: Capacity) -> None:
        """What a start decision in ``namespace`` saw: runs and GPUs held, and the policy's GPU limit."""
        self.runs_active.labels(namespace).set(capacity.active_runs)
        self.gpus_in_use.labels(namespace).set(capacity.gpus_in_use)
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
