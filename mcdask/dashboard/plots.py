"""The page's plots, built with bokeh from a state snapshot and shipped as ``json_item``s
(rendered in the browser by the BokehJS the bokeh package ships, served locally)."""

from __future__ import annotations

import time

from bokeh.embed import json_item
from bokeh.models import ColumnDataSource, FactorRange, NumeralTickFormatter, Range1d
from bokeh.models.annotations.labels import LabelSet
from bokeh.plotting import figure

NECK, BUSY, IDLE, LIMIT = "#d62728", "#1f77b4", "#c7c7c7", "#e8e8e8"
GiB = 1024 ** 3


def memory_plot(snap: dict):
    """Each device's worker memory against its limit, with the pieces it holds."""
    devs = snap["devices"]
    names = [d["device"] for d in devs][::-1]
    data = {"device": names,
            "limit": [d["memory_limit_bytes"] / GiB for d in devs][::-1],
            "used": [d["memory_bytes"] / GiB for d in devs][::-1],
            "pieces": [", ".join(d["pieces"]) or "-" for d in devs][::-1]}
    src = ColumnDataSource(data)
    right = max([0.1] + data["limit"] + data["used"])
    fig = figure(y_range=FactorRange(factors=names), x_range=Range1d(start=0, end=right),
                 height=60 + 34 * len(names), sizing_mode="stretch_width",
                 title="Plan: pieces per device, memory used / limit (GiB)", toolbar_location=None,
                 tooltips=[("device", "@device"), ("pieces", "@pieces"), ("used GiB", "@used{0.00}"),
                           ("limit GiB", "@limit{0.00}")])
    fig.hbar(y="device", right="limit", height=0.7, color=LIMIT, source=src)
    fig.hbar(y="device", right="used", height=0.7, color=BUSY, alpha=0.7, source=src)
    fig.add_layout(LabelSet(x=0, y="device", text="pieces", x_offset=4, y_offset=-6, text_font_size="11px",
                            source=src))
    return fig


def utilisation_plot(snap: dict):
    """CPU use per device; the predicted bottleneck in red."""
    devs = snap["devices"]
    src = ColumnDataSource({"device": [d["device"] for d in devs],
                            "util": [d["utilisation"] for d in devs],
                            "executing": [d["executing"] for d in devs],
                            "color": [NECK if d["bottleneck"] else BUSY for d in devs]})
    top = max([1.0] + [d["utilisation"] * 1.1 for d in devs])
    fig = figure(x_range=FactorRange(factors=[d["device"] for d in devs]), y_range=Range1d(start=0, end=top),
                 height=260, sizing_mode="stretch_width",
                 title="Utilisation per device (1 = one core busy; red: predicted bottleneck)",
                 toolbar_location=None, tooltips=[("device", "@device"), ("cpu", "@util{0%}"),
                                                  ("tasks executing", "@executing")])
    fig.vbar(x="device", top="util", width=0.7, color="color", source=src)
    fig.yaxis.formatter = NumeralTickFormatter(format="0%")
    return fig


def ips_plot(snap: dict):
    """IPS of each stream over the last minutes."""
    fig = figure(height=220, sizing_mode="stretch_width", title="Frames classified per second (rolling)",
                 x_axis_label="seconds ago", toolbar_location=None)
    now = time.time()
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
    for i, st in enumerate(snap["streams"][:len(palette)]):
        pts = st.get("ips_history") or []
        fig.line([t - now for t, _ in pts], [v for _, v in pts], color=palette[i], line_width=2,
                 legend_label=st["stream"][-30:])
    if fig.legend:
        fig.legend.location = "top_left"
    return fig


def plots(snap: dict) -> dict:
    """div id -> bokeh json_item."""
    if not snap.get("deployment"):
        return {}
    return {"plot-memory": json_item(memory_plot(snap)), "plot-util": json_item(utilisation_plot(snap)),
            "plot-ips": json_item(ips_plot(snap))}
