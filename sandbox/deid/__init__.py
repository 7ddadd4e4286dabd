"""De-identification: PS3.15 Annex E profile, keyed pseudonyms, and the verification gate.

Public API::

    from lightbox.sandbox.deid import deidentify_file, deidentify_tree, verify_tree
"""

from lightbox.sandbox.deid.batch import DeidSummary, FileOutcome, deidentify_file, deidentify_tree
from lightbox.sandbox.deid.dicomio import DicomError
from lightbox.sandbox.deid.profile import OPTIONS, compile_profile
from lightbox.sandbox.deid.pseudonyms import KeyFileError, load_key, new_key
from lightbox.sandbox.deid.safe_private import SafePrivateList
from lightbox.sandbox.deid.verify import VerificationReport, Violation, verify_tree

__all__ = [
    "OPTIONS",
    "DeidSummary",
    "DicomError",
    "FileOutcome",
    "KeyFileError",
    "SafePrivateList",
    "VerificationReport",
    "Violation",
    "compile_profile",
    "deidentify_file",
    "deidentify_tree",
    "load_key",
    "new_key",
    "verify_tree",
]
