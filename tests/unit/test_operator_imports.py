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

NEVER_IN_THE_OPERATOR = ("kubernetes", "numpy", "scipy", "pydicom")

PROBE = """
import json, sys
from lightbox.operator import main
main.load_handlers()
import lightbox.operator.reconcile, lightbox.operator.runtime  # everything a pass can reach
loaded = sorted({name.split(".")[0] for name, module in sys.modules.items() if module is not None})
print(json.dumps(loaded))
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
NEVER = set(%r)
sys.meta_path.insert(0, Tracer())
import lightbox.operator as package
for info in pkgutil.iter_modules(package.__path__):
    if info.name not in {"crdgen", "__main__"}:  # crdgen: the CRD generator of the CLI, not the operator
        importlib.import_module(f"lightbox.operator." + info.name)
print(json.dumps(asked))
""" % (NEVER_IN_THE_OPERATOR,)
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    asked = json.loads(done.stdout.splitlines()[-1])
    assert asked, "the tracer saw kopf's probe for kubernetes: it works"
    assert [(name, file) for name, file in asked if f"{os.sep}kopf{os.sep}" not in file] == []
