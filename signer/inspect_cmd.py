"""``otakit inspect``: a repository as a security reviewer sees it.

Three commands: ``inspect [show] STATE`` (one state: ``repo.inspect_report.build_report`` and
``repo.findings.find``), ``inspect diff OLD NEW`` (``repo.inspect_diff.diff_reports`` of two
reports) and ``inspect history REPO`` (``repo.inspect_history.build_history``). Each parses,
calls the library, renders: rich tables on stdout (plain text, readable at 80 columns), or
the versioned JSON documents of docs/INSPECT.md. A report is printed even when what it shows
does not verify, and the exit code says so (3); ``--fail-on`` makes findings at or above a
severity exit 3 too. Nothing is written.
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
from typer._click import Context
from typer.core import TyperGroup

from repo.findings import Finding, at_or_above, find, find_history
from repo.inspect_diff import FieldChange, ReportDiff, diff_json, diff_reports
from repo.inspect_history import History, VersionEntry, build_history, history_json
from repo.inspect_report import InspectReport, RoleInfo, TargetInfo, build_report, report_json
from repo.sources import open_source, parse_state
from verifier.cli_common import JsonOpt, new_app
from verifier.cli_contract import EPILOG, RunState, run_state
from verifier.demokeys import DEMO_KEY_WARNING
from verifier.errors import SecurityError
from verifier.tuf.client import load_root_bytes

#: The exit code of a repository that does not verify, or of findings at ``--fail-on``.
EXIT_VERDICT = SecurityError.exit_code
#: The subcommand ``otakit inspect SOURCE ...`` stands for.
DEFAULT_COMMAND = "show"


class InspectGroup(TyperGroup):
    """``otakit inspect SOURCE ...`` is ``otakit inspect show SOURCE ...``: the report of one
    state keeps its short form, and ``diff`` and ``history`` are subcommands beside it (a
    directory of one of those names is ``./diff``)."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        i = next((n for n, a in enumerate(args) if a != "--json"), None)
        if i is not None and args[i] not in self.commands and args[i] not in ctx.help_option_names:
            args = [*args[:i], DEFAULT_COMMAND, *args[i:]]
        return super().parse_args(ctx, args)


inspect_app = new_app(
    "Review repositories from a pinned root (show, diff, history).\n\n"
    "'otakit inspect SOURCE --root ROOT.json' is short for\n"
    "'otakit inspect show SOURCE --root ROOT.json'."
)
inspect_app.info.cls = InspectGroup

StateArg = Annotated[
    str,
    typer.Argument(
        metavar="SOURCE",
        help="Repository directory or http(s):// URL (with metadata/); SOURCE@targets:N, "
        "SOURCE@root:N or SOURCE@snapshot:N for one version in it.",
    ),
]
RootOpt = Annotated[
    Path,
    typer.Option("--root", help="The pinned root metadata to trust (e.g. 1.root.json)."),
]
AtOpt = Annotated[
    str | None,
    typer.Option(help="Judge expiry at this ISO 8601 time (default: now), e.g. 2027-01-31."),
]


class FailOn(StrEnum):
    info = "info"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


FailOnOpt = Annotated[
    FailOn | None,
    typer.Option("--fail-on", help="Exit 3 if a finding of this severity or above exists."),
]


