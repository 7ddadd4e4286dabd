"""Every pod the operator renders passes PodSecurity "restricted" on the real API server.

Server-side dry run: the API server runs admission (PodSecurity included) and
stores nothing. A deliberately weakened pod is refused, so the check is live.
"""

from __future__ import annotations

import copy

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from operator_harness import algorithm, dataset, image, policy, validation

from lightbox.api import Algorithm, Dataset, SandboxPolicy, Validation
from lightbox.operator import builders
from lightbox.operator.config import OperatorConfig


def _models(namespace):
    def meta(doc, ns=True):
        doc = copy.deepcopy(doc)
        doc["metadata"].update({"uid": "00000000-0000-0000-0000-000000000001", "generation": 1})
        if ns:
            doc["metadata"]["namespace"] = namespace
        return doc

    pol = SandboxPolicy.model_validate(meta(policy("p", namespace, runtimeClassName=None), ns=False))
    val = Validation.model_validate(meta(validation("v", "a")))
    algo = Algorithm.model_validate(meta(algorithm("a", image("classifier"))))
    data = Dataset.model_validate(meta(dataset()))
    return pol, val, algo, data


def _pod(namespace, name, spec, labels):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }


def _pods(namespace):
    pol, val, algo, data = _models(namespace)
    config = OperatorConfig()
    job = builders.run_job(val, algo, data, pol, "v-r1", 1, config)
    verify = builders.verify_job(data, "chest-verify-g1", config)
    probe = builders.probe_pod(pol, namespace, "lightbox-probe-p-1", config, "https://10.96.0.1:443")
    return {
        "run": _pod(namespace, "run", job["spec"]["template"]["spec"], job["spec"]["template"]["metadata"]["labels"]),
        "verify": _pod(
            namespace, "verify", verify["spec"]["template"]["spec"], verify["spec"]["template"]["metadata"]["labels"]
        ),
        "probe": {**probe, "metadata": {**probe["metadata"], "ownerReferences": []}},
    }


@pytest.mark.parametrize("kind", ["run", "verify", "probe"])
def test_rendered_pods_pass_restricted(api_client, namespace, kind):
    pod = _pods(namespace)[kind]
    client.CoreV1Api(api_client).create_namespaced_pod(namespace, pod, dry_run="All")


def test_a_weakened_pod_is_refused(api_client, namespace):
    pod = _pods(namespace)["run"]
    vendor = pod["spec"]["initContainers"][1]
    vendor["securityContext"]["allowPrivilegeEscalation"] = True
    del vendor["securityContext"]["capabilities"]
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(api_client).create_namespaced_pod(namespace, pod, dry_run="All")
    assert refused.value.status == 403 and "restricted" in refused.value.body


def test_rendered_job_and_network_policy_are_accepted(api_client, namespace):
    pol, val, algo, data = _models(namespace)
    job = builders.run_job(val, algo, data, pol, "v-r1", 1, OperatorConfig())
    job["metadata"].pop("ownerReferences")
    client.BatchV1Api(api_client).create_namespaced_job(namespace, job, dry_run="All")
    netpol = builders.run_network_policy(val, "v-r1")
    netpol["metadata"].pop("ownerReferences")
    client.NetworkingV1Api(api_client).create_namespaced_network_policy(namespace, netpol, dry_run="All")
