"""A Dagster asset per pipeline export: materialising it runs the export.

Exit codes map onto Dagster's retries:

- a busy lock (6) or a run that failed on SendGrid, the network or the disk (4) asks
  Dagster to retry: a rerun finishes what an interrupted run left, without resending;
- a configuration error (2), an exceeded cap (3), a refused mass removal (7) or allotment
  (8) fails the asset for good: a person must look;
- a run that finished with more rejects than the export allows (5) is a warning (the
  asset materialises, with the count in its metadata) or a failure, as chosen.

The JSON summary lands in the materialisation's metadata.

    from sendgrid_assets import export_asset
    daily = export_asset("pipelines/daily.yaml", "daily", rejects="failure")
    defs = dg.Definitions(assets=[daily])
"""


from typing import Any, Literal

import dagster as dg
import sendgrid_pipeline as sp


def outcome(error: sp.PipelineError, *, retries: int = 3, wait_secs: int = 60) -> Exception:
    """What Dagster should do with a failed run: retry it, or fail for good."""
    if error.retryable:
        return dg.RetryRequested(max_retries=retries, seconds_to_wait=wait_secs)
    return dg.Failure(
        description=f"pipeline exited with {error.exit_code} ({error.status}): {error.message}",
        metadata={"exit_code": error.exit_code, "status": error.status},
        allow_retries=False,
    )


def export_asset(
    file: str,
    export: str,
    *,
    rejects: Literal["warning", "failure"] = "warning",
    retries: int = 3,
    wait_secs: int = 60,
    **run_options: Any,
) -> dg.AssetsDefinition:
    """An asset that runs export `export` of pipeline `file` (`run_options` go to
    :func:`sendgrid_pipeline.run`: `env`, `state_dir`, ...)."""

    @dg.asset(name=f"sendgrid_{export.replace('-', '_')}", compute_kind="sendgrid")
    def _export(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        try:
            summary = sp.run(file, export=export, allow_rejects=True, **run_options)
        except sp.PipelineError as error:
            raise outcome(error, retries=retries, wait_secs=wait_secs) from error
        result = summary["exports"][0]
        metadata = {
            "status": summary["status"],
            "exit_code": summary["exit_code"],
            "sent": result["sent"],
            "contacts": result["contacts"],
            "rejected": result["rejected"],
            "summary": dg.MetadataValue.json(summary),
        }
        if summary["exit_code"] == 5:
            message = (
                f"{result['rejected']} contact(s) rejected, {result['allowed_rejects']} allowed; "
                f"see {result.get('rejects_file')}"
            )
            if rejects == "failure":
                raise dg.Failure(description=message, metadata=metadata, allow_retries=False)
            context.log.warning(message)
        return dg.MaterializeResult(metadata=metadata)

    return _export
