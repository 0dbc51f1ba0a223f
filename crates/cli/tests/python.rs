//! The Python wheel, installed: its tests (`python/tests`: the module, and the Dagster and
//! Airflow recipes in `examples/`) run with the interpreter of an environment the wheel
//! was installed into, so they exercise the wheel's own `pipeline` binary and module, not
//! this checkout's.
//!
//! `.ci/run` builds the wheel with maturin into a fresh virtual environment and sets
//! `PIPELINE_PYTHON` to its interpreter and `PIPELINE_REQUIRE_PYTHON=1`. Without
//! `PIPELINE_PYTHON` the test says it was skipped, unless `PIPELINE_REQUIRE_PYTHON` is set,
//! when it fails.

mod common;

use std::process::Command;

#[test]
fn the_installed_wheel_passes_its_python_tests() {
    let Some(python) = common::python(
        "the sendgrid-pipeline wheel installed (maturin build -m python/pyproject.toml)",
    ) else {
        return;
    };
    let out = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-v",
            "-p",
            "no:cacheprovider",
            "python/tests",
        ])
        .current_dir(common::repo())
        .env_remove("PIPELINE_BIN")
        .env_remove("SENDGRID_API_KEY")
        .env("PIPELINE_CONNECTIONS", "")
        .output()
        .expect("the Python interpreter runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    // Every test ran: none was skipped or missing.
    assert!(report.contains(" 18 passed"), "{report}");
    assert!(!report.contains("skipped"), "{report}");
}
