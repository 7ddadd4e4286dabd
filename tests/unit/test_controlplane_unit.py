"""Control-plane plumbing that needs no real binaries: certificates, kubeconfig, process handling, errors."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from lightbox.devtools import binaries as b
from lightbox.devtools import certs
from lightbox.devtools import controlplane as cpm


def test_certificates(tmp_path):
    pki = certs.generate(tmp_path / "pki")
    ca = x509.load_pem_x509_certificate(pki.ca_crt.read_bytes())
    serving = x509.load_pem_x509_certificate(pki.serving_crt.read_bytes())
    admin = x509.load_pem_x509_certificate(pki.admin_crt.read_bytes())
    for cert in (serving, admin):
        cert.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("10.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    for key in (pki.ca_key, pki.serving_key, pki.admin_key, pki.kcm_key, pki.sa_key):
        assert key.stat().st_mode & 0o077 == 0
    assert b"PUBLIC KEY" in pki.sa_pub.read_bytes()


def test_kubeconfig_loads_in_the_python_client(tmp_path):
    from kubernetes import config as kconfig

    pki = certs.generate(tmp_path)
    path = tmp_path / "kubeconfig"
    path.write_text(cpm.render_kubeconfig("https://127.0.0.1:6443", pki.ca_crt, pki.admin_crt, pki.admin_key))
    doc = yaml.safe_load(path.read_text())
    assert doc["current-context"] == "lightbox"
    api = kconfig.new_client_from_config(str(path))
    try:
        assert api.configuration.host == "https://127.0.0.1:6443"
        assert api.configuration.cert_file and api.configuration.key_file
    finally:
        api.close()


def test_free_port_is_bindable():
    port = cpm.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_stop_pids_terminates_then_kills(tmp_path):
    polite = subprocess.Popen(["sleep", "60"], start_new_session=True)
    stubborn = subprocess.Popen([sys.executable, "-c",
                                 "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print('ready', flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE, start_new_session=True)
    assert stubborn.stdout.readline().strip() == b"ready"
    t0 = time.monotonic()
    cpm.stop_pids([polite.pid, stubborn.pid], grace=0.5, procs={polite.pid: polite, stubborn.pid: stubborn})
    assert time.monotonic() - t0 < 5
    assert polite.returncode == -15  # SIGTERM
    assert stubborn.returncode == -9  # SIGKILL after the grace period


def _fake_binaries(tmp_path: Path, etcd_script: str) -> b.Binaries:
    def exe(name, text):
        p = tmp_path / "fakebin" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(0o755)
        return p

    return b.Binaries(
        exe("kube-apiserver", "#!/bin/sh\nexit 1\n"),
        exe("kube-controller-manager", "#!/bin/sh\nexit 1\n"),
        exe("etcd", etcd_script),
    )


def test_component_that_exits_reports_its_log(tmp_path):
    bins = _fake_binaries(tmp_path, "#!/bin/sh\necho 'etcdmain: listen tcp: permission denied (fake)' >&2\nexit 3\n")
    cp = cpm.ControlPlane(tmp_path / "cp", binaries=bins, timeout=10, log=lambda m: None)
    with pytest.raises(cpm.ControlPlaneError) as err:
        cp.start()
    msg = str(err.value)
    assert "etcd exited with code 3" in msg and "permission denied (fake)" in msg
    assert not (tmp_path / "cp" / "state.json").exists()


def test_component_that_never_gets_ready_times_out_and_is_stopped(tmp_path):
    bins = _fake_binaries(tmp_path, "#!/bin/sh\necho 'waiting for Godot'\nexec sleep 60\n")
    cp = cpm.ControlPlane(tmp_path / "cp", binaries=bins, timeout=1.5, log=lambda m: None)
    t0 = time.monotonic()
    with pytest.raises(cpm.ControlPlaneError) as err:
        cp.start()
    assert time.monotonic() - t0 < 15
    assert "etcd did not become ready within" in str(err.value)
    assert "waiting for Godot" in str(err.value)
    assert cp.components == {}


def test_attach_sees_a_dead_control_plane_as_not_running(tmp_path, capsys):
    workdir = tmp_path / "cp"
    workdir.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (workdir / "state.json").write_text(json.dumps({
        "url": "https://127.0.0.1:1", "version": "v1.34.4",
        "components": {"etcd": {"pid": dead.pid, "port": 1, "log": str(workdir / "logs" / "etcd.log")}}}))
    cp = cpm.ControlPlane.attach(workdir)
    assert cp is not None and not cp.running()
    assert cpm.main(["env", "--dir", str(workdir)]) == 1
    assert cpm.main(["status", "--dir", str(workdir)]) == 1
    assert cpm.main(["down", "--dir", str(workdir)]) == 0
    assert not (workdir / "state.json").exists()
    assert cpm.main(["down", "--dir", str(workdir)]) == 0
    assert "no control plane recorded" in capsys.readouterr().out


def test_down_does_not_kill_an_unrelated_process_with_a_recycled_pid(tmp_path):
    workdir = tmp_path / "cp"
    workdir.mkdir()
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)  # its command line does not mention workdir
    try:
        (workdir / "state.json").write_text(json.dumps({
            "url": None, "components": {"etcd": {"pid": other.pid, "port": 1, "log": "x"}}}))
        assert cpm.main(["down", "--dir", str(workdir), "--grace", "0.2"]) == 0
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
