"""A transferbench leaderboard as a Gradio app (a Hugging Face Space): the decision per benchmark first, then the
cells as a filterable, sortable table, learning curves, a Pareto plot of any two measures, the plan's predictions and
a CSV of what the filters keep. It reads a folder written by `transferbench report --publish DIR` (a local path) or
the Hub dataset repo it was pushed to (a dataset id), and needs neither transferbench nor a network for a local
folder: `python app.py [FOLDER_OR_DATASET_ID]`, then open http://127.0.0.1:7860.

Written by `transferbench report ... --publish DIR --space SPACE_DIR` (runners/report/space.py copies this file)."""
from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from html import escape
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine unless asked

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

DATA = "__TRANSFERBENCH_DATA__"  # replaced when the app is written: the published folder or dataset id
ALL = "all benchmarks"
# the cells' columns the table shows, in order, and the numeric ones a Pareto plot may use
SHOWN = ["benchmark", "task", "dataset", "model", "mode", "train_samples", "metric_name", "metric_mean", "metric_std",
         "n", "delta_vs_scratch", "cost_usd", "device_hours", "train_seconds", "samples_per_second",
         "peak_memory_bytes", "trainable_share", "adapter_bytes", "energy_kwh", "still_improving", "too_short"]
NUMERIC = ["metric_mean", "cost_usd", "device_hours", "train_seconds", "samples_per_second", "peak_memory_bytes",
           "trainable_share", "adapter_bytes", "energy_kwh", "train_samples", "delta_vs_scratch"]
# the static page's colours and markers (runners/report/plots.py), so a mode looks the same on the page and here
STYLE = {"scratch": ("#7f7f7f", "o"), "finetune": ("#1f77b4", "s"), "lora": ("#2ca02c", "D"),
         "linear-probe": ("#ff7f0e", "^"), "partial": ("#8c564b", "v"), "dora": ("#9467bd", "P"),
         "loha": ("#d62728", "*"), "lokr": ("#e377c2", "X"), "ia3": ("#17becf", "h"), "vera": ("#bcbd22", "p"),
         "adalora": ("#393b79", "H"), "oft": ("#637939", "<")}
PLAIN = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:.2g}")  # 20, 1,438, 0.0001: no 10^k
ROUND = 4  # digits the table shows for metrics (the CSV keeps full precision)
LOWER_IS_BETTER = {"cost_usd", "device_hours", "train_seconds", "peak_memory_bytes", "trainable_share",
                   "adapter_bytes", "energy_kwh", "train_samples"}


def resolve(source: str) -> Path:
    """A local folder as given; anything else is a Hub dataset id, downloaded once (huggingface_hub's cache)."""
    for path in (Path(__file__).resolve().parent / source, Path(source)):  # relative to the app first
        if path.is_dir():
            return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=source, repo_type="dataset"))


def short(dataset) -> str:
    """'builtin:digits' -> 'digits', 'hub:ag_news' -> 'ag_news': the page's benchmark names."""
    return re.sub(r"^(builtin|hub):", "", str(dataset))


def load(folder: Path) -> tuple[pd.DataFrame, dict, dict]:
    cells = pd.read_json(folder / "data" / "cells.jsonl", lines=True)
    cells.insert(0, "benchmark", [f"{short(d)} · {m}" for d, m in zip(cells["dataset"], cells["model"])])
    cells = cells[[c for c in SHOWN if c in cells.columns]]
    cells = cells.dropna(axis=1, how="all")  # energy on CPU, adapter size in old stores: nothing to show
    read = lambda name: json.loads((folder / name).read_text()) if (folder / name).is_file() else {}  # noqa: E731
    return cells, read("decisions.json"), read("plan.json")


HEADERS = ("benchmark", "examples", "use", "metric", "cost/run", "beats significantly")
# the decision table stacks into one block per row on a phone: no sideways scroll on the first screen
CSS = """
#decision li{margin:.3em 0;font-size:16px} #decision table{border-collapse:collapse;font-size:14px}
#decision td,#decision th{border:1px solid #d0d7de;padding:4px 8px;text-align:left}
@media (max-width:600px){#decision thead{display:none}
#decision table,#decision tbody,#decision tr,#decision td{display:block}
#decision tr{border-top:2px solid #d0d7de}#decision td{border:none;padding:1px 4px}#decision td:empty{display:none}
#decision td::before{content:attr(data-label) ": ";color:#57606a}}
"""


