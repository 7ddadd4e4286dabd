"""Where the control-plane binaries come from: KUBEBUILDER_ASSETS, the cache, or a Go build (faked here)."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import threading
from pathlib import Path

import pytest

from lightbox.devtools import binaries as b

# A stand-in for `go`: records each call (argv, cwd, selected env) as a JSON line in $FAKE_GO_LOG and
# fakes `env GOVERSION`, `mod tidy` and `build -o OUT PKG...` ($FAKE_GO_FAIL=tidy|build makes one fail).
FAKE_GO = r"""#!{python}
import json, os, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_GO_LOG"], "a") as fh:
    fh.write(json.dumps({"args": args, "cwd": os.getcwd(),
                         "env": {k: os.environ.get(k) for k in ("GOMODCACHE", "GOCACHE", "GOWORK")}}) + "\n")
fail = os.environ.get("FAKE_GO_FAIL", "")
if args[:2] == ["env", "GOVERSION"]:
    print(os.environ.get("FAKE_GO_VERSION", "go1.26.0")); sys.exit(0)
if args[:2] == ["mod", "tidy"]:
    if fail == "tidy":
        print("go: k8s.io/kubernetes@v1.34.4: Get https://proxy.golang.org/...: dial tcp: no route to host")
        sys.exit(1)
    sys.exit(0)
if args[0] == "build":
    out = args[args.index("-o") + 1]
    pkgs = args[args.index("-o") + 2:]
    time.sleep(float(os.environ.get("FAKE_GO_SLEEP", "0")))
    def name(p):
        parts = p.split("/")
        return parts[-2] if parts[-1][:1] == "v" and parts[-1][1:].isdigit() else parts[-1]
    targets = [os.path.join(out, name(p)) for p in pkgs] if out.endswith("/") else [out]
    for t in targets:
        with open(t, "w") as f:
            f.write("#!/bin/sh\necho fake\n" if fail != "build" else "half a binary")
        os.chmod(t, 0o755)
        if fail == "build":
            print("k8s.io/kubernetes/pkg/foo: compile error: undefined: bar"); sys.exit(1)
    sys.exit(0)
