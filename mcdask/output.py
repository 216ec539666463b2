"""What the ``mcdask`` commands print: notes for people, the summary in words, the JSON line.

With ``--json`` the last line of stdout is one JSON object (the summary); everything for people
goes before it, on stderr. ``mcdask -q`` keeps results and errors only.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from mcdask.model.plan import Plan


def quiet() -> bool:
    """``mcdask -q``: no progress and no notes, only results and errors."""
    import os

    return os.environ.get("MCDASK_QUIET", "") not in ("", "0")


def say(as_json: bool, *lines: str) -> None:
    """Human output: to stderr when stdout is reserved for JSON; nothing with ``-q``."""
    if quiet():
        return
    for line in lines:
        click.echo(line, err=as_json)


def show_events_on_stderr() -> None:
    """Each event one line on stderr (``mcdask: device pi3-03 lost ...``). The Dask client's
    own reports of a lost connection (tracebacks of its reconnect attempts) are left out:
    the event says it in one line."""
    log = logging.getLogger("mcdask.events")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False
    for name in ("distributed.client", "distributed.batched", "distributed.comm", "distributed.core"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def nothing_classified(summary: dict, plan: Plan, workload) -> str | None:
    """Why a stream that ended normally classified no frame, or None if it classified some."""
    from mcdask.streaming.stream import frames_before_first_answer

    if summary["classified"] or summary.get("stopped"):
        return None
    need = frames_before_first_answer(plan, workload)
    if summary["frames"] < need:
        return (f"no frame was classified: {workload.name} answers from its {need}th frame on (its windows "
                f"fill first), and the source gave {summary['frames']}; stream at least {need} frames")
    return (f"no frame was classified: all {summary['frames']} frames were errors or dropped "
            f"({summary['errors']} errors, {summary.get('dropped', 0)} dropped)")


def finish(summary: dict, as_json: bool, human: list[str]) -> None:
    """The result: the summary for people (on stderr with ``--json``), then the JSON line."""
    for line in human:   # a result, so shown with -q too
        click.echo(line, err=as_json)
    if as_json:
        click.echo(json.dumps(summary))


def summary_lines(summary: dict, plan: Plan, workload) -> list[str]:
    lines = [f"plan {plan.id} ({plan.strategy}) for {len(plan.devices)} devices:"]
    lines += ["  " + line for line in plan.describe(workload)]
    p50, p99 = summary.get("latency_p50_s"), summary.get("latency_p99_s")
    lines.append(f"{summary['classified']} of {summary['frames']} frames classified in {summary['wall_s']:.2f} s: "
                 f"{summary['ips']:.2f} IPS, latency p50 {p50 if p50 is None else round(p50 * 1e3, 1)} ms, "
                 f"p99 {p99 if p99 is None else round(p99 * 1e3, 1)} ms")
    if summary.get("switches") or summary.get("resubmitted") or summary.get("errors"):
        gap = summary.get("longest_gap_s")
        lines.append(f"adapted: {summary.get('switches', 0)} plan switches, {summary.get('resubmitted', 0)} frames "
                     f"resubmitted, {summary.get('errors', 0)} errors, longest gap between answers "
                     f"{'-' if gap is None else f'{gap:.2f} s'}; now on plan {summary.get('final_plan_id')}")
    if summary.get("batches"):
        lines.append(f"dynamic batching: {summary['batches']} tasks of {summary['mean_batch']:.2f} frames on average "
                     f"(at most {summary['max_batch']}, waiting at most {summary['max_wait_ms']:g} ms for company)")
    if summary.get("stopped"):
        lines.append(f"STOPPED: {summary['stopped']}")
    if "last" in summary:
        top = summary["last"]
        lines.append(f"last frame {top['frame']}: {top.get('label', 'class')} {top['class']} ({top['score']:.3f}); "
                     f"weights: {summary.get('weights')}")
    if "keras" in summary:
        k = summary["keras"]
        lines.append(f"check against the Keras model's own predict: {k['checked']} frames, max |diff| "
                     f"{k['max_abs_diff']:.3g} (output scale {k['output_scale']:.3g}): "
                     f"{'EQUAL' if k['equal'] else 'DIFFERENT'}")
    if summary.get("max_abs_diff") is not None:
        lines.append(f"check against the unsplit model: {summary['checked']} frames, max |diff| "
                     f"{summary['max_abs_diff']:.3g} (output scale {summary['output_scale']:.3g}): "
                     f"{'EQUAL' if summary['equal'] else 'DIFFERENT'}")
    return lines


def why_this_plan(plan: Plan, workload, memory: int | None) -> list[str]:
    """What the plan does with the devices, in words: which stages are replicated (data
    parallel) and which layers are split (model parallel), and why."""
    per_device = f"devices of {memory / 1e6:.0f} MB" if memory else "pi3 devices"
    lines = [f"plan for {len(plan.devices)} {per_device}, {workload.param_bytes / 1e6:.0f} MB of weights:"]
    for st in plan.stages:
        layers = f"{workload.layers[st.start].name}..{workload.layers[st.end - 1].name}"
        if st.split:
            lines.append(f"  {workload.layers[st.end - 1].name} split by output units across {len(st.shards)} "
                         "devices (model parallel: no device holds it whole)")
        elif len(st.shards[0].devices) > 1:
            lines.append(f"  {layers} replicated on {len(st.shards[0].devices)} devices (data parallel: "
                         "consecutive frames go to different devices)")
    return lines
