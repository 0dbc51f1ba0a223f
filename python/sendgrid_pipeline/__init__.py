"""Run ``pipeline`` exports from Python: notebooks, Airflow, Dagster.

The wheel that ships this module also ships the ``pipeline`` binary. Each function runs
it with ``--output json`` and returns the JSON summary as a dict; a run that ends with a
non-zero exit code raises :class:`PipelineError`, which carries the code, the status word
and the message. The binary's log lines go, as they come, to the ``sendgrid_pipeline``
logger at their own levels (its debug lines too when that logger is enabled for
``DEBUG``), so they land in a task's log. Nothing the binary does is done again here.

>>> import sendgrid_pipeline as sp
>>> summary = sp.run("pipelines/quickstart.yaml", local_emulator=True)  # doctest: +SKIP
>>> summary["exports"][0]["sent"]  # doctest: +SKIP
13
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sysconfig
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Union

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow

__all__ = [
    "EXIT_CODES",
    "RETRYABLE",
    "STOP_GRACE_SECS",
    "PipelineError",
    "binary",
    "check",
    "history",
    "plan",
    "read_rejects",
    "rejects_files",
    "report",
    "run",
    "validate",
]

PathLike = Union[str, "os.PathLike[str]"]

log = logging.getLogger(__name__)

#: The binary's log levels (``--log-format json``) as :mod:`logging` levels.
_LEVELS = {"ERROR": logging.ERROR, "WARN": logging.WARNING, "INFO": logging.INFO,
           "DEBUG": logging.DEBUG, "TRACE": logging.DEBUG}

#: The binary's exit codes by their status word (README.md, "Exit codes").
EXIT_CODES: Dict[int, str] = {
    0: "success",
    1: "internal_error",
    2: "config_error",
    3: "cap_exceeded",
    4: "run_failed",
    5: "finished_with_rejects",
    6: "already_running",
    7: "mass_removal_refused",
    8: "new_contacts_refused",
    130: "interrupted",
    143: "interrupted",
}

#: Exit codes worth retrying as they are: another run held the lock (6), the run failed
#: on the outside world (SendGrid, the network, the disk; 4), or something stopped it
#: with SIGTERM (143: a pod evicted, a worker shut down). Resuming is safe: a rerun
#: finishes what an interrupted run left. Configuration errors, a blown cap, a refused
#: mass removal or allotment need a person, and so does a run a person stopped (130,
#: Ctrl-C).
RETRYABLE = frozenset({4, 6, 143})


class PipelineError(Exception):
    """A ``pipeline`` command that did not succeed.

    Attributes:
        exit_code: the binary's exit code (see :data:`EXIT_CODES`).
        status: its status word, such as ``"config_error"``.
        message: what went wrong, as the binary said it.
        result: the JSON document the binary wrote (with the summary of every export when
            the run got that far), or an empty dict.
    """

    def __init__(self, exit_code: int, status: str, message: str, result: Dict[str, Any]):
        super().__init__(f"pipeline exited with {exit_code} ({status}): {message}")
        self.exit_code = exit_code
        self.status = status
        self.message = message
        self.result = result

    @property
    def retryable(self) -> bool:
        """Whether running again unchanged may succeed (see :data:`RETRYABLE`)."""
        return self.exit_code in RETRYABLE


def binary() -> str:
    """The ``pipeline`` executable: ``$PIPELINE_BIN``, else the one installed beside this
    interpreter's scripts (the wheel's), else the first on ``PATH``."""
    named = os.environ.get("PIPELINE_BIN")
    if named:
        return named
    beside = Path(sysconfig.get_path("scripts")) / ("pipeline.exe" if os.name == "nt" else "pipeline")
    if beside.is_file():
        return str(beside)
    found = shutil.which("pipeline")
    if found:
        return found
    raise FileNotFoundError(
        "no `pipeline` executable: install the sendgrid-pipeline wheel in this environment, "
        "or set PIPELINE_BIN"
    )


def _call(
    command: str,
    file: PathLike,
    args: Iterable[str],
    *,
    accept: Iterable[int] = (),
    connections: Optional[PathLike] = None,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[PathLike] = None,
) -> Dict[str, Any]:
    argv = [binary(), command, os.fspath(file), *args, "--output", "json", "--log-format", "json"]
    argv += _flags(connections=connections)
    if log.isEnabledFor(logging.DEBUG):
        argv.append("-v")
    environment = dict(os.environ)
    if env:
        environment.update(_checked_env(env))
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=environment,
        cwd=cwd,
    ) as child:
        said: List[str] = []
        relay = threading.Thread(target=_relay, args=(child.stderr, said), daemon=True)
        relay.start()
        try:
            stdout = child.stdout.read()
            code = child.wait()
        except BaseException:
            # An interrupt (a notebook's stop button, a task's timeout) stops the run too;
            # the next run finishes what it left. Asked as Ctrl-C asks, the binary releases
            # its lock and says so; one that is not gone after the grace (or a second
            # interrupt) is killed.
            _stop(child)
            raise
        relay.join()
    try:
        result = json.loads(stdout) if stdout.strip() else {}
    except ValueError:
        result = {}
    if code == 0 or code in set(accept):
        return result
    status = result.get("status") or EXIT_CODES.get(code, "unknown")
    # Of the binary's plain lines, the one that says the error (an argument refused is
    # followed by a usage text).
    stated = next((line for line in said if line.startswith("error:")), said[-1] if said else "")
    message = result.get("error") or stated or status
    raise PipelineError(code, status, message, result)


def _checked_env(env: Mapping[str, str]) -> Mapping[str, str]:
    """``env`` itself, once every name and value is a string: the error names the variable
    (subprocess's own says only ``expected str ... not NoneType``)."""
    for name, value in env.items():
        if not isinstance(name, str):
            raise TypeError(f"env: a variable's name must be a string, not {name!r}")
        if value is None:
            raise TypeError(
                f"env[{name!r}] is None: the value it was read from is not set "
                "(os.environ.get and a secret store's lookups give None for a missing one)"
            )
        if not isinstance(value, str):
            raise TypeError(
                f"env[{name!r}] must be a string, not {type(value).__name__}: "
                f"write str(...) around it"
            )
    return env


#: Seconds an interrupted binary has to stop before it is killed.
STOP_GRACE_SECS = 5.0


def _stop(child: subprocess.Popen) -> None:
    try:
        if os.name == "posix":
            child.send_signal(signal.SIGINT)
            child.wait(timeout=STOP_GRACE_SECS)
    except BaseException:  # the grace ran out, or a second interrupt came
        pass
    if child.poll() is None:
        child.kill()


def _relay(stderr: Iterable[str], said: List[str]) -> None:
    """Logs each of the binary's JSON log lines at its level; keeps its other lines (an
    argument error, say) in ``said`` and logs them as errors."""
    for line in stderr:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            fields = dict(record["fields"])
            level = _LEVELS.get(record["level"], logging.INFO)
        except (ValueError, KeyError, TypeError):
            said.append(line)
            log.error("%s", line)
            continue
        message = fields.pop("message", "")
        context = " ".join(f"{k}={v}" for k, v in fields.items())
        log.log(level, "%s%s", message, f" ({context})" if context else "")


#: One export's name, or several (``export=["daily", "weekly"]``); ``None`` for all.
Exports = Union[str, List[str], None]


def _flags(**flags: Any) -> List[str]:
    out: List[str] = []
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            # Repeatable: `export=["a", "b"]` is `--export a --export b`. An empty list
            # would mean every export to the binary, the opposite of what it says.
            if not value:
                raise ValueError(
                    f"{name}=[] names nothing; leave {name} out (or None) for all of them"
                )
            for item in value:
                out.extend([flag, str(item)])
        elif value not in (None, False):
            out.extend([flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)])
    return out


