"""The ``/mcdask`` page on the scheduler's dashboard: plain Tornado handlers added to the
running dashboard (Bokeh server apps cannot be added once it has started).

``/mcdask`` is an HTML page: the plan's devices are in the first response; its script then
fetches ``/mcdask/state.json`` (the snapshot) and ``/mcdask/plots.json`` (bokeh plots as
``json_item``) every second and renders them with BokehJS served from the local bokeh package
at ``/mcdask/static/`` (no CDN: devices and schedulers often have no internet).
"""

from __future__ import annotations

import html
import json
import time

from tornado import web

from mcdask.dashboard.plugin import current

STATIC = "mcdask/static/js/"


class _Base(web.RequestHandler):
    def initialize(self, scheduler=None):
        self.scheduler = scheduler

    def snap(self) -> dict:
        from mcdask.dashboard.state import snapshot

        plugin = current(self.scheduler)
        return plugin.state() if plugin is not None else snapshot(self.scheduler, None)


class StateHandler(_Base):
    def get(self):
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps(self.snap(), default=str))


_PLOTS: dict = {"t": 0.0, "body": "{}"}


class PlotsHandler(_Base):
    def get(self):
        from mcdask.dashboard.plots import plots

        if time.monotonic() - _PLOTS["t"] > 0.9:   # build at most once a second, however many viewers
            _PLOTS["body"] = json.dumps(plots(self.snap()), default=str)
            _PLOTS["t"] = time.monotonic()
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(_PLOTS["body"])


class PageHandler(_Base):
    def get(self):
        snap = self.snap()
        dep = snap.get("deployment")
        if dep:
            rows = "".join(f"<li class='dev' data-device='{html.escape(d['device'])}'><b>{html.escape(d['device'])}"
                           f"</b> on {html.escape(str(d['worker']))}: {html.escape(', '.join(d['pieces']))}</li>"
                           for d in snap["devices"])
            head = (f"plan <b>{html.escape(str(dep['plan_id']))}</b> ({html.escape(str(dep['strategy']))}, "
                    f"{html.escape(str(dep['workload']))}), {len(snap['devices'])} devices<ul id='devices'>{rows}</ul>")
        else:
            head = "<p id='no-plan'>No plan deployed yet: run <code>mcdask run</code> against this scheduler.</p>"
        self.set_header("Cache-Control", "no-store")
        self.write(PAGE.replace("{{HEAD}}", head))


def routes(scheduler) -> list:
    from bokeh.util.paths import bokehjs_path

    kw = {"scheduler": scheduler}
    return [(r"/mcdask", PageHandler, kw), (r"/mcdask/state\.json", StateHandler, kw),
            (r"/mcdask/plots\.json", PlotsHandler, kw),
            (r"/mcdask/static/(.*)", web.StaticFileHandler, {"path": str(bokehjs_path())})]


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mcdask: the swarm</title>
<script src="mcdask/static/js/bokeh.min.js"></script>
<style>
body{font-family:system-ui,sans-serif;margin:1em 2em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em} h2{font-size:1.1em;margin:1em 0 .3em}
table{border-collapse:collapse;font-size:.9em} td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left} .neck{color:#d62728;font-weight:bold}
#grid{display:grid;grid-template-columns:1fr 1fr;gap:1em} .ev{font-family:monospace;font-size:.85em}
.stale{color:#888}
</style></head><body>
<h1>mcdask: the swarm <small>(<a href="status">task stream</a> &middot; <a href="workers">workers</a>
&middot; <a href="mcdask/state.json">state.json</a> &middot; <a href="metrics">metrics</a>)</small></h1>
<div id="plan">{{HEAD}}</div>
<h2>Streams</h2>
<table id="streams"><thead><tr><th>stream</th><th>plan</th><th>IPS</th><th>latency p50 ms</th>
<th>p99 ms</th><th>ok</th><th>errors</th><th>dropped</th><th>warmup</th><th>in flight</th><th>state</th></tr></thead>
<tbody></tbody></table>
<h2>Devices</h2>
<table id="devices-table"><thead><tr><th>device</th><th>worker</th><th>pieces</th><th>cpu</th><th>executing</th>
<th>memory</th><th>limit</th><th>predicted</th></tr></thead><tbody></tbody></table>
<div id="grid"><div id="plot-util"></div><div id="plot-memory"></div></div>
<div id="plot-ips"></div>
<h2>Events</h2><div id="events" class="ev"></div>
<script>
const ENT = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ENT[c]);
const ms = x => x == null ? "-" : (x * 1000).toFixed(1);
const gib = b => (b / 1073741824).toFixed(2) + " GiB";
let ticks = 0;
const views = {};
async function tick() {
  try {
    const s = await (await fetch("mcdask/state.json", {cache: "no-store"})).json();
    document.querySelector("#streams tbody").innerHTML = s.streams.map(st =>
      `<tr class="${st.live ? "" : "stale"}"><td>${esc(st.stream)}</td><td>${esc(st.plan_id)}</td>
       <td class="ips">${(st.ips || 0).toFixed(2)}</td><td>${ms(st.latency_p50_s)}</td><td>${ms(st.latency_p99_s)}</td>
       <td class="ok">${st.frames.ok || 0}</td><td>${st.frames.error || 0}</td><td>${st.frames.dropped || 0}</td>
       <td>${st.frames.warmup || 0}</td><td>${st.in_flight}</td>
       <td>${st.live ? "running" : st.done ? "done" : "silent " + st.age_s + " s"}</td></tr>`).join("");
    document.querySelector("#devices-table tbody").innerHTML = s.devices.map(d =>
      `<tr class="${d.bottleneck ? "neck" : ""}"><td>${esc(d.device)}${d.bottleneck ? " (bottleneck)" : ""}</td>
       <td>${esc(d.worker)}${d.present ? "" : " (gone)"}</td><td>${esc(d.pieces.join(", "))}</td>
       <td>${(d.utilisation * 100).toFixed(0)}%</td><td>${d.executing}</td><td>${gib(d.memory_bytes)}</td>
       <td>${gib(d.memory_limit_bytes)}</td><td>${gib(d.predicted_memory_bytes)}</td></tr>`).join("");
    const evs = s.streams.flatMap(st => (st.events || []).map(e => [st.stream, e]));
    document.getElementById("events").innerHTML = evs.length ? evs.map(([sid, e]) =>
      `<div>${esc(sid)} +${e.t_s}s ${esc(e.kind)}: ${esc(e.message)}</div>`).join("") : "none yet";
    document.body.dataset.updated = String(s.time);
    if (++ticks % 2 !== 1) return;   // plots every other second
    const p = await (await fetch("mcdask/plots.json", {cache: "no-store"})).json();
    for (const [id, item] of Object.entries(p)) {   // replace each plot, freeing the old one's views
      for (const v of views[id]?.roots ?? []) v.remove();
      document.getElementById(id).innerHTML = "";
      views[id] = await Bokeh.embed.embed_item(item, id);
    }
    document.body.dataset.plotted = String(Object.keys(p).length);
  } catch (err) { console.log(err); }
}
tick(); setInterval(tick, 1000);
</script></body></html>
"""