print("fake go: unexpected", args); sys.exit(2)
"""


def _exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Isolated cache dir, a fake `go` first on PATH, no KUBEBUILDER_ASSETS; returns a helper namespace."""
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.delenv("LIGHTBOX_CACHE_DIR", raising=False)
    monkeypatch.delenv("LIGHTBOX_GO", raising=False)
    monkeypatch.delenv("LIGHTBOX_HELM", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    gobin = tmp_path / "gobin"
    _exe(gobin / "go", FAKE_GO.replace("{python}", sys.executable))
    log = tmp_path / "go-calls.jsonl"
    monkeypatch.setenv("FAKE_GO_LOG", str(log))
    monkeypatch.setenv("PATH", f"{gobin}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setattr(b, "GO_FALLBACKS", ())
    messages: list[str] = []

    class Env:
        cache = tmp_path / "xdg" / "lightbox"
        root = tmp_path

        @staticmethod
        def calls() -> list[dict]:
            return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

        @staticmethod
        def builds() -> list[list[str]]:
            return [c["args"] for c in Env.calls() if c["args"][0] == "build"]

        log_messages = messages

        @staticmethod
        def log(message: str) -> None:
            messages.append(message)

    return Env


# --------------------------------------------------------------------------- rendering


def test_k8s_gomod_requires_kubernetes_and_replaces_every_staging_module():
    text = b.render_k8s_gomod("v1.34.4")
    assert text.startswith("module lightbox.local/k8sbuild\n\ngo 1.24.0\n")
    assert "\nrequire k8s.io/kubernetes v1.34.4\n" in text
    replaced = re.findall(r"^\tk8s\.io/(\S+) => k8s\.io/(\S+) (\S+)$", text, re.M)
    assert len(replaced) == 29 == len(b.STAGING_MODULES)
    assert [m for m, _, _ in replaced] == list(b.STAGING_MODULES)
    assert all(m == target and v == "v0.34.4" for m, target, v in replaced)
    assert text.endswith(
        "tool (\n\tk8s.io/kubernetes/cmd/kube-apiserver\n\tk8s.io/kubernetes/cmd/kube-controller-manager\n"
        "\tk8s.io/kubernetes/cmd/kubelet\n\tk8s.io/kubernetes/cmd/kube-scheduler\n"
        "\tk8s.io/kubernetes/cmd/kube-proxy\n)\n"
    )


def test_staging_version_and_bad_versions():
    assert b.staging_version("v1.34.4") == "v0.34.4"
    assert b.staging_version("v1.37.0") == "v0.37.0"
    for bad in ("1.34.4", "v1.34", "v1.34.4-rc.1", "latest"):
        with pytest.raises(ValueError):
            b.render_k8s_gomod(bad)


def test_etcd_and_helm_gomod():
    assert b.render_etcd_gomod("v3.6.14") == (
        "module lightbox.local/etcdbuild\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 v3.6.14\n\n"
        "tool go.etcd.io/etcd/server/v3\n")
    assert b.render_helm_gomod("v3.21.4") == (
        "module lightbox.local/helmbuild\n\ngo 1.24.0\n\nrequire helm.sh/helm/v3 v3.21.4\n\n"
        "tool helm.sh/helm/v3/cmd/helm\n")


def test_k8s_build_command_matches_the_documented_one(tmp_path):
    spec = b.k8s_spec("v1.34.4")
    assert spec.key == "k8s-v1.34.4"
    assert spec.go_build_args(tmp_path) == [
        "build", "-trimpath", "-ldflags",
        "-s -w -X k8s.io/component-base/version.gitVersion=v1.34.4 -X k8s.io/component-base/version.gitMajor=1 "
        "-X k8s.io/component-base/version.gitMinor=34 -X k8s.io/client-go/pkg/version.gitVersion=v1.34.4",
        "-o", f"{tmp_path}/",
        "k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kube-controller-manager",
    ]
    # etcd's main package path ends in /v3: build it to an explicit name.
    assert b.etcd_spec().go_build_args(tmp_path)[-3:] == ["-o", str(tmp_path / "etcd"), "go.etcd.io/etcd/server/v3"]


def test_cache_root_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("LIGHTBOX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert b.cache_root() == tmp_path / "lightbox"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert b.cache_root() == Path.home() / ".cache" / "lightbox"
    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path / "x"))
    assert b.cache_root() == tmp_path / "x"


# --------------------------------------------------------------------------- KUBEBUILDER_ASSETS


def test_kubebuilder_assets_used_as_is(env, monkeypatch):
    assets = env.root / "assets"
    for name in ("kube-apiserver", "etcd", "kube-controller-manager"):
        _exe(assets / name, "#!/bin/sh\necho Kubernetes v1.34.1\n")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    got = b.ensure_binaries(log=env.log)
    assert got == b.Binaries(assets / "kube-apiserver", assets / "kube-controller-manager", assets / "etcd",
                             source="KUBEBUILDER_ASSETS")
    assert env.calls() == []


def test_kubebuilder_assets_without_controller_manager_builds_only_that(env, monkeypatch):
    assets = env.root / "assets"
    _exe(assets / "kube-apiserver", "#!/bin/sh\necho Kubernetes v1.33.2\n")
    _exe(assets / "etcd", "#!/bin/sh\necho etcd\n")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    got = b.ensure_binaries(log=env.log)
    assert got.kube_apiserver == assets / "kube-apiserver" and got.etcd == assets / "etcd"
    assert got.kube_controller_manager == env.cache / "bin" / "k8s-v1.33.2" / "kube-controller-manager"
    (build,) = env.builds()
    assert build[-1] == "k8s.io/kubernetes/cmd/kube-controller-manager"
    assert "kube-apiserver" not in " ".join(build[build.index("-o"):])
    assert "-X k8s.io/component-base/version.gitVersion=v1.33.2" in build[build.index("-ldflags") + 1]
    gomod = (env.cache / "build" / "k8s-v1.33.2" / "go.mod").read_text()
    assert "require k8s.io/kubernetes v1.33.2" in gomod and "k8s.io/api => k8s.io/api v0.33.2" in gomod


def test_kubebuilder_assets_missing_etcd_is_an_error(env, monkeypatch):
    assets = env.root / "assets"
    _exe(assets / "kube-apiserver", "#!/bin/sh\n")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    with pytest.raises(b.BinaryError, match=r"lacks executable etcd"):
        b.ensure_binaries(log=env.log)


# --------------------------------------------------------------------------- cache and build


def _fill_cache(cache: Path) -> None:
    for key, name in [("k8s-v1.34.4", "kube-apiserver"), ("k8s-v1.34.4", "kube-controller-manager"),
                      ("etcd-v3.6.14", "etcd"), ("helm-v3.21.4", "helm")]:
        _exe(cache / "bin" / key / name, "#!/bin/sh\n")


def test_cache_hit_does_not_invoke_go(env, monkeypatch):
    _fill_cache(env.cache)
    monkeypatch.setenv("PATH", "/nonexistent")  # no go at all: a hit must not need it
    got = b.ensure_binaries(log=env.log)
    assert got.source == "cache"
    assert got.kube_apiserver == env.cache / "bin" / "k8s-v1.34.4" / "kube-apiserver"
    assert got.etcd == env.cache / "bin" / "etcd-v3.6.14" / "etcd"
    assert b.ensure_helm(log=env.log) == env.cache / "bin" / "helm-v3.21.4" / "helm"
    assert env.calls() == [] and env.log_messages == []


def test_cold_build_then_cache_hit(env):
    got = b.ensure_binaries(log=env.log)
    assert got.source == "built"
    for p in (got.kube_apiserver, got.kube_controller_manager, got.etcd):
        assert os.access(p, os.X_OK)
    calls = env.calls()
    k8s_dir, etcd_dir = env.cache / "build" / "k8s-v1.34.4", env.cache / "build" / "etcd-v3.6.14"
    assert [(c["args"][:2], c["cwd"]) for c in calls if c["args"][0] != "env"] == [
        (["mod", "tidy"], str(k8s_dir)), (["build", "-trimpath"], str(k8s_dir)),
        (["mod", "tidy"], str(etcd_dir)), (["build", "-trimpath"], str(etcd_dir)),
    ]
    assert all(c["env"]["GOMODCACHE"] == str(env.cache / "go" / "mod") for c in calls)
    assert all(c["env"]["GOCACHE"] == str(env.cache / "go" / "build") for c in calls)
    assert (k8s_dir / "go.mod").read_text() == b.render_k8s_gomod()
    assert any("building kube-apiserver, kube-controller-manager (kube-apiserver and kube-controller-manager "
               "v1.34.4) from the Go module proxy" in m and "several minutes" in m for m in env.log_messages)
    assert not [p for p in (env.cache / "bin").iterdir() if p.name.startswith(".tmp")]

    n = len(calls)
    assert b.ensure_binaries(log=env.log).source == "cache"
    assert len(env.calls()) == n


def test_missing_go_says_what_to_do(env, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(b.BinaryError) as err:
        b.ensure_binaries(log=env.log)
    msg = str(err.value)
    assert "`go` is not on PATH" in msg and "https://go.dev/dl/" in msg and "KUBEBUILDER_ASSETS" in msg


def test_too_old_go_is_refused(env, monkeypatch):
    monkeypatch.setenv("FAKE_GO_VERSION", "go1.21.5")
    with pytest.raises(b.BinaryError, match=r"Go 1\.21; building .* needs Go >= 1\.24"):
        b.ensure_binaries(log=env.log)
    assert env.builds() == []


def test_failed_tidy_reports_network_hint_and_log_tail(env, monkeypatch):
    monkeypatch.setenv("FAKE_GO_FAIL", "tidy")
    with pytest.raises(b.BinaryError) as err:
        b.ensure_binaries(log=env.log)
    assert "`go mod tidy` for kube-apiserver" in str(err.value)
    assert "no route to host" in str(err.value) and "GOPROXY" in str(err.value)


def test_interrupted_build_leaves_no_binary(env, monkeypatch):
    monkeypatch.setenv("FAKE_GO_FAIL", "build")
    with pytest.raises(b.BinaryError) as err:
        b.ensure_binaries(log=env.log)
    assert "compile error: undefined: bar" in str(err.value)
    bin_root = env.cache / "bin"
    assert not (bin_root / "k8s-v1.34.4" / "kube-apiserver").exists()
    assert not [p for p in bin_root.iterdir() if p.name.startswith(".tmp")]


def test_concurrent_callers_build_once(env, monkeypatch):
    monkeypatch.setenv("FAKE_GO_SLEEP", "0.5")
    results, errors = [], []

    def call():
        try:
            results.append(b.ensure_built(b.helm_spec(), cache=env.cache, log=env.log)["helm"])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1 and len(results) == 3
    assert len(env.builds()) == 1
    assert (env.cache / "locks" / "helm-v3.21.4.lock").exists()


def test_helm_override_and_build(env, monkeypatch):
    helm = b.ensure_helm(log=env.log)
    assert helm == env.cache / "bin" / "helm-v3.21.4" / "helm"
    (build,) = env.builds()
    assert build[-1] == b.HELM_PKG and build[-3] == "-o" and build[-2].endswith("/helm")
    assert "-X helm.sh/helm/v3/internal/version.version=v3.21.4" in build[build.index("-ldflags") + 1]
    own = _exe(env.root / "my-helm", "#!/bin/sh\n")
    monkeypatch.setenv("LIGHTBOX_HELM", str(own))
    assert b.ensure_helm(log=env.log) == own
