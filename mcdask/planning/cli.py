"""``mcdask plan``: task assignments for every device count 1..N, or a prediction for one plan.

Examples::

    mcdask plan --workload vgg16 --devices 12                  # tables, optimal strategy, pi3
    mcdask plan -w action -n 12 --strategy paper --json        # last stdout line: one JSON object
    mcdask plan -w alexnet -n 6 -o plan.json                   # write the plan for n = 6
    mcdask plan -w alexnet -n 6 -o 'plan-{n}.json'             # write every feasible n
    mcdask plan -w alexnet -n 6 --top 3                        # and n = 6's runners-up within 10 %
    mcdask plan --evaluate alexnet-6dev                        # a packaged paper plan (or a file)

No TensorFlow and no Dask distributed are imported (dask.config gives the default backend).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

import workloads
from mcdask import plans as paper_plans
from mcdask.errors import McdaskError, PlanError
from mcdask.model import kinds as builtin_devices
from mcdask.model import runtimes
from mcdask.model.files import read_object
from mcdask.model.kinds import homogeneous
from mcdask.model.plan import Plan, stage_label
from mcdask.model.profile import Profile
from mcdask.planning.costmodel import Cost, evaluate
from mcdask.planning.planner import STRATEGIES, TOP_WITHIN, plan_all, plan_top
from mcdask.planning.result import PlanResult


def _profile(spec: str, n: int | None, names: tuple[str, ...] | None, baseline: int | None,
             runtime: str | None = None) -> Profile:
    """A built-in kind (n devices, or the given names) running ``runtime``, or a profile file
    (whose memory figures were measured on its devices)."""
    if spec in builtin_devices.KINDS:
        return homogeneous(spec, None if names else n, names=names, baseline_bytes=baseline,
                           runtime=runtime or default_runtime())
    path = Path(spec)
    if not path.exists():
        raise click.BadParameter(f"{spec!r} is neither a built-in kind ({', '.join(builtin_devices.KINDS)}) "
                                 f"nor an existing profile file", param_hint="--profile")
    prof = Profile.load(path)
    if baseline is not None:
        raise click.BadParameter("--baseline-bytes applies to built-in kinds; edit baseline_bytes in the file",
                                 param_hint="--baseline-bytes")
    if names and not set(names) <= set(prof.device_names):
        if len(prof.kinds) != 1:
            raise click.BadParameter(f"plan devices {list(names)} are not all in {spec}, and its devices are of "
                                     f"several kinds, so they cannot be renamed", param_hint="--profile")
        (kind,) = prof.kinds.values()
        return homogeneous(kind, names=names, link=prof.default_link)
    return prof


def default_runtime(backend: str | None = None) -> str:
    """The runtime devices run on ``backend``, else on ``mcdask.worker.backend`` (litert: on
    ``mcdask.worker.litert-kernels``)."""
    import dask.config

    from mcdask.config import register_defaults

    register_defaults()
    return runtimes.for_backend(backend or dask.config.get("mcdask.worker.backend", None),
                                dask.config.get("mcdask.worker.litert-kernels", None))


def _mb(x: int) -> str:
    return f"{x / 1e6:,.0f}"


def _print_result(console, workload, r: PlanResult) -> None:
    from rich.markup import escape
    from rich.table import Table

    if not r.feasible:
        console.print(f"[bold]{r.devices} device(s)[/bold]: [red]infeasible[/red]: {escape(r.reason)}")
        return
    c, plan = r.cost, r.plan
    assert c is not None and plan is not None, "a feasible result carries its plan and cost"
    table = Table(title=f"{r.devices} device(s): {c.ips:.3f} IPS predicted, latency {c.latency_s:.3f} s; "
                        f"bottleneck: {escape(c.bottleneck)}", title_justify="left")
    table.add_column("device")
    table.add_column("tasks")
    table.add_column("memory MB", justify="right")
    table.add_column("of MB", justify="right")
    for dev in plan.devices:
        table.add_row(dev, escape(", ".join(c.tasks.get(dev, []))), _mb(c.memory_bytes[dev]),
                      _mb(c.memory_limit_bytes[dev]))
    console.print(table)


def _candidates(plans: list[Plan]) -> list[dict]:
    """``--top``'s candidates for JSON: each plan with its prediction, relative to the first's."""
    best = plans[0].predicted["ips"]
    return [{"plan_id": p.id, "predicted_ips": p.predicted["ips"], "predicted_latency_s": p.predicted["latency_s"],
             "relative_ips": p.predicted["ips"] / best, "plan": p.to_dict()} for p in plans]


def _print_candidates(console, workload, n: int, plans: list[Plan]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{n} device(s): {len(plans)} plan(s) predicted within {TOP_WITHIN * 100:g} % of the best "
                        "(too close for the profile to choose; measure them)", title_justify="left")
    for col, right in (("#", True), ("plan", False), ("predicted IPS", True), ("of the best", True),
                       ("latency s", True), ("stages (x replicas, / shards)", False)):
        table.add_column(col, justify="right" if right else "left")
    for i, (p, c) in enumerate(zip(plans, _candidates(plans))):
        shape = " | ".join(stage_label(workload, st) + (f" / {len(st.shards)}" if st.split
                                                        else f" x{len(st.shards[0].devices)}") for st in p.stages)
        table.add_row(str(i), c["plan_id"], f"{c['predicted_ips']:.3f}", f"{c['relative_ips']:.1%}",
                      f"{c['predicted_latency_s']:.3f}", escape(shape))
    console.print(table)


def _evaluate(spec: str, profile_spec: str, baseline: int | None, runtime: str | None, as_json: bool) -> None:
    if spec in paper_plans.names():
        raw, source = paper_plans.raw(spec), f"packaged plan {spec}"
    elif not Path(spec).exists():
        raise click.BadParameter(f"{spec!r} is neither a packaged plan ({', '.join(paper_plans.names())}) nor "
                                 "a plan file", param_hint="--evaluate")
    else:
        raw, source = read_object(spec, "plan", PlanError), spec
    try:
        plan = Plan.from_dict(raw)
        workload = workloads.get(plan.workload)
        plan.validate(workload)
    except ValueError as e:   # PlanError, or a workload mcdask does not know
        raise PlanError(f"{source}: {e}") from None
    prof = _profile(profile_spec, None, plan.devices, baseline, runtime)
    cost: Cost = evaluate(workload, plan, prof)
    paper = raw.get("paper")
    measured = paper.get("measured_ips") if isinstance(paper, dict) else None
    if isinstance(measured, bool) or not isinstance(measured, (int, float)) or not measured > 0:
        measured = None
    out = {"workload": workload.name, "plan_file": source, "profile": prof.name, "predicted_ips": cost.ips,
           "predicted_latency_s": cost.latency_s, "bottleneck": cost.bottleneck, "fits": cost.fits,
           "assignment": [{"device": d, "tasks": cost.tasks.get(d, []), "memory_bytes": cost.memory_bytes[d],
                           "memory_limit_bytes": cost.memory_limit_bytes[d]} for d in plan.devices],
           "paper_measured_ips": measured, "predicted_over_measured": cost.ips / measured if measured else None}
    if as_json:
        click.echo(json.dumps(out))
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    _print_result(console, workload, PlanResult(len(plan.devices), plan, cost))
    if not cost.fits:
        console.print(f"[red]over memory[/red] (need, have): {escape(str(cost.over_memory))}")
    if measured:
        console.print(escape(f"paper measured {measured:.2f} IPS ({raw['paper'].get('source', '')}); "
                             f"predicted/measured = {cost.ips / measured:.2f}"))
    if plan.note:
        console.print(escape(f"note: {plan.note}"))


@click.command("plan")
@click.option("--workload", "-w", type=click.Choice(workloads.NAMES), help="Workload to split.")
@click.option("--devices", "-n", type=click.IntRange(min=1), help="Plan for every n in 1..N devices.")
@click.option("--profile", "profile_spec", default="pi3", show_default=True,
              help=f"Built-in device kind ({', '.join(builtin_devices.KINDS)}) or a profile JSON file.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="optimal", show_default=True)
@click.option("--baseline-bytes", type=click.IntRange(min=0), default=None,
              help="Override a built-in kind's runtime baseline memory (TensorFlow + worker), in bytes.")
@click.option("--backend", type=click.Choice(runtimes.NAMES), default=None,
              help="The runtime whose memory a built-in kind counts (litert: on mcdask.worker.litert-kernels; "
                   "tf1.5: the paper's Pis) [default: mcdask.worker.backend, else tensorflow].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the last stdout line).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the plan for n = N here; a path containing {n} writes every feasible n.")
@click.option("--evaluate", "evaluate_spec", metavar="PLAN",
              help="Predict this plan file (or packaged paper plan name) on the profile instead of planning.")
@click.option("--top", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help=f"Also show up to K distinct plans for n = N predicted within {TOP_WITHIN * 100:g} % of the best "
                   "(the search's runners-up, not a proven k-best); with --json, a candidates list.")
def plan(workload, devices, profile_spec, strategy, baseline_bytes, backend, as_json, output, evaluate_spec, top):
    """Choose a task assignment for every device count 1..N."""
    if backend == "litert":   # on the kernels a litert deployment would use
        backend = default_runtime("litert")
    try:
        if evaluate_spec:
            if top > 1:
                raise click.UsageError("--top ranks the planner's own plans; it does not apply to --evaluate")
            _evaluate(evaluate_spec, profile_spec, baseline_bytes, backend, as_json)
            return
        if not workload or not devices:
            raise click.UsageError("give --workload and --devices (or --evaluate PLAN)")
        w = workloads.get(workload)
        prof = _profile(profile_spec, devices, None, baseline_bytes, backend)
        results = plan_all(w, prof, devices, strategy)
        candidates = (plan_top(w, prof, devices, top, TOP_WITHIN, strategy)
                      if top > 1 and results[-1].feasible else [])
    except McdaskError as e:
        raise click.ClickException(str(e)) from e
    if output:
        chosen = [r for r in results if r.feasible] if "{n}" in output else [results[-1]]
        if not chosen or not chosen[-1].feasible:
            raise click.ClickException(f"no feasible plan for {devices} device(s) to write: {results[-1].reason}")
        for r in chosen:
            path = Path(output.replace("{n}", str(r.devices)))
            r.plan.save(path)
    if as_json:
        doc = {"workload": w.name, "profile": prof.name, "strategy": strategy, "plans": [r.to_dict() for r in results]}
        if top > 1:
            doc["candidates"] = _candidates(candidates) if candidates else []
        click.echo(json.dumps(doc))
        return
    from rich.console import Console

    console = Console()
    console.print(f"[bold]{w.name}[/bold] on {prof.name}, strategy {strategy}")
    for r in results:
        _print_result(console, w, r)
    if candidates:
        _print_candidates(console, w, devices, candidates)
    if output:
        console.print(f"wrote {output}")