def run(
    file: PathLike,
    *,
    export: Exports = None,
    dry_run: Optional[PathLike] = None,
    local_emulator: bool = False,
    full_refresh: bool = False,
    allow_mass_removal: bool = False,
    state_dir: Optional[PathLike] = None,
    rejects_dir: Optional[PathLike] = None,
    allow_rejects: bool = False,
    connections: Optional[PathLike] = None,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """``pipeline run FILE``: runs the exports and returns the summary.

    Args:
        allow_rejects: return the summary instead of raising when the run finished but
            rejected more contacts than an export allows (exit code 5).
        connections: a connections file (``--connections``; every function takes it).
        env: variables added to the environment (the API key's variable, say).

    Raises:
        PipelineError: the run did not succeed.
    """
    args = _flags(
        export=export,
        dry_run=dry_run,
        local_emulator=local_emulator,
        full_refresh=full_refresh,
        allow_mass_removal=allow_mass_removal,
        state_dir=state_dir,
        rejects_dir=rejects_dir,
    )
    accept = (5,) if allow_rejects else ()
    return _call("run", file, args, accept=accept, connections=connections, env=env, cwd=cwd)


def plan(
    file: PathLike,
    *,
    export: Exports = None,
    rows: int = 10,
    show_emails: bool = False,
    suppressions: bool = False,
    state_dir: Optional[PathLike] = None,
    connections: Optional[PathLike] = None,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """``pipeline plan FILE``: what a run would do; writes and sends nothing. The sample
    contacts' emails are masked unless ``show_emails``."""
    args = _flags(
        export=export,
        rows=rows,
        show_emails=show_emails,
        suppressions=suppressions,
        state_dir=state_dir,
    )
    return _call("plan", file, args, connections=connections, env=env, cwd=cwd)


def check(
    file: PathLike,
    *,
    local_emulator: bool = False,
    connections: Optional[PathLike] = None,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """``pipeline check FILE``: the connections and exports against SendGrid."""
    args = _flags(local_emulator=local_emulator)
    return _call("check", file, args, connections=connections, env=env, cwd=cwd)


def validate(
    file: PathLike,
    *,
    connections: Optional[PathLike] = None,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """``pipeline validate FILE``: every check that needs no network."""
    return _call("validate", file, [], connections=connections, env=env, cwd=cwd)


def history(
    file: PathLike,
    *,
    export: Exports = None,
    last: int = 20,
    state_dir: Optional[PathLike] = None,
    connections: Optional[PathLike] = None,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """``pipeline history FILE``: each export's last runs."""
    args = _flags(export=export, last=last, state_dir=state_dir)
    return _call("history", file, args, connections=connections, env=env, cwd=cwd)


def report(
    file: PathLike,
    *,
    out: PathLike = "report.html",
    export: Exports = None,
    last: int = 100,
    state_dir: Optional[PathLike] = None,
    connections: Optional[PathLike] = None,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """``pipeline report FILE``: writes the HTML page of the exports' run history to
    ``out`` (relative to ``cwd``); the result's ``report`` is its path."""
    args = _flags(out=out, export=export, last=last, state_dir=state_dir)
    return _call("report", file, args, connections=connections, env=env, cwd=cwd)


def rejects_files(summary: Mapping[str, Any]) -> List[Path]:
    """The rejects files a run's summary names, one per export that rejected anything."""
    return [
        Path(export["rejects_file"])
        for export in summary.get("exports", [])
        if export.get("rejects_file")
    ]


def read_rejects(path: PathLike) -> "pyarrow.Table":
    """A rejects file (JSON lines) as a pyarrow table: one row per rejected row or
    contact, with its segment, key, identifier, reason and detail. Call ``.to_pandas()``
    on it for a data frame. Needs ``pyarrow`` (``pip install sendgrid-pipeline[arrow]``)."""
    try:
        import pyarrow.json as pajson
    except ImportError as e:  # pragma: no cover
        raise ImportError(
            "read_rejects needs pyarrow: pip install 'sendgrid-pipeline[arrow]'"
        ) from e
    return pajson.read_json(os.fspath(path))
