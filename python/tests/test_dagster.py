"""The Dagster recipe (examples/dagster): its asset materialised in process against the
local emulator, and the exit codes mapped onto Dagster's retries."""

import shutil
import sys
import tempfile
import unittest
from pathlib import Path

import dagster as dg
import sendgrid_pipeline as sp

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples" / "dagster"))

import sendgrid_assets  # noqa: E402


class DagsterRecipeTest(unittest.TestCase):
    def setUp(self):
        self.dir = Path(tempfile.mkdtemp())
        shutil.copytree(REPO / "pipelines", self.dir / "pipelines")
        self.quickstart = self.dir / "pipelines" / "quickstart.yaml"

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def strict(self):
        """The quickstart allowing no reject: it finishes with exit code 5."""
        strict = self.dir / "pipelines" / "strict.yaml"
        text = self.quickstart.read_text(encoding="utf-8")
        strict.write_text(text.replace("allowed_rejects: 10", "allowed_rejects: 0"), encoding="utf-8")
        return strict

    def test_the_asset_runs_the_export_and_keeps_its_summary(self):
        asset = sendgrid_assets.export_asset(str(self.quickstart), "newsletter", local_emulator=True)
        result = dg.materialize([asset])
        self.assertTrue(result.success)
        [materialised] = result.asset_materializations_for_node("sendgrid_newsletter")
        metadata = materialised.metadata
        self.assertEqual(metadata["sent"].value, 13)
        self.assertEqual(metadata["rejected"].value, 7)
        self.assertEqual(metadata["status"].value, "success")
        self.assertEqual(metadata["summary"].value["exports"][0]["export"], "newsletter")

    def test_rejects_are_a_warning_or_a_failure_by_choice(self):
        strict = str(self.strict())
        warned = dg.materialize(
            [sendgrid_assets.export_asset(strict, "newsletter", local_emulator=True)]
        )
        self.assertTrue(warned.success)
        [materialised] = warned.asset_materializations_for_node("sendgrid_newsletter")
        self.assertEqual(materialised.metadata["exit_code"].value, 5)

        failed = dg.materialize(
            [
                sendgrid_assets.export_asset(
                    strict, "newsletter", rejects="failure", local_emulator=True
                )
            ],
            raise_on_error=False,
        )
        self.assertFalse(failed.success)
        [failure] = failed.get_step_failure_events()
        self.assertIn("7 contact(s) rejected, 0 allowed", failure.step_failure_data.error.message)

    def test_a_configuration_error_fails_for_good(self):
        broken = self.dir / "pipelines" / "broken.yaml"
        broken.write_text("version: 1\nexports: nope\n", encoding="utf-8")
        failed = dg.materialize(
            [sendgrid_assets.export_asset(str(broken), "newsletter", local_emulator=True)],
            raise_on_error=False,
        )
        self.assertFalse(failed.success)
        [failure] = failed.get_step_failure_events()
        self.assertIn("(config_error)", failure.step_failure_data.error.message)

    def test_exit_codes_map_onto_retries(self):
        for code in (4, 6):
            decided = sendgrid_assets.outcome(sp.PipelineError(code, sp.EXIT_CODES[code], "x", {}))
            self.assertIsInstance(decided, dg.RetryRequested, code)
        for code in (1, 2, 3, 7, 8):
            decided = sendgrid_assets.outcome(sp.PipelineError(code, sp.EXIT_CODES[code], "x", {}))
            self.assertIsInstance(decided, dg.Failure, code)
            self.assertFalse(decided.allow_retries, code)


if __name__ == "__main__":
    unittest.main()
