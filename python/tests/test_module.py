"""The installed wheel: its `pipeline` binary on the environment's PATH, and the module
that runs it. Run by crates/cli/tests/python.rs with the Python of an environment the
wheel was installed into (`.ci/run` builds and installs it)."""

import logging
import os
import shutil
import signal
import sysconfig
import tempfile
import unittest
from pathlib import Path

import sendgrid_pipeline as sp

REPO = Path(__file__).resolve().parents[2]


class WheelTest(unittest.TestCase):
    def setUp(self):
        os.environ.pop("PIPELINE_BIN", None)
        self.dir = Path(tempfile.mkdtemp())
        shutil.copytree(REPO / "pipelines", self.dir / "pipelines")
        self.quickstart = self.dir / "pipelines" / "quickstart.yaml"

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_the_wheel_puts_pipeline_beside_the_interpreter(self):
        scripts = Path(sysconfig.get_path("scripts"))
        self.assertEqual(Path(sp.binary()), scripts / "pipeline")
        self.assertTrue(os.access(sp.binary(), os.X_OK))

    def test_the_quickstart_runs_and_its_rejects_read_into_arrow(self):
        summary = sp.run(self.quickstart, local_emulator=True)
        self.assertEqual(summary["status"], "success")
        self.assertEqual(summary["exit_code"], 0)
        export = summary["exports"][0]
        self.assertEqual(export["export"], "newsletter")
        self.assertEqual(export["sent"], 13)
        self.assertEqual(export["rejected"], 7)
        self.assertEqual(export["rejected_by_reason"], {"invalid_email": 4, "missing_email": 3})

        files = sp.rejects_files(summary)
        self.assertEqual(len(files), 1)
        table = sp.read_rejects(files[0])
        self.assertEqual(table.num_rows, 7)
        self.assertEqual(
            table.column_names, ["segment", "key", "email", "reason", "detail"]
        )
        reasons = sorted(table.column("reason").to_pylist())
        self.assertEqual(reasons, ["invalid_email"] * 4 + ["missing_email"] * 3)
        frame = table.to_pandas()
        self.assertEqual(len(frame), 7)

    def test_the_binarys_log_lines_reach_the_module_logger_at_their_levels(self):
        with self.assertLogs("sendgrid_pipeline", level="DEBUG") as logs:
            sp.run(self.quickstart, local_emulator=True)
        finished = [r for r in logs.records if r.getMessage().startswith("Export finished")]
        self.assertEqual(len(finished), 1, logs.output)
        self.assertEqual(finished[0].levelno, logging.INFO)
        self.assertIn("export=newsletter", finished[0].getMessage())
        self.assertIn("sent=13", finished[0].getMessage())
        # The logger is enabled for DEBUG, so the binary was asked for its debug lines.
        self.assertTrue(any(r.levelno == logging.DEBUG for r in logs.records), logs.output)

        with self.assertLogs("sendgrid_pipeline", level="INFO") as logs:
            sp.run(self.quickstart, local_emulator=True)
        self.assertFalse(any(r.levelno == logging.DEBUG for r in logs.records), logs.output)

    def test_plan_and_validate_return_their_documents(self):
        self.assertEqual(sp.validate(self.quickstart)["status"], "success")
        planned = sp.plan(self.quickstart, rows=3)
        self.assertEqual(planned["exports"][0]["contacts"], 13)
        # One name or several; a name the file lacks is the binary's usage error.
        for export in ("newsletter", ["newsletter"], ["newsletter", "newsletter"]):
            planned = sp.plan(self.quickstart, export=export)
            self.assertEqual([e["export"] for e in planned["exports"]], ["newsletter"])
        with self.assertRaises(sp.PipelineError) as caught:
            sp.plan(self.quickstart, export=["newsletter", "newsleter"])
        self.assertIn("no export named `newsleter` (did you mean `newsletter`?)",
                      caught.exception.message)

    def test_plan_shows_emails_only_when_asked(self):
        masked = sp.plan(self.quickstart, rows=2)["exports"][0]["sample"]
        self.assertEqual([c["email"] for c in masked], ["a***@example.com", "g***@example.com"])
        shown = sp.plan(self.quickstart, rows=2, show_emails=True)["exports"][0]["sample"]
        self.assertEqual(
            [c["email"] for c in shown], ["ada.lovelace@example.com", "grace.hopper@example.com"]
        )

    def test_report_writes_the_page_owner_readable(self):
        out = self.dir / "report.html"
        written = sp.report(self.quickstart, out=out)
        self.assertEqual((written["report"], written["exports"]), (str(out), 1))
        # The local emulator's runs keep no state, so there is no history to chart yet.
        self.assertIn("<h2>export newsletter</h2>", out.read_text(encoding="utf-8"))
        self.assertEqual(out.stat().st_mode & 0o777, 0o600)

    def test_a_connections_file_is_passed_to_every_command(self):
        # The quickstart's connection moves to a connections file of its own.
        text = self.quickstart.read_text(encoding="utf-8")
        start, end = text.index("connections:"), text.index("sources:")
        connections = self.dir / "connections.yaml"
        connections.write_text("version: 1\n" + text[start:end], encoding="utf-8")
        connections.chmod(0o600)
        pipeline = self.dir / "pipelines" / "shared.yaml"
        pipeline.write_text(text[:start] + text[end:], encoding="utf-8")

        self.assertEqual(sp.validate(pipeline, connections=connections)["status"], "success")
        summary = sp.run(pipeline, local_emulator=True, connections=connections)
        self.assertEqual(summary["exports"][0]["sent"], 13)
        with self.assertRaises(sp.PipelineError) as caught:
            sp.validate(pipeline, env={"PIPELINE_CONNECTIONS": ""})
        self.assertEqual(caught.exception.exit_code, 2)
        self.assertIn("marketing", caught.exception.message)

    def test_a_failure_raises_with_the_exit_code_and_message(self):
        broken = self.dir / "pipelines" / "broken.yaml"
        broken.write_text(
            self.quickstart.read_text().replace("max_profiles", "max_profile"), encoding="utf-8"
        )
        with self.assertRaises(sp.PipelineError) as caught, self.assertLogs(
            "sendgrid_pipeline", level="ERROR"
        ) as logs:
            sp.run(broken, local_emulator=True)
        self.assertTrue(any("max_profile" in line for line in logs.output), logs.output)
        error = caught.exception
        self.assertEqual(error.exit_code, 2)
        self.assertEqual(error.status, "config_error")
        self.assertFalse(error.retryable)
        self.assertIn("max_profile", error.message)
        self.assertEqual(error.result["status"], "config_error")

        with self.assertRaises(sp.PipelineError) as caught:
            sp.run(self.dir / "missing.yaml")
        self.assertIn("cannot read pipeline file", caught.exception.message)

        # An argument the binary refuses: its error line, not the usage text after it.
        with self.assertRaises(sp.PipelineError) as caught:
            sp.plan(self.quickstart, rows="many")
        self.assertEqual(caught.exception.exit_code, 2)
        self.assertTrue(
            caught.exception.message.startswith("error: invalid value 'many' for '--rows"),
            caught.exception.message,
        )

    def test_an_env_value_not_text_or_an_empty_export_list_is_refused_before_the_binary_runs(self):
        with self.assertRaises(TypeError) as caught:
            sp.plan(self.quickstart, env={"SENDGRID_API_KEY": None})
        self.assertEqual(
            str(caught.exception),
            "env['SENDGRID_API_KEY'] is None: the value it was read from is not set "
            "(os.environ.get and a secret store's lookups give None for a missing one)",
        )
        with self.assertRaises(ValueError) as caught:
            sp.run(self.quickstart, export=[], local_emulator=True)
        self.assertEqual(
            str(caught.exception), "export=[] names nothing; leave export out (or None) for all of them"
        )
        with self.assertRaises(TypeError) as caught:
            sp.validate(self.quickstart, env={"PORT": 8080})
        self.assertEqual(
            str(caught.exception), "env['PORT'] must be a string, not int: write str(...) around it"
        )

    def test_an_interrupt_stops_the_binary_too(self):
        # Stand-in binaries that wait, leave a mark if they were let finish, and another
        # if they heard SIGINT; the second does not listen and is killed after the grace.
        finished = self.dir / "finished"
        heard = self.dir / "heard"
        polite = self.dir / "polite-pipeline"
        polite.write_text(
            f"#!/bin/sh\ntrap 'echo int > {heard}; exit 130' INT\n"
            f"sleep 30 </dev/null >/dev/null 2>&1 &\nwait\necho yes > {finished}\n",
            encoding="utf-8",
        )
        deaf = self.dir / "deaf-pipeline"
        deaf.write_text(
            f"#!/bin/sh\ntrap '' INT\nsleep 30 </dev/null >/dev/null 2>&1\necho yes > {finished}\n",
            encoding="utf-8",
        )

        def interrupt(*_):
            raise KeyboardInterrupt

        for stand_in in (polite, deaf):
            stand_in.chmod(0o755)
            os.environ["PIPELINE_BIN"] = str(stand_in)
            previous = signal.signal(signal.SIGALRM, interrupt)
            try:
                signal.setitimer(signal.ITIMER_REAL, 0.5)
                with self.assertRaises(KeyboardInterrupt):
                    sp.validate(self.quickstart)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
                os.environ.pop("PIPELINE_BIN", None)
            # Stopped, not waited for: it never got to its last line.
            self.assertFalse(finished.exists(), stand_in.name)
        # Asked first as Ctrl-C asks: the binary releases its lock and says so.
        self.assertEqual(heard.read_text(encoding="utf-8").strip(), "int")

    def test_busy_and_failed_runs_are_the_retryable_ones(self):
        self.assertTrue(sp.PipelineError(6, "already_running", "", {}).retryable)
        self.assertTrue(sp.PipelineError(4, "run_failed", "", {}).retryable)
        self.assertTrue(sp.PipelineError(143, "interrupted", "", {}).retryable)
        for code in (2, 3, 5, 7, 8, 130):
            self.assertFalse(sp.PipelineError(code, sp.EXIT_CODES[code], "", {}).retryable)


if __name__ == "__main__":
    unittest.main()
