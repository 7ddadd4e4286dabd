"""Restart safety: the operator dies at several points of a run and the run still ends once, recorded.

The operator is a subprocess. It exits abruptly (``os._exit``, no cleanup, like
SIGKILL) at a named point via ``LIGHTBOX_OPERATOR_CRASH_AT``, or is SIGKILLed
while the run is in progress. After every death a fresh operator must find the
state in the cluster: exactly one Job per run, and no result lost.
"""

from __future__ import annotations

from operator_harness import (
    Operator,
    apply,
    apply_sample,
    audit_records,
    delete_policy,
    finished,
    get,
    jobs,
    local_runner,
    runs_of,
    validation,
    wait_for,
)

CRASHED = 86


def test_operator_killed_at_three_points_keeps_one_job_and_every_result(
    api_client, kubeconfig, kubectl, namespace, claim, tmp_path
):
    ns = namespace
    pol = f"restart-{ns}"
    log = tmp_path / "operator.log"
    get_val = lambda name: lambda: get(api_client, "validations", ns, name)  # noqa: E731

    operator = Operator(kubeconfig, ns, log)
    try:
        # A result recorded before any of the crashes must survive all of them.
        with local_runner(api_client, claim, tmp_path / "runner1"):
            operator.start()
            apply_sample(kubectl, ns, pol, validation("earlier", "classifier"))
            earlier = wait_for(get_val("earlier"), finished, 120, "the first run", operator)
            assert runs_of(earlier)[-1]["phase"] == "Succeeded", operator.tail()
            operator.stop()

        # No runner from here until the kill "while it runs": the pod stays pending.
        apply(kubectl, ns, validation("later", "classifier"))

        # 1. Dies after deciding to start the run, before creating its Job.
        operator.start(LIGHTBOX_OPERATOR_CRASH_AT="before-job-create")
        assert operator.wait_exit(60) == CRASHED, operator.tail()
        later = get_val("later")()
        assert [r["phase"] for r in runs_of(later)] in ([], ["Queued"])
        assert [j["metadata"]["name"] for j in jobs(api_client, ns)] == ["earlier-r1"]

        # 2. Dies right after creating the Job, before recording it in status.
        operator.start(LIGHTBOX_OPERATOR_CRASH_AT="after-job-create")
        assert operator.wait_exit(60) == CRASHED, operator.tail()
        assert sorted(j["metadata"]["name"] for j in jobs(api_client, ns)) == ["earlier-r1", "later-r1"]
        assert [r["phase"] for r in runs_of(get_val("later")())] in ([], ["Queued"])

        # 3. Killed while the run is in progress.
        operator.start()
        wait_for(get_val("later"), lambda v: [r["phase"] for r in runs_of(v)] == ["Running"], 60, "Running", operator)
        operator.kill()

        with local_runner(api_client, claim, tmp_path / "runner2"):
            # 4. Dies after the pod finished, before the result reached status.
            operator.start(LIGHTBOX_OPERATOR_CRASH_AT="before-result-write")
            assert operator.wait_exit(120) == CRASHED, operator.tail()
            assert [r["phase"] for r in runs_of(get_val("later")())] == ["Running"]

            # 5. Dies after committing the result to the audit trail, before status.
            operator.start(LIGHTBOX_OPERATOR_CRASH_AT="after-audit-write")
            assert operator.wait_exit(120) == CRASHED, operator.tail()
            assert [r["phase"] for r in runs_of(get_val("later")())] == ["Running"]
            assert [a["spec"]["run"]["name"] for a in audit_records(api_client, ns)] == ["earlier-r1", "later-r1"]

            # 6. A clean start records the result in status, as the audit trail has it.
            operator.start()
            later = wait_for(get_val("later"), finished, 60, "the result after the restarts", operator)

        (run,) = runs_of(later)
        assert run["name"] == "later-r1" and run["phase"] == "Succeeded", run
        assert run["metrics"]["auc"]["lower"] is not None
        assert later["status"]["summary"].startswith("auc ")
        assert sorted(j["metadata"]["name"] for j in jobs(api_client, ns)) == ["earlier-r1", "later-r1"]
        earlier_again = get_val("earlier")()
        assert runs_of(earlier_again) == runs_of(earlier)
        assert earlier_again["status"]["verdict"] == earlier["status"]["verdict"]
        # One audit record per run, each the same as the run in status.
        trail = audit_records(api_client, ns)
        assert [(a["spec"]["validation"]["name"], a["spec"]["run"]) for a in trail] == [
            ("earlier", runs_of(earlier)[0]),
            ("later", run),
        ]
    finally:
        operator.stop()
        delete_policy(api_client, pol)
