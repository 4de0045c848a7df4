"""``otakit fleet simulate``: the fleet simulator's command line (work in signer.fleet)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from repo.errors import FleetCheckError, UsageError
from signer.fleet.config import FAULTS, SCENARIOS, SimConfig
from verifier.cli_common import JsonOpt, new_app
from verifier.cli_contract import EPILOG, run_state
from verifier.effects import RealDisk, write_atomic

_ENDS = ("on_new", "rolled_back", "recalled", "not_started")

fleet_app = new_app("Fleet tools: simulate a fleet, collect device reports.")

_DEFAULT = SimConfig()


@fleet_app.command("simulate", epilog=EPILOG)
def simulate_cmd(
    ctx: typer.Context,
    devices: Annotated[int, typer.Option(min=1, max=100_000, help="Devices.")] = _DEFAULT.devices,
    workers: Annotated[
        int, typer.Option(min=1, max=256, help="Devices updating at once.")
    ] = _DEFAULT.workers,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KIND=SHARE",
            help=f"Share of devices with a fault, repeatable; KIND one of {', '.join(FAULTS)} "
            "(default 3 %, 3 %, 2 %, 2 %: 10 % in all).",
        ),
    ] = None,
    no_base: Annotated[
        float, typer.Option(min=0, max=1, help="Share starting on 0.9 (no delta: full).")
    ] = _DEFAULT.no_base,
    image_mib: Annotated[int, typer.Option(min=1, max=256, help="Image size, MiB.")] = (
        _DEFAULT.image_size >> 20
    ),
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = _DEFAULT.seed,
    scenario: Annotated[
        str,
        typer.Option(
            help=f"One of {', '.join(SCENARIOS)}: halt = 2.0 fails its health check on "
            "every device and the gate halts it after the first wave; recall = 2.0 is "
            "recalled after the first wave."
        ),
    ] = _DEFAULT.scenario,
    waves: Annotated[
        str | None,
        typer.Option(
            metavar="SPEC",
            help='Release 2.0 in waves, e.g. "10%@0,100%@1h" (simulated time).',
        ),
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep the run here (default: a new temp dir).")
    ] = None,
    html: Annotated[Path | None, typer.Option(help="Write the HTML report here.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Update a simulated fleet from nginx, with injected faults.

    Publishes 0.9, 1.0 and 2.0 (delta from 1.0 only), starts each device on 1.0 or 0.9 and
    updates it to 2.0 through cut connections, power cuts, failing health checks and late
    devices; then checks every device: on 2.0, rolled back, recalled, never started (waves,
    halt, recall), or on neither (must be 0).
    """
    from signer.fleet.report_html import render
    from signer.fleet.simulate import simulate

    run = run_state(ctx, json_out)
    faults = _faults(fault) if fault else _DEFAULT.faults
    config = SimConfig(
        devices=devices, workers=workers, faults=faults, no_base=no_base,
        image_size=image_mib << 20, seed=seed, scenario=scenario, waves=waves,
    )  # fmt: skip
    result = simulate(config, workdir, say=run.note)
    s = result.summary
    if html is not None:
        write_atomic(RealDisk(), html.absolute(), render(s).encode())
        run.note(f"HTML report: {html}")
    data = {
        **s.to_json(),
        "outcomes": result.outcomes,
        "devices_by_fault": result.devices_by_fault,
        "delta_downloads": result.delta_downloads,
        "full_downloads": result.full_downloads,
        "metadata_bytes": result.metadata_bytes,
        "scenario": result.scenario,
        "action": result.action,
        "bytes_after_action": result.bytes_after_action,
        "recall_kinds": result.recall_kinds,
        "workdir": str(result.workdir.absolute()),
    }
    text = (
        f"{s.devices} devices in {s.wall_s:.1f} s ({s.devices_per_minute:.0f} per minute): "
        f"{s.on_new} on {s.new_version}, {s.rolled_back} rolled back, {s.recalled} "
        f"recalled, {s.not_started} never started {s.new_version}, "
        f"{s.on_neither} on neither\n"
        + (
            f"operator: {result.action}; targets bytes served after it by version: "
            f"{result.bytes_after_action or 'none'}\n"
            if result.action
            else ""
        )
        + f"targets served {s.bytes_served} bytes (bound {s.bytes_bound}, all full "
        f"{s.bytes_all_full}); metadata {result.metadata_bytes} bytes"
    )
    if s.on_neither:
        bad = [f"{k} {n}" for k, n in sorted(result.outcomes.items()) if k not in _ENDS]
        raise FleetCheckError(
            f"{s.on_neither} of {s.devices} devices ended on neither version ({', '.join(bad)}); "
            f"expected every device on {s.new_version}, rolled back, recalled or not started",
            hint=f"each device's state directory is under {result.workdir}/devices; "
            "see the reasons in the --json report",
        )
    run.result(data, text)


@fleet_app.command("collect", epilog=EPILOG)
def collect_cmd(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Option("--dir", metavar="DIR", help="Where reports are kept (one a device).")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free).")] = 8081,
    json_out: JsonOpt = False,
) -> None:
    """Store device reports sent to POST /report until interrupted.

    Reports (otakit-device report --post URL/report) are unsigned information: they
    feed otakit rollout status --reports and otakit rollout gate, never a device.
    """
    from repo.serve import serve_until_interrupted, server_url
    from signer.fleet.collect import REPORT_PATH, make_collector

    run = run_state(ctx, json_out)
    server = make_collector(directory, host, port)
    url = server_url(server)
    run.result({"url": url + REPORT_PATH, "directory": str(directory)}, url + REPORT_PATH)
    run.note(f"collecting reports into {directory}; press Ctrl-C to stop")
    serve_until_interrupted(server, run.note)


def _faults(given: list[str]) -> tuple[tuple[str, float], ...]:
    out = []
    for item in given:
        kind, sep, share = item.partition("=")
        try:
            value = float(share)
        except ValueError:
            value = -1.0
        if not sep or kind not in FAULTS or not 0 <= value <= 1:
            raise UsageError(
                f"--fault: expected KIND=SHARE with KIND one of {list(FAULTS)} and SHARE in "
                f"0..1, found {item!r}"
            )
        out.append((kind, value))
    return tuple(out)