def decision_html(decisions: dict) -> str:
    if not decisions.get("decisions"):
        return "<p>No decision: the folder has no decisions.json (write it with transferbench report --publish).</p>"
    out = ["<ul>"] + [f"<li>{escape(d['text'])}</li>" for d in decisions["decisions"]] + ["</ul>"]
    rows = decisions.get("table") or []
    if rows:
        out.append("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in HEADERS) + "</tr></thead><tbody>")
        for r in rows:
            beats = ", ".join(f"<b>{escape(m)}</b>" if firm else f"{escape(m)} (provisional)" for m, firm in r["beats"])
            texts = [escape(r[k]) for k in ("benchmark", "examples", "use", "metric", "cost")] + [beats or "—"]
            out.append("<tr>" + "".join(f'<td data-label="{h}">{t}</td>' for h, t in zip(HEADERS, texts)) + "</tr>")
        out.append("</tbody></table>")
    return "\n".join(out)


def _figure(width=7.0, height=4.2) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def learning_curves(df: pd.DataFrame) -> Figure:
    """Metric vs training examples per mode (log x), one line per benchmark and mode, ±1 std."""
    fig = _figure()
    ax = fig.subplots()
    scored = df.dropna(subset=["metric_mean", "train_samples"])
    several = scored["benchmark"].nunique() > 1
    for (bench, mode), g in scored.groupby(["benchmark", "mode"], sort=False):
        g = g.sort_values("train_samples")
        color, marker = STYLE.get(mode, (None, "o"))
        ax.errorbar(g["train_samples"], g["metric_mean"], yerr=g["metric_std"].fillna(0.0), marker=marker, capsize=3,
                    color=color, label=f"{bench} · {mode}" if several else mode)
    if not scored.empty:
        ax.set_xscale("log")
        budgets = sorted(scored["train_samples"].unique())
        ax.set_xticks(budgets if len(budgets) <= 8 else budgets[:: len(budgets) // 8 + 1])
        ax.xaxis.set_major_formatter(PLAIN)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(" / ".join(sorted(scored["metric_name"].astype(str).unique())))
        ax.legend(fontsize=7)
    ax.set_xlabel("training examples (log scale)")
    ax.grid(True, alpha=0.3)
    ax.set_title("Learning curves (mean over seeds, ±1 std)", fontsize=10)
    return fig


def pareto_front(points: list[tuple[float, float]], x_lower: bool, y_higher: bool) -> list[tuple[float, float]]:
    sx, sy = (1 if x_lower else -1), (1 if y_higher else -1)
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (sx * p[0], -sy * p[1])):
        if sy * y > best:
            front.append((x, y))
            best = sy * y
    return front


def pareto(df: pd.DataFrame, x: str, y: str) -> Figure:
    """Any two measures, a point per cell coloured by mode, and the Pareto front (each measure in its direction)."""
    fig = _figure()
    ax = fig.subplots()
    data = df.dropna(subset=[c for c in (x, y) if c in df.columns]) if {x, y} <= set(df.columns) else df.iloc[:0]
    for mode, g in data.groupby("mode", sort=False):
        color, marker = STYLE.get(mode, (None, "o"))
        ax.scatter(g[x], g[y], label=mode, s=28, color=color, marker=marker)
    if not data.empty:
        front = pareto_front(list(zip(data[x], data[y])), x in LOWER_IS_BETTER, y not in LOWER_IS_BETTER)
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", linewidth=1, drawstyle="steps-post",
                label="Pareto front")
        if data[x].min() > 0 and data[x].max() / data[x].min() > 8:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(PLAIN)
        ax.legend(fontsize=7)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{y} vs {x}", fontsize=10)
    return fig


def predictions(plan: dict) -> pd.DataFrame:
    """The plan's predicted metric per curve and budget (plan.json: curves[].predictions), with the interval."""
    rows = []
    for c in plan.get("curves") or []:
        for p in c.get("predictions") or []:
            rows.append({"benchmark": f"{short(c['dataset'])} · {c['model']}", "mode": c["mode"],
                         "status": c.get("status"), **{k: v for k, v in p.items() if not isinstance(v, (dict, list))}})
    return pd.DataFrame(rows, columns=None if rows else ["benchmark", "mode", "status"])


def build(source: str) -> gr.Blocks:
    folder = resolve(source)
    cells, decisions, plan = load(folder)
    benchmarks = list(dict.fromkeys(cells["benchmark"]))
    modes = list(dict.fromkeys(cells["mode"]))
    budgets = sorted(int(b) for b in cells["train_samples"].dropna().unique())
    numeric = [c for c in NUMERIC if c in cells.columns]

    def keep(bench, chosen_modes, chosen_budgets) -> pd.DataFrame:
        df = cells
        if bench and bench != ALL:
            df = df[df["benchmark"] == bench]
        if chosen_modes:
            df = df[df["mode"].isin(chosen_modes)]
        if chosen_budgets:
            df = df[df["train_samples"].isin([int(b) for b in chosen_budgets])]
        return df

    predicted = predictions(plan)

    def update(bench, chosen_modes, chosen_budgets, x, y):
        df = keep(bench, chosen_modes, chosen_budgets)
        path = Path(tempfile.mkdtemp()) / "transferbench-cells.csv"
        df.to_csv(path, index=False)
        shown = df.round({c: ROUND for c in ("metric_mean", "metric_std", "delta_vs_scratch") if c in df.columns})
        plan_rows = predicted[predicted["benchmark"] == bench] if bench and bench != ALL and len(predicted) else predicted
        plan_rows = plan_rows.round({c: ROUND for c in ("mean", "lo", "hi", "measured") if c in plan_rows.columns})
        return shown, learning_curves(df), pareto(df, x, y), str(path), plan_rows

    title = decisions.get("title") or "transferbench leaderboard"
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}")
        gr.HTML(decision_html(decisions), elem_id="decision")
        with gr.Row():
            bench = gr.Radio([ALL] + benchmarks, value=ALL, label="benchmark", elem_id="filter-benchmark")
        with gr.Row():
            mode = gr.CheckboxGroup(modes, label="modes (none ticked: all)", elem_id="filter-mode")
            budget = gr.Dropdown([str(b) for b in budgets], multiselect=True, label="training examples (none: all)",
                                 elem_id="filter-budget")
        table = gr.Dataframe(cells, label="cells (click a header to sort)", interactive=False, elem_id="table",
                             max_height=420)
        download = gr.DownloadButton("Download these cells as CSV", elem_id="download")
        with gr.Row():
            curves = gr.Plot(learning_curves(cells), label="learning curves", elem_id="curves")
            with gr.Column():
                with gr.Row():
                    x = gr.Dropdown(numeric, value="cost_usd" if "cost_usd" in numeric else numeric[0], label="x")
                    y = gr.Dropdown(numeric, value="metric_mean", label="y")
                front = gr.Plot(label="Pareto plot", elem_id="pareto")
        gr.Markdown("## The plan's predictions (fitted curves; mean with its 95% interval lo–hi per budget n)"
                    if len(predicted) else "No plan: no curve has enough budgets to fit.")
        plan_table = gr.Dataframe(predicted, interactive=False, elem_id="plan", max_height=360,
                                  visible=bool(len(predicted)))
        inputs = [bench, mode, budget, x, y]
        outputs = [table, curves, front, download, plan_table]
        for control in inputs:
            control.change(update, inputs, outputs)
        demo.load(update, inputs, outputs)
    return demo


THEME = dict(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts: it works offline

if __name__ == "__main__":
    app = build(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TRANSFERBENCH_DATA", DATA))
    app.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
               server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), ssr_mode=False,
               theme=gr.themes.Default(**THEME), css=CSS)
