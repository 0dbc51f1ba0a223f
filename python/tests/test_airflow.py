"""The Airflow recipe (examples/airflow): its DAG run with `airflow dags test` on a
SQLite database against the local emulator, and the exit codes mapped onto Airflow's
retries."""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import unittest
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "examples" / "airflow"
AIRFLOW = Path(sysconfig.get_path("scripts")) / "airflow"


class AirflowRecipeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = Path(tempfile.mkdtemp())
        shutil.copytree(REPO / "pipelines", cls.dir / "pipelines")
        cls.env = dict(
            os.environ,
            AIRFLOW_HOME=str(cls.dir / "airflow"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
            SENDGRID_PIPELINE_LOCAL_EMULATOR="1",
            SENDGRID_PIPELINE_EXPORT="newsletter",
            PIPELINE_CONNECTIONS="",
        )
        migrated = subprocess.run(
            [str(AIRFLOW), "db", "migrate"], env=cls.env, capture_output=True, text=True
        )
        assert migrated.returncode == 0, migrated.stderr

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def dag_test(self, pipeline_file):
        env = dict(self.env, SENDGRID_PIPELINE_FILE=str(pipeline_file))
        done = subprocess.run(
            [str(AIRFLOW), "dags", "test", "sendgrid_newsletter"],
            env=env,
            capture_output=True,
            text=True,
        )
        return done.returncode, done.stdout + done.stderr

    def test_the_dag_runs_the_export_and_pushes_the_summary(self):
        code, log = self.dag_test(self.dir / "pipelines" / "quickstart.yaml")
        self.assertEqual(code, 0, log)
        self.assertIn("new_state=success", log)
        self.assertIn("Pushing xcom", log)
        self.assertIn("'sent': 13", log)
        # The binary's own log lines are in the task's log.
        self.assertIn("Export finished (export=newsletter", log)

    def test_a_configuration_error_fails_the_task_without_retries(self):
        broken = self.dir / "broken.yaml"
        broken.write_text("version: 1\nexports: nope\n", encoding="utf-8")
        code, log = self.dag_test(broken)
        self.assertNotEqual(code, 0, log)
        self.assertIn("AirflowFailException: pipeline exited with 2 (config_error)", log)
        self.assertIn("new_state=failed", log)
        self.assertNotIn("up_for_retry", log)

    def test_exit_codes_map_onto_retries(self):
        sys.path.insert(0, str(DAGS))
        try:
            import sendgrid_dag
        finally:
            sys.path.remove(str(DAGS))
        from airflow.exceptions import AirflowException, AirflowFailException

        sp = sendgrid_dag.sp
        for code, raised in [(4, AirflowException), (6, AirflowException), (2, AirflowFailException),
                             (3, AirflowFailException), (7, AirflowFailException), (8, AirflowFailException)]:
            error = sp.PipelineError(code, sp.EXIT_CODES[code], "x", {})
            with mock.patch.object(sp, "run", side_effect=error):
                with self.assertRaises(AirflowException) as caught:
                    sendgrid_dag.run_export("p.yaml", "newsletter")
            self.assertIs(type(caught.exception), raised, code)

        rejected = {"exit_code": 5, "exports": [{"rejected": 7, "allowed_rejects": 0, "rejects_file": "r"}]}
        with mock.patch.object(sp, "run", return_value=rejected):
            self.assertEqual(sendgrid_dag.run_export("p.yaml", "newsletter"), rejected)
            with self.assertRaises(AirflowFailException):
                sendgrid_dag.run_export("p.yaml", "newsletter", rejects="failure")


if __name__ == "__main__":
    unittest.main()
