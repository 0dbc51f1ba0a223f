"""An Airflow DAG that runs one pipeline export (Airflow 3; the TaskFlow API).

Exit codes map onto Airflow's retries:

- a busy lock (6) or a run that failed on SendGrid, the network or the disk (4) raises
  ``AirflowException``: the task is retried (``retries`` below); a rerun finishes what an
  interrupted run left, without resending;
- a configuration error (2), an exceeded cap (3), a refused mass removal (7) or allotment
  (8) raises ``AirflowFailException``: the task fails at once, without retries;
- a run that finished with more rejects than the export allows (5) is a warning in the
  task log, or a failure, as ``SENDGRID_PIPELINE_REJECTS`` says.

The task returns the JSON summary, so it lands in XCom for the tasks after it.

Settings come from the environment of the workers (or edit the constants): the pipeline
file, the export, and the API key's variable the pipeline file names.
"""

import logging
import os
from datetime import datetime, timedelta
from typing import Any, Dict

from airflow.exceptions import AirflowException, AirflowFailException
from airflow.sdk import dag, task

import sendgrid_pipeline as sp

PIPELINE_FILE = os.environ.get("SENDGRID_PIPELINE_FILE", "pipelines/quickstart.yaml")
EXPORT = os.environ.get("SENDGRID_PIPELINE_EXPORT", "newsletter")
REJECTS = os.environ.get("SENDGRID_PIPELINE_REJECTS", "warning")  # or "failure"
# Only for trying the DAG out: send to an emulator started by the run itself.
LOCAL_EMULATOR = os.environ.get("SENDGRID_PIPELINE_LOCAL_EMULATOR") == "1"

log = logging.getLogger(__name__)


def run_export(file: str, export: str, *, rejects: str = "warning", **options: Any) -> Dict[str, Any]:
    """Runs the export; raises what tells Airflow to retry or to give up."""
    try:
        summary = sp.run(file, export=export, allow_rejects=True, **options)
    except sp.PipelineError as error:
        if error.retryable:
            raise AirflowException(str(error)) from error
        raise AirflowFailException(str(error)) from error
    if summary["exit_code"] == 5:
        result = summary["exports"][0]
        message = (
            f"{result['rejected']} contact(s) rejected, {result['allowed_rejects']} allowed; "
            f"see {result.get('rejects_file')}"
        )
        if rejects == "failure":
            raise AirflowFailException(message)
        log.warning(message)
    return summary


@dag(
    dag_id=f"sendgrid_{EXPORT}",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 3, "retry_delay": timedelta(minutes=1)},
    tags=["sendgrid"],
)
def sendgrid_export():
    @task
    def export() -> Dict[str, Any]:
        return run_export(
            PIPELINE_FILE, EXPORT, rejects=REJECTS, local_emulator=LOCAL_EMULATOR
        )

    export()


sendgrid_export()
