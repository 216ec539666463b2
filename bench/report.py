"""Write a bench result as JSON, a Markdown table and PNG plots into a folder."""

from __future__ import annotations

import json
from pathlib import Path

from . import paper


def _f(x, nd=2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and x == float("inf"):
        return "inf"
    return f"{x:.{nd}f}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _ips(r: dict) -> str:
    """A row's IPS at Pi speed; with repeats, the median and the range of the runs."""
    runs = r.get("runs")
    if not runs:
        return _f(r["ips_pi_speed"])
    ips = [x["ips_pi_speed"] for x in runs]
    return f"{_f(r['ips_median'])} ({len(ips)} runs: {_f(min(ips))}-{_f(max(ips))})"


def backends(result: dict) -> list[str]:
    """The device runtimes a result measured, in its order (one for a result of one backend)."""
    s = result["settings"]
    return list(s.get("backends") or [s.get("backend", "tensorflow")])


def _peak(r: dict) -> str:
    """The highest device peak resident memory of a row against its device's limit, in MB."""
    peaks, limits = r.get("device_peak_rss_bytes") or {}, r.get("device_memory_limit_bytes") or {}
    if not peaks:
        return "-"
    d = max(peaks, key=lambda k: peaks[k])
    limit = limits.get(d)
    return f"{peaks[d] / 1e6:,.0f}" + (f" / {limit / 1e6:,.0f}" if limit else "")


def markdown(result: dict) -> str:
    s = result["settings"]
    several = len(backends(result)) > 1
    farms = result.get("farms") or {s.get("backend"): result.get("farm") or {}}
    lines = [f"# mcdask bench: emulated pi3 farm (time scale {s['time_scale']})", ""]
    profiles = s.get("profiles") or {s.get("backend"): s.get("profile")}
    for runtime, farm in farms.items():
        lines.append((f"Farm for {runtime}: " if several else "Farm ")
                     + f"mode: {farm.get('mode')}; CPU capped: {farm.get('cpu_capped')}; network shaped: "
                     f"{farm.get('network_shaped')}; planned on the {profiles.get(runtime, '-')} profile.")
        if farm.get("not_capped_reason"):
            lines.append(f"**Not capped:** {farm['not_capped_reason']}")
    lines.append(f"Backend{'s' if several else ''}: {', '.join(backends(result))}. "
                 f"Machine: {result['machine']['cores']} cores. "
                 f"IPS at Pi speed = measured IPS / time scale. Wall time {result['wall_s']:.0f} s.")
    lines.append("")
    lead = "| backend " if several else ""
    for workload in s["workloads"]:
        rows = [r for r in result["rows"] if r["workload"] == workload]
        lines += [f"## {workload}", "",
                  lead + "| devices | strategy | IPS (Pi speed) | predicted | meas/pred | latency p50 s | p99 s | "
                  "compute bound | compute+memory bound | link bound | efficiency | util mean / busiest | "
                  "J/inf (static+dyn) | client+scheduler CPU / frame time | Dask CPU on devices / model CPU | "
                  "device peak / limit MB |",
                  "|---" * (16 + several) + "|"]
        for r in rows:
            first = f"| {r.get('backend', '-')} " if several else ""
            if not r.get("feasible", True):
                lines.append(first + f"| {r['devices']} | {r['strategy']} | infeasible: {r['reason']} |" + " |" * 13)
                continue
            if r.get("failed"):
                lines.append(first + f"| {r['devices']} | {r['strategy']} | failed: {r['failed']} |" + " |" * 13)
                continue
            e = r.get("energy") or {}
            lines.append(
                first + f"| {r['devices']} | {r['strategy']} | {_ips(r)} | {_f(r['predicted_ips'])} | "
                f"{_f(r['measured_over_predicted'])} | {_f(r['latency_p50_s'] * s['time_scale'])} | "
                f"{_f(r['latency_p99_s'] * s['time_scale'])} | {_f(r['compute_bound_ips'])} | "
                f"{_f(r.get('placement_bound_ips'))} | "
                f"{_f(r['link_bound_ips'])} | {_f(r['efficiency'])} | {_f(r['utilisation_mean'])} / "
                f"{_f(r.get('bottleneck_busy'))} | "
                f"{_f(e.get('total_j'))} ({_f(e.get('static_j'))}+{_f(e.get('dynamic_j'))}) | "
                f"{_pct(r.get('runtime_share_of_frame_time'))} | {_pct(r.get('worker_runtime_over_compute'))} | "
                f"{_peak(r)} |")
        lines += ["", "Published reference rows:", "", "| system | devices (ours) | IPS | J/inf | source |",
                  "|---|---|---|---|---|"]
        for ref in paper.REFERENCE[workload]:
            lines.append(f"| {ref['system']} | {ref['devices']} | {ref['ips']} | {_f(ref.get('total_j'))} | "
                         f"{ref['source']} |")
        lines.append("")
    lines.append("Latencies are scaled back to Pi speed (x time scale). Compute bound: every device computing "
                 "whole frames (sum of 1 / whole-model time); compute+memory bound: the planner's best on the same "
                 "devices with free links and no per-task cost (memory pins layers to devices); efficiency: measured "
                 "over the tightest bound. Client+scheduler CPU / frame time: "
                 "host CPU seconds of the client and scheduler per frame, times the frame rate. Dask CPU on "
                 "devices / model CPU: the workers' own threads (event loop, comms, serialisation) against "
                 "their model threads, host CPU seconds. Util: each device's task time over the run; the "
                 "busiest device near 1 means the runtime kept the bottleneck fed. Device peak / limit: the "
                 "highest peak resident memory of the row's devices over the plan's build and its stream, "
                 "against that device's usable memory.")
    return "\n".join(lines) + "\n"


def summary(result: dict) -> str:
    """One line per (workload, devices): the optimal planner's row beside the paper strategy's
    IPS, for the README."""
    ts = result["settings"]["time_scale"]
    several = len(backends(result)) > 1
    lines = [("| backend " if several else "") + "| workload | devices | IPS (Pi speed) | paper strategy IPS | "
             "predicted | efficiency | busiest device | latency p50 s | J/inference |",
             "|---" * (9 + several) + "|"]
    for b in backends(result):
        for workload in result["settings"]["workloads"]:
            by = {(r["devices"], r["strategy"]): r for r in result["rows"]
                  if r["workload"] == workload and r.get("backend", b) == b}
            for n in sorted({d for d, _ in by}):
                r, pr = by.get((n, "optimal"), {}), by.get((n, "paper"), {})
                if "ips_pi_speed" not in r:
                    continue
                lines.append((f"| {b} " if several else "") + f"| {workload} | {n} | {_f(r['ips_pi_speed'])} | "
                             f"{_f(pr.get('ips_pi_speed'))} | "
                             f"{_f(r['predicted_ips'])} | {_f(r['efficiency'])} | {_f(r.get('bottleneck_busy'))} | "
                             f"{_f(r['latency_p50_s'] * ts)} | "
                             f"{_f((r.get('energy') or {}).get('total_j'))} |")
    return "\n".join(lines) + "\n"


def plots(result: dict, outdir: Path, name: str = "bench") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for workload in result["settings"]["workloads"]:
        rows = [r for r in result["rows"] if r["workload"] == workload and "ips_pi_speed" in r]
        if not rows:
            continue
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        several = len(backends(result)) > 1
        for b in backends(result):
            for strategy in sorted({r["strategy"] for r in rows}):
                rs = sorted((r for r in rows if r["strategy"] == strategy and r.get("backend", b) == b),
                            key=lambda r: r["devices"])
                if not rs:
                    continue
                n = [r["devices"] for r in rs]
                tag = f"{strategy}, {b}" if several else strategy
                ax1.plot(n, [r["ips_pi_speed"] for r in rs], "o-", label=f"measured ({tag})")
                ax1.plot(n, [r["predicted_ips"] for r in rs], "x--", label=f"predicted ({tag})")
                ax2.plot(n, [(r.get("energy") or {}).get("total_j") for r in rs], "o-", label=f"farm ({tag})")
        farm_ref = [r for r in paper.REFERENCE[workload] if "farm" in r["system"]]
        if farm_ref:
            ax1.plot([r["devices"] for r in farm_ref], [r["ips"] for r in farm_ref], "s", color="gray",
                     label="paper's Pi farm")
        for ref, style in (("Jetson TX2 (GPU)", "-"), ("Jetson TX2 (CPU)", ":")):
            r = paper.reference(workload, ref)
            ax1.axhline(r["ips"], color="k", linestyle=style, linewidth=1, label=ref)
            if r.get("total_j"):
                ax2.axhline(r["total_j"], color="k", linestyle=style, linewidth=1, label=ref)
        ax1.set(xlabel="devices", ylabel="inferences per second (Pi speed)", title=f"{workload}: IPS")
        ax2.set(xlabel="devices", ylabel="J per inference", title=f"{workload}: energy (pi3 power model)")
        ax1.legend(fontsize=7)
        ax2.legend(fontsize=7)
        fig.tight_layout()
        path = outdir / f"{name}-{workload}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    return out


def write(result: dict, outdir: Path, name: str = "bench") -> dict:
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / f"{name}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    (outdir / f"{name}.md").write_text(markdown(result))
    pngs = plots(result, outdir, name)
    return {"json": str(outdir / f"{name}.json"), "markdown": str(outdir / f"{name}.md"),
            "plots": [str(p) for p in pngs]}
