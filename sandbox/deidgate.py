"""The de-identification gate the stager and the Dataset verify step call.

The check itself is ``lightbox.sandbox.deid.verify_tree`` (PS3.15 Annex E with options).
This module loads it so that a verifier that fails to import stops staging (fail closed)
instead of being skipped. Reports carry keywords, tags and counts, never values.

There used to be a smaller check here that stood in while the deid package had no verifier;
the package exports one now, so there is nothing to fall back to: a missing verifier is
refused like a broken one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightbox.sandbox.deid.verify import VerificationReport


class VerifierUnavailable(RuntimeError):
    """The deid package's verifier cannot be loaded: fail closed."""


def load_verifier() -> tuple[Callable[..., VerificationReport], str]:
    """The deid package's verifier and its name; VerifierUnavailable when it cannot be loaded."""
    import lightbox.sandbox.deid as deid

    try:
        verifier: Callable[..., VerificationReport] = deid.verify_tree
    except (ImportError, AttributeError) as exc:
        raise VerifierUnavailable(f"the de-identification verifier failed to load: {exc}") from exc
    return verifier, "deid"


def verify_tree(root: Path | str, options: Iterable[str] = ()) -> VerificationReport:
    verifier, _ = load_verifier()
    return verifier(Path(root), list(options))


def error_count(report: VerificationReport) -> int:
    """Files the verifier could not read as DICOM."""
    return int(report.errors)
