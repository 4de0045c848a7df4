"""``otakit inspect SOURCE --root ROOT.json``: a repository as a security reviewer sees it.

Parse, call ``repo.inspect_report.build_report`` and ``repo.findings.find``, render: rich
tables on stdout (plain text, readable at 80 columns), or the versioned JSON document of
docs/INSPECT.md. The report is printed even when the repository does not verify, and the
exit code says so (3); ``--fail-on`` makes findings at or above a severity exit 3 too.
Nothing is written.
"""

from __future__ import annotations

import io
import shutil
import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from repo.errors import UsageError
from repo.findings import Finding, at_or_above, find
from repo.inspect_report import InspectReport, build_report, report_json
from repo.sources import open_source
from verifier.cli_common import JsonOpt
from verifier.cli_contract import RunState, run_state
from verifier.demokeys import DEMO_KEY_WARNING
from verifier.errors import SecurityError
from verifier.tuf.client import load_root_bytes

#: The exit code of a repository that does not verify, or of findings at ``--fail-on``.
EXIT_VERDICT = SecurityError.exit_code
#: Names kept free for ``otakit inspect diff`` and ``otakit inspect history``.
RESERVED = ("diff", "history")


class FailOn(StrEnum):
    info = "info"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


def inspect(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE", help="Repository directory or http(s):// URL (with metadata/)."
        ),
    ],
    root: Annotated[
        Path,
        typer.Option("--root", help="The pinned root metadata to trust (e.g. 1.root.json)."),
    ],
    at: Annotated[
        str | None,
        typer.Option(help="Judge expiry at this ISO 8601 time (default: now), e.g. 2027-01-31."),
    ] = None,
    fail_on: Annotated[
        FailOn | None,
        typer.Option("--fail-on", help="Exit 3 if a finding of this severity or above exists."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify a repository from a pinned root; show who signs what.

    Shows every role (keys, threshold, signatures, expiry), the delegations, the targets with
    their artifact metadata, each verification failure and the findings (docs/FINDINGS.md).
    Reads metadata only; writes nothing.
    """
    run = run_state(ctx, json_out)
    if source in RESERVED:
        raise UsageError(
            f"SOURCE: {source!r} is reserved for 'otakit inspect {source}' (not available yet)",
            hint=f"for a directory of that name, write ./{source}",
        )
    when = _parse_at(at)
    pinned = load_root_bytes(root)
    src = open_source(source)
    report = build_report(src, pinned, when, source_name=str(src))
    findings = find(report)
    if any(k.demo and k.roles for k in report.keys):
        run.warn(f"{src}: {DEMO_KEY_WARNING}")
    doc = {**report_json(report), "findings": [f.to_json() for f in findings]}
    run.result(doc, render_text(report, findings))
    _exit(run, report, findings, fail_on)


def _exit(
    run: RunState, report: InspectReport, findings: tuple[Finding, ...], fail_on: FailOn | None
) -> None:
    if not report.verified:
        run.note(
            f"{run.prog}: {report.source} does NOT verify from the pinned root: "
            f"{len(report.failures)} failure(s), listed in the report"
        )
        raise typer.Exit(EXIT_VERDICT)
    if fail_on is not None:
        over = at_or_above(findings, fail_on.value)
        if over:
            run.note(f"{run.prog}: {len(over)} finding(s) at or above {fail_on.value}")
            raise typer.Exit(EXIT_VERDICT)


def _parse_at(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"expected an ISO 8601 time such as 2027-01-31T12:00Z, found {text!r}",
            param_hint="--at",
        ) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


# --- text ------------------------------------------------------------------------------------


def _width() -> int:
    if sys.stdout.isatty():
        return max(80, min(shutil.get_terminal_size().columns, 140))
    return 80


def _time(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%dT%H:%MZ") if t is not None else "-"


def _left(t: datetime | None, at: datetime) -> str:
    if t is None:
        return "-"
    left = t - at
    if left < timedelta(0):
        return f"EXPIRED {_span(-left)} ago"
    return _span(left)


def _span(t: timedelta) -> str:
    if t >= timedelta(days=2):
        return f"{t.days} d"
    hours, rest = divmod(int(t.total_seconds()), 3600)
    return f"{hours} h {rest // 60} min"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    unit = "B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):  # noqa: B007 (the unit the loop stops at)
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


def _table(title: str, *columns: str, keep: tuple[str, ...] = (), leading: int = 0) -> Table:
    """A table with a left title; ``keep`` columns never wrap (dates, versions);
    ``leading`` blank lines between rows of several lines."""
    t = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, leading=leading
    )
    for c in columns:
        t.add_column(c, overflow="fold", no_wrap=c in keep)
    return t


def render_text(report: InspectReport, findings: tuple[Finding, ...]) -> str:
    """The human report: one heading line, then a table per part."""
    buf = io.StringIO()
    out = Console(file=buf, width=_width(), no_color=True, highlight=False, emoji=False)
    verdict = "VERIFIED" if report.verified else "NOT VERIFIED"
    out.print(f"repository: {report.source}", overflow="fold")
    out.print(
        f"verdict: {verdict} from pinned root v{report.pinned_root_version}"
        f" at {report.at.strftime('%Y-%m-%d %H:%M:%S UTC')}"
    )
    chain = " -> ".join(f"v{link.version}" for link in report.root_chain if link.problem is None)
    refused = [link for link in report.root_chain if link.problem is not None]
    out.print(f"root chain: {chain}" + (f" (v{refused[0].version} refused)" if refused else ""))
    out.print(f"consistent snapshots: {'on' if report.consistent_snapshot else 'OFF'}")
    if report.failures:
        t = _table("Verification failures", "where", "kind", "what")
        for f in report.failures:
            t.add_row(f.where, f.kind, f.message)
        out.print(t)
    cols = ("role", "version", "expires", "left", "threshold", "signatures")
    t = _table("Roles", *cols, keep=cols[:5])
    for r in report.roles:
        sigs = "-"
        if r.version is not None:
            sigs = f"{len(r.signatures_valid)}/{r.signatures_present} valid"
            if r.signatures_missing:
                sigs += f", {len(r.signatures_missing)} missing"
        t.add_row(
            r.name,
            str(r.version) if r.version is not None else "not reached",
            _time(r.expires),
            _left(r.expires, report.at),
            f"{r.threshold} of {len(r.keyids)}",
            sigs,
        )
    out.print(t)
    t = _table("Keys", "key id", "type / scheme", "demo", "roles")
    for k in report.keys:
        kind = f"{k.keytype} / {k.scheme}" + (f" ({k.bits} bits)" if k.bits else "")
        t.add_row(k.keyid[:16], kind, "DEMO" if k.demo else "no", ", ".join(k.roles) or "-")
    out.print(t)
    if report.delegations:
        t = _table("Delegations", "delegator -> role", "threshold", "paths")
        for d in report.delegations:
            paths = ", ".join(d.paths or d.path_hash_prefixes or ()) or "-"
            term = " (terminating)" if d.terminating else ""
            t.add_row(
                f"{d.delegator} -> {d.name}{term}", f"{d.threshold} of {len(d.keyids)}", paths
            )
        out.print(t)
    else:
        out.print("Delegations: none (targets signs every target itself)")
    _targets(out, report)
    if report.anomalies:
        t = _table("Parser anomalies", "file", "kind", "detail")
        for a in report.anomalies:
            t.add_row(a.file, a.kind, a.detail)
        out.print(t)
    if findings:
        t = _table(
            "Findings (docs/FINDINGS.md)", "id", "severity", "what / fix", keep=("id",), leading=1
        )
        for group in _grouped(findings):
            first = group[0]
            what = "\n".join(f"{f.where}: {f.detail}" for f in group)
            t.add_row(first.id, first.severity, f"{first.title}\n{what}\nfix: {first.fix}")
        out.print(t)
    else:
        out.print("Findings: none")
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"


def _grouped(findings: tuple[Finding, ...]) -> list[list[Finding]]:
    """Findings of one rule together (they arrive sorted by severity, then ID)."""
    groups: list[list[Finding]] = []
    for f in findings:
        if groups and groups[-1][0].id == f.id:
            groups[-1].append(f)
        else:
            groups.append([f])
    return groups


def _targets(out: Console, report: InspectReport) -> None:
    if not report.targets:
        out.print("Targets: none")
        return
    t = _table("Targets", "target", "kind", "image", keep=("target",), leading=1)
    for x in report.targets:
        a = x.artifact
        if a is None:
            what = f"INVALID: {x.artifact_error}" if x.artifact_error else "no artifact metadata"
            sha = dict(x.hashes).get("sha256", "-")[:12]
            t.add_row(f"{x.path}\n{what}", "-", f"file {_size(x.length)}\n{sha}")
            continue
        kind = a.kind if a.base is None else f"delta from {a.base.version}"
        kind += f"\n{a.image_type or 'type ?'}" + (", DOWNGRADE ok" if a.allow_downgrade else "")
        t.add_row(
            f"{x.path}\n{a.product} {a.version}, hardware {', '.join(a.hardware)}",
            kind,
            f"{_size(a.image.length)} {a.image.sha256[:12]}\nfile {_size(x.length)}",
        )
    out.print(t)
