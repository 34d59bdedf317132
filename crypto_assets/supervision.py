"""The restart rule of every long-running job Dagster supervises (the continuous Spark job, the
live feeds): when the last run of a job (of one exchange, for feeds) failed and nothing of it
runs, ask for a run with the same config; give up after RESTARTS failed runs in a row; never
restart a run stopped on purpose."""

from __future__ import annotations

import dagster as dg

# A job that fails at once would otherwise be restarted forever; each failed run is an alert.
RESTARTS = 3
RESTART_OF_TAG = "crypto/restart-of"


def restart_of_failed_run(
    context: dg.SensorEvaluationContext, runs: list[dg.DagsterRun], what: str
) -> dg.RunRequest | dg.SkipReason:
    """`runs`: the job's most recent runs (of the one thing it supervises), newest first."""
    recent = runs[:RESTARTS]
    if not recent or recent[0].status != dg.DagsterRunStatus.FAILURE:
        state = recent[0].status.value if recent else "none"
        return dg.SkipReason(f"last {what} run: {state}; nothing to restart")
    failed = recent[0]
    if len(recent) == RESTARTS and all(run.status == dg.DagsterRunStatus.FAILURE for run in recent):
        context.log.warning(f"{RESTARTS} {what} runs failed in a row; not restarting")
        return dg.SkipReason(f"{RESTARTS} {what} runs failed in a row")
    context.log.warning(f"{what} run {failed.run_id} failed; restarting it")
    user_tags = {k: v for k, v in failed.tags.items() if not k.startswith("dagster/")}
    return dg.RunRequest(
        run_key=f"restart:{failed.run_id}",
        run_config=failed.run_config,
        tags={**user_tags, RESTART_OF_TAG: failed.run_id},
    )
