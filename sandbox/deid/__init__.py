"""De-identification: PS3.15 Annex E profile, keyed pseudonyms, and the verification gate.

Public API::

    from lightbox.sandbox.deid import deidentify_file, deidentify_tree, verify_tree

Names resolve on first use, so ``lightbox deid`` does not pay for importing the
verifier's pydantic models (start-up time is a visible share of a run).
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs start-up time

_EXPORTS: dict[str, str] = {
    "DeidSummary": "batch",
    "FileOutcome": "batch",
    "deidentify_file": "batch",
    "deidentify_tree": "batch",
    "DicomError": "dicomio",
    "OPTIONS": "profile",
    "compile_profile": "profile",
    "KeyFileError": "pseudonyms",
    "load_key": "pseudonyms",
    "new_key": "pseudonyms",
    "SafePrivateList": "safe_private",
    "VerificationReport": "verify",
    "Violation": "verify",
    "verify_file": "verify",
    "verify_tree": "verify",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # re-exports for type checkers; at run time names resolve lazily
    from typing import Any

    from lightbox.sandbox.deid.batch import DeidSummary, FileOutcome, deidentify_file, deidentify_tree  # noqa: F401
    from lightbox.sandbox.deid.dicomio import DicomError  # noqa: F401
    from lightbox.sandbox.deid.profile import OPTIONS, compile_profile  # noqa: F401
    from lightbox.sandbox.deid.pseudonyms import KeyFileError, load_key, new_key  # noqa: F401
    from lightbox.sandbox.deid.safe_private import SafePrivateList  # noqa: F401
    from lightbox.sandbox.deid.verify import VerificationReport, Violation, verify_file, verify_tree  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
