"""``lightbox evidence``: a region's signing key and its signed evidence exports (lightbox/federate.py)."""

from __future__ import annotations

import sys

from lightbox.federate import evidence_main as main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
