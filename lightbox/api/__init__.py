"""The Lightbox API (group lightbox.dev, version v1alpha1): the single source of truth.

The CRDs in crds/ are generated from these models (``lightbox crds``), the
operator parses every object it reads through them, and the trusted sandbox
steps share the run layout and score report defined here.
"""

from lightbox.api.algorithm import Algorithm, AlgorithmSpec
from lightbox.api.approval import AlgorithmApproval, AlgorithmApprovalSpec
from lightbox.api.audit import AuditRecord, AuditRecordSpec
from lightbox.api.common import API_GROUP, API_VERSION, Condition, KubeObject
from lightbox.api.dataset import Dataset, DatasetSpec
from lightbox.api.policy import SandboxPolicy, SandboxPolicySpec
from lightbox.api.results import MetricValue, ScoreReport
from lightbox.api.validation import Validation, ValidationSpec

KINDS: tuple[type[KubeObject], ...] = (Algorithm, Dataset, Validation, SandboxPolicy, AuditRecord, AlgorithmApproval)

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "KINDS",
    "Algorithm",
    "AlgorithmApproval",
    "AlgorithmApprovalSpec",
    "AlgorithmSpec",
    "AuditRecord",
    "AuditRecordSpec",
    "Condition",
    "Dataset",
    "DatasetSpec",
    "KubeObject",
    "MetricValue",
    "SandboxPolicy",
    "SandboxPolicySpec",
    "ScoreReport",
    "Validation",
    "ValidationSpec",
]