@inspect_app.callback()
def _inspect(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    run_state(ctx, json_out)


@inspect_app.command("show", epilog=EPILOG)
def show(
    ctx: typer.Context,
    source: StateArg,
    root: RootOpt,
    at: AtOpt = None,
    fail_on: FailOnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify a repository from a pinned root; show who signs what.

    Shows every role (keys, threshold, signatures, expiry), the delegations, the targets with
    their artifact metadata, each verification failure and the findings (docs/FINDINGS.md).
    Reads metadata only; writes nothing.
    """
    run = run_state(ctx, json_out)
    when = _parse_at(at)
    pinned = load_root_bytes(root)
    report = _report(run, source, pinned, when)
    findings = find(report)
    doc = {**report_json(report), "findings": [f.to_json() for f in findings]}
    run.result(doc, render_text(report, findings))
    _exit(run, (report,), findings, fail_on)


@inspect_app.command("diff", epilog=EPILOG)
def diff(
    ctx: typer.Context,
    old: Annotated[str, typer.Argument(metavar="OLD", help="The state before (the forms of NEW).")],
    new: Annotated[
        str,
        typer.Argument(
            metavar="NEW",
            help="The state after: a directory, an http(s):// URL, or REPO@targets:N, "
            "REPO@root:N, REPO@snapshot:N.",
        ),
    ],
    root: RootOpt,
    at: AtOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare two repository states (a release, a key ceremony).

    Lists the roles, keys, thresholds, expiries, delegations and targets added, removed or
    changed from OLD to NEW.
    Both states are verified from the pinned root; one that does not verify is compared all
    the same, its failures listed, and the command exits 3. A past version (REPO@targets:4)
    needs a repository that keeps versioned files (consistent snapshots).
    """
    run = run_state(ctx, json_out)
    when = _parse_at(at)
    pinned = load_root_bytes(root)
    d = diff_reports(_report(run, old, pinned, when), _report(run, new, pinned, when))
    run.result(diff_json(d), render_diff(d))
    _exit(run, (d.old, d.new), (), None)


@inspect_app.command("export", epilog=EPILOG)
def export_cmd(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="EXPORT", help="Export directory or .tar.")],
    root: Annotated[
        Path | None,
        typer.Option("--root", help="Pinned root to trust (default: the export's own)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show an export (otakit export): product, version, validity; verify it.

    Verified with the device's own client, now; exits 3 if it does not verify.
    """
    from verifier.offline import inspect_export

    run = run_state(ctx, json_out)
    doc = inspect_export(path, None if root is None else load_root_bytes(root))
    lines = [
        f"export {path}: {doc['product']} {doc['version']}, valid until {doc['valid_until']} "
        f"({doc['valid_for_days']} days)",
        f"  trust anchor: {doc['trust_anchor']}",
        "  verifies now: " + ("yes" if doc["verified"] else f"NO: {doc['problem']}"),
        "  metadata: " + ", ".join(f"{r} v{v}" for r, v in doc["metadata_versions"].items()),
    ]
    run.result(doc, "\n".join(lines))
    if not doc["verified"]:
        raise typer.Exit(EXIT_VERDICT)


@inspect_app.command("history", epilog=EPILOG)
def history(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(
            metavar="REPO", help="Repository directory or http(s):// URL (with metadata/)."
        ),
    ],
    root: RootOpt,
    at: AtOpt = None,
    fail_on: FailOnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List every root and targets version held, and what each changed.

    Each version is verified from the pinned root (a targets version under the root whose
    keys signed it) and compared with the one before it; findings across versions (OTA-H001
    and on, docs/FINDINGS.md) are listed and gate with --fail-on.
    """
    run = run_state(ctx, json_out)
    when = _parse_at(at)
    pinned = load_root_bytes(root)
    src = open_source(source)
    h = build_history(src, pinned, when, source_name=str(src))
    findings = find_history(h)
    _warn_demo(run, h.source, h.current)
    doc = {**history_json(h), "findings": [f.to_json() for f in findings]}
    run.result(doc, render_history(h, findings))
    reports = (h.current, *(e.report for e in h.roots + h.targets if e.report is not None))
    _exit(run, reports, findings, fail_on, history=h)


def _report(run: RunState, text: str, pinned: bytes, when: datetime) -> InspectReport:
    """The report of a STATE argument (``SOURCE`` or ``SOURCE@role:N``), warning once per
    repository that uses the public demo keys."""
    src, pick = parse_state(text)
    name = f"{src}@{pick}" if pick is not None else str(src)
    report = build_report(src, pinned, when, source_name=name, pick=pick)
    _warn_demo(run, str(src), report)
    return report


def _warn_demo(run: RunState, name: str, report: InspectReport) -> None:
    if any(k.demo and k.roles for k in report.keys):
        run.warn(f"{name}: {DEMO_KEY_WARNING}")


def _exit(
    run: RunState,
    reports: tuple[InspectReport, ...],
    findings: tuple[Finding, ...],
    fail_on: FailOn | None,
    *,
    history: History | None = None,
) -> None:
    """Exit 3 when a report does not verify (or a refused root in ``history``), or when a
    finding is at or above ``fail_on``; the reports are on stdout already."""
    bad = [r for r in reports if not r.verified]
    for r in bad:
        run.note(
            f"{run.prog}: {r.source} does NOT verify from the pinned root: "
            f"{len(r.failures)} failure(s), listed in the report"
        )
    refused = [e for e in history.roots if e.report is None] if history is not None else []
    for e in refused:
        run.note(f"{run.prog}: root v{e.version} was refused: {e.problem}")
    if bad or refused:
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
    if report.delegated_roles:
        _delegated_roles(out, report)
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


def _delegated_roles(out: Console, report: InspectReport) -> None:
    t = _table("Delegated roles", "delegator -> role", "v", "expires", "threshold", "signed",
               keep=("v", "threshold"))  # fmt: skip
    for d in report.delegated_roles:
        sigs = "-"
        if d.version is not None:
            sigs = f"{len(d.signatures_valid)}/{d.signatures_present} valid\n{d.targets} targets"
        if d.problem is not None:
            sigs += f"\nREFUSED: {d.problem}"
        t.add_row(
            f"{d.delegator} -> {d.name}",
            str(d.version) if d.version is not None else "-",
            f"{_time(d.expires)}\n{_left(d.expires, report.at)}",
            f"{d.threshold} of {len(d.keyids)}",
            sigs,
        )
    out.print(t)


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
        by = "" if x.role == "targets" else f"\nlisted by {x.role}"
        t.add_row(
            f"{x.path}\n{a.product} {a.version}, hardware {', '.join(a.hardware)}{by}",
            kind,
            f"{_size(a.image.length)} {a.image.sha256[:12]}\nfile {_size(x.length)}",
        )
    out.print(t)


# --- diff and history text -------------------------------------------------------------------


def _console(buf: io.StringIO) -> Console:
    return Console(file=buf, width=_width(), no_color=True, highlight=False, emoji=False)


def _text(buf: io.StringIO) -> str:
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"


def _value(field: str, v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, tuple):
        return ", ".join(v) or "none"
    text = str(v)
    if field.endswith("sha256") or field.startswith("hashes."):
        return text[:12]
    return text


def _change(c: FieldChange) -> str:
    return f"{c.field} {_value(c.field, c.old)} -> {_value(c.field, c.new)}"


def _side(label: str, r: InspectReport) -> str:
    verdict = "VERIFIED" if r.verified else "NOT VERIFIED"
    return f"{label}: {verdict} under root v{r.root_version}: {r.source}"


def _artifact_line(target: TargetInfo) -> str:
    a = target.artifact
    if a is None:
        return f"file {_size(target.length)}, no artifact metadata"
    kind = a.kind if a.base is None else f"delta from {a.base.version}"
    extra = ", DOWNGRADE ok" if a.allow_downgrade else ""
    return f"{a.product} {a.version} {kind}, {a.image_type or 'type ?'}{extra}"


def _summary(d: ReportDiff, role: str) -> list[str]:
    """One line per change for a history row of ``role``: its version and expiry are
    columns of their own, and a targets row shows the root only as the one it is signed
    under (the root rows show what changed in it)."""
    lines = [
        f"signed under root v{c.old} -> v{c.new}" if c.field == "root_version" else _change(c)
        for c in d.repository
        if role == "targets" or c.field != "root_version"
    ]
    for r in d.roles:
        if role == "targets" and r.name != "targets":
            continue
        changes = [c for c in r.changes if r.name != role or c.field not in ("version", "expires")]
        lines += [f"{r.name}: {_change(c)}" for c in changes]
        if r.keys_added:
            lines.append(f"{r.name}: + key " + ", ".join(k[:8] for k in r.keys_added))
        if r.keys_removed:
            lines.append(f"{r.name}: - key " + ", ".join(k[:8] for k in r.keys_removed))
    for x in d.delegations:
        what = "; ".join(_change(c) for c in x.changes) if x.status == "changed" else ""
        sign = {"added": "+", "removed": "-", "changed": "~"}[x.status]
        lines.append(f"{sign} delegation {x.delegator} -> {x.name}" + (f": {what}" if what else ""))
    for t in d.targets:
        if t.status == "changed":
            lines.append(f"~ {t.path}: " + "; ".join(_change(c) for c in t.changes))
        else:
            lines.append(f"{'+' if t.status == 'added' else '-'} {t.path}")
    return lines


def _failures(out: Console, reports: list[tuple[str, InspectReport]]) -> None:
    rows = [(label, f) for label, r in reports for f in r.failures]
    if rows:
        t = _table("Verification failures", "side", "where", "kind", "what")
        for label, f in rows:
            t.add_row(label, f.where, f.kind, f.message)
        out.print(t)


def render_diff(d: ReportDiff) -> str:
    """The human diff: both sides and their verdicts, then a table per part that changed."""
    buf = io.StringIO()
    out = _console(buf)
    out.print(_side("old", d.old), overflow="fold")
    out.print(_side("new", d.new), overflow="fold")
    _failures(out, [("old", d.old), ("new", d.new)])
    if not d.changed:
        out.print("No changes.")
        return _text(buf)
    if d.repository:
        out.print("Repository: " + "; ".join(_change(c) for c in d.repository))
    if d.roles:
        t = _table("Roles", "role", "change", keep=("role",))
        for r in d.roles:
            lines = [_change(c) for c in r.changes]
            lines += [f"+ key {k[:16]}" for k in r.keys_added]
            lines += [f"- key {k[:16]}" for k in r.keys_removed]
            t.add_row(r.name, "\n".join(lines))
        out.print(t)
    if d.keys_added or d.keys_removed:
        t = _table("Keys", "", "key id", "type / scheme", "demo", "roles")
        for sign, keys in (("+", d.keys_added), ("-", d.keys_removed)):
            for k in keys:
                demo = "DEMO" if k.demo else "no"
                t.add_row(sign, k.keyid[:16], f"{k.keytype} / {k.scheme}", demo, ", ".join(k.roles))
        out.print(t)
    if d.delegations:
        t = _table("Delegations", "", "delegator -> role", "change")
        for x in d.delegations:
            sign = {"added": "+", "removed": "-", "changed": "~"}[x.status]
            t.add_row(sign, f"{x.delegator} -> {x.name}", "\n".join(_change(c) for c in x.changes))
        out.print(t)
    if d.targets:
        t = _table("Targets", "", "target", "what", keep=("",))
        for y in d.targets:
            if y.status == "changed":
                t.add_row("~", y.path, "\n".join(_change(c) for c in y.changes))
            else:
                t.add_row("+" if y.status == "added" else "-", y.path, _artifact_line(y.target))
        out.print(t)
    return _text(buf)


def _signatures(role: RoleInfo) -> str:
    ok = len(role.signatures_valid) >= role.threshold
    return f"{len(role.signatures_valid)}/{role.threshold} {'valid' if ok else 'INVALID'}"


def _history_table(title: str, entries: tuple[VersionEntry, ...], first: str) -> Table:
    t = _table(title, "version", "root", "expires", "signatures", "changes", keep=("version",))
    for e in entries:
        r = e.report
        if r is None:
            t.add_row(str(e.version), "-", "-", "-", f"REFUSED: {e.problem}")
            continue
        role = r.role(e.role)
        changes = _summary(e.changes, e.role) if e.changes is not None else [first]
        changes += [f"FAILURE {f.where}: {f.message}" for f in r.failures]
        t.add_row(
            str(e.version),
            f"v{r.root_version}",
            _time(role.expires),
            _signatures(role),
            "\n".join(changes) or "(no change)",
        )
    return t


def render_history(h: History, findings: tuple[Finding, ...]) -> str:
    """The human history: a table of root versions, one of targets versions, the findings."""
    buf = io.StringIO()
    out = _console(buf)
    verdict = "every version listed VERIFIES" if h.verified else "NOT everything VERIFIES"
    out.print(f"repository: {h.source}", overflow="fold")
    out.print(f"verdict: {verdict} from pinned root v{h.current.pinned_root_version}")
    _failures(out, [("current", h.current)])
    if h.roots_not_listed:
        out.print(f"({h.roots_not_listed} older root versions not listed)")
    out.print(_history_table("Root versions", h.roots, "the pinned root"))
    if h.targets_not_listed:
        out.print(f"({h.targets_not_listed} older targets versions not listed)")
    out.print(_history_table("Targets versions", h.targets, "the oldest held"))
    if h.targets_not_kept:
        kept = ", ".join(str(v) for v in h.targets_not_kept)
        out.print(f"targets versions not kept: {kept}", overflow="fold")
    if findings:
        t = _table(
            "Findings across versions (docs/FINDINGS.md)", "id", "severity", "what / fix",
            keep=("id",), leading=1,
        )  # fmt: skip
        for group in _grouped(findings):
            first = group[0]
            what = "\n".join(f"{f.where}: {f.detail}" for f in group)
            t.add_row(first.id, first.severity, f"{first.title}\n{what}\nfix: {first.fix}")
        out.print(t)
    else:
        out.print("Findings across versions: none")
    return _text(buf)
