"""The operator process loads no module it never uses (docs/performance.md, memory at 5,000 Validations).

Each check runs a fresh interpreter that does what ``lightbox operator`` does before
``kopf.run`` (``main.load_handlers``) and lists what ended up in ``sys.modules``.
Measured when this was written: ``kubernetes`` 32 MiB resident (kopf's probe for it,
admission's quantity parser), numpy 15 MiB (the pod-spec builders reach
``sandbox.packaging``, whose stage step writes images), scipy 60-85 MiB (drift and
approvals, loaded at their first use).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

NEVER_IN_THE_OPERATOR = ("kubernetes", "numpy", "scipy", "pydicom")

PROBE = """
import json, sys
from lightbox.operator import main
main.load_handlers()
import lightbox.operator.reconcile, lightbox.operator.runtime  # everything a pass can reach
loaded = {name.split(".")[0] for name, module in sys.modules.items() if module is not None}
generated = {name.rsplit(".", 1)[0] for name in sys.modules
             if name.startswith(("kubernetes_asyncio.client.models.", "kubernetes_asyncio.client.api."))}
print(json.dumps(sorted(loaded | generated)))
"""


def _loaded(code: str) -> set[str]:
    env = {**os.environ, "PYTHONSAFEPATH": "1"}  # the folder operator/ would shadow the stdlib module
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_the_operator_entry_imports_no_kubernetes_numpy_or_scipy() -> None:
    loaded = _loaded(PROBE)
    assert "kopf" in loaded and "lightbox" in loaded  # the probe did load the operator
    assert sorted(set(NEVER_IN_THE_OPERATOR) & loaded) == []
    # kubernetes_asyncio's ~850 generated model and API modules (31 MiB): only its credential code.
    assert sorted(name for name in loaded if name.startswith("kubernetes_asyncio.client.")) == []


def test_the_clients_own_tests_pass_with_the_operators_import_set() -> None:
    """test_kube_client and test_kube_transport (credentials from token files, exec plugins, client
    certificates, in-cluster; the 401 retry; proxies) in a process where lean.keep_out ran first."""
    code = """
import sys
from lightbox.operator import lean
lean.keep_out()
import pytest
code = pytest.main(["-q", "-p", "no:cacheprovider", "tests/unit/test_kube_client.py",
                    "tests/unit/test_kube_transport.py"])
assert "kubernetes_asyncio.client.models" not in sys.modules, "the models were loaded after all"
sys.exit(code)
"""
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env, cwd=root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and " failed" not in done.stdout


def test_only_kopf_asks_for_kubernetes_numpy_or_scipy() -> None:
    """Without main's block: every module of the operator imported, and each import of a module
    the operator must not need traced to the file that asked for it. Only kopf's probes may ask."""
    code = """
import importlib, json, pkgutil, sys, traceback
asked = []
class Tracer:
    def find_spec(self, name, path=None, target=None):
        if name in NEVER:
            files = [f.filename for f in traceback.extract_stack()[:-1] if "importlib" not in f.filename]
            asked.append([name, files[-1]])
        return None
NEVER = set(json.loads(sys.argv[1]))
sys.meta_path.insert(0, Tracer())
import lightbox.operator as package
for info in pkgutil.iter_modules(package.__path__):
    if info.name not in {"crdgen", "__main__"}:  # crdgen: the CRD generator of the CLI, not the operator
        importlib.import_module(f"lightbox.operator." + info.name)
print(json.dumps(asked))
"""
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    argv = [sys.executable, "-c", code, json.dumps(NEVER_IN_THE_OPERATOR)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    asked = json.loads(done.stdout.splitlines()[-1])
    assert asked, "the tracer saw kopf's probe for kubernetes: it works"
    assert [(name, file) for name, file in asked if f"{os.sep}kopf{os.sep}" not in file] == []
