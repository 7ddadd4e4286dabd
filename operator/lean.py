"""Keep the Kubernetes client packages' generated code out of the operator process.

Measured on ``import lightbox.operator.handlers`` (docs/performance.md): kopf imports the
synchronous ``kubernetes`` client and ``kubernetes_asyncio.client``, when installed, only
to recognise their model objects among a handler's arguments
(``kopf/_cogs/helpers/thirdparty.py``); this operator passes none. Both packages'
``__init__`` import every generated model and API class: 32 MiB and 31 MiB resident.
The operator needs, of kubernetes_asyncio, only its credential loading
(``kubernetes_asyncio.config`` and ``client.configuration.Configuration``).

kopf has no setting for its probes. ``keep_out`` is called once, before kopf is imported,
by the process entry (``main``), never on import:

* ``kubernetes``: a None entry in ``sys.modules`` makes its import fail as if it were not
  installed (the import system's documented rule), which kopf handles.
* ``kubernetes_asyncio`` and its ``client`` package are registered with their real folders
  but without running their ``__init__``: submodules (``config``, ``client.configuration``)
  import as usual, ``client.Configuration`` resolves on first use, and kopf's probe for
  ``client.V1ObjectMeta`` finds nothing, as if the package had no models. This is what
  the upstream client's lazy-import regeneration does (kubernetes-client/python #2647);
  ``tests/unit/test_operator_imports.py`` runs the client's tests with it in place.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

NOT_INSTALLED = ("kubernetes",)
LAZY_PACKAGES = ("kubernetes_asyncio", "kubernetes_asyncio.client")


class _ApiClientNotLoaded:
    """``kubernetes_asyncio.config.kube_config`` imports the name; the operator never builds one."""

    def __init__(self, *_: Any, **__: Any) -> None:
        raise RuntimeError("kubernetes_asyncio's ApiClient is not loaded in the operator: use lightbox.operator.kube")


def _client_attribute(name: str) -> Any:
    if name == "Configuration":
        return importlib.import_module("kubernetes_asyncio.client.configuration").Configuration
    if name == "ApiClient":
        return _ApiClientNotLoaded
    raise AttributeError(f"kubernetes_asyncio.client.{name} is not loaded in the operator (lightbox.operator.lean)")


def keep_out() -> None:
    """Install the above; a no-op for a package already imported (its real module stays)."""
    for name in NOT_INSTALLED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: the import system's "absent"
    if any(name in sys.modules for name in LAZY_PACKAGES):
        return
    spec = importlib.util.find_spec("kubernetes_asyncio")
    if spec is None or not spec.submodule_search_locations:
        return  # not installed: kubeauth's import will say so
    top = types.ModuleType("kubernetes_asyncio")
    top.__path__ = list(spec.submodule_search_locations)
    client = types.ModuleType("kubernetes_asyncio.client")
    client.__path__ = [str(Path(top.__path__[0]) / "client")]
    client.__getattr__ = _client_attribute  # type: ignore[method-assign]  # PEP 562: resolved on first use
    top.client = client  # type: ignore[attr-defined]
    sys.modules["kubernetes_asyncio"] = top
    sys.modules["kubernetes_asyncio.client"] = client
