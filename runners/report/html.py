"""The leaderboard as one self-contained HTML file: inline CSS and JS, plots as data: URIs, no network needed.
The headline opens the page; each table shows the answer's columns first (metric, Δ vs scratch, $/run) and folds
the secondary ones behind a checkbox (pure CSS, so it works without scripts), so it fits 1,400 px.
Tables sort on a header click; `#sort=<column>-<asc|desc>` in the URL opens them sorted (a linkable view)."""
from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from . import decision
from .leaderboard import Leaderboard
from .tables import (DETAILS, EQUAL_INTRO, EXPLAIN, HEADLINE_EXPLAIN, IMPROVING, PLAN_LINE, columns, equal_lines,
                     failed_lines, hidden_note, price_lines, runs_line, table_intro)

# what answers the question, and at what rate and schedule each mode trained; the rest fold away
PRIMARY = ("model", "budget", "mode", "lr", "schedule", "metric", "delta", "transferred", "cost")


def _order(board: Leaderboard) -> list:
    """The Markdown table's columns (tables.columns: energy, adapter size where recorded), primary ones first."""
    cols = columns(board)
    return [c for key in PRIMARY for c in cols if c[0] == key] + [c for c in cols if c[0] not in PRIMARY]


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1em auto;max-width:1500px;padding:0 1em;
color:#1b1f24;overflow-wrap:anywhere}
h1{font-size:1.5em;margin:.4em 0}
.decision li{margin:.35em 0;font-size:16px}
table.decision{font-size:14px;max-width:100%}
table.decision td,table.decision th{white-space:normal;text-align:left;cursor:auto}
details{margin:1.5em 0;border-top:1px solid #d0d7de;padding-top:.5em}
summary{cursor:pointer;font-size:16px;font-weight:600;color:#0969da}
@media (max-width:600px){body{padding:0 .5em}.decision li{font-size:15px}
table.decision thead{display:none}table.decision,table.decision tbody,table.decision tr,table.decision td{display:block}
table.decision tr{border-top:2px solid #d0d7de;padding:.2em 0}table.decision td{border:none;padding:1px 4px}
table.decision td:empty{display:none}table.decision td::before{content:attr(data-label) ": ";color:#57606a}}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right;white-space:nowrap}
td:nth-child(-n+5),th:nth-child(-n+5),td.metric,th[data-col=metric]{text-align:left}
th{background:#f6f8fa;cursor:pointer;position:sticky;top:0;user-select:none}
th[data-dir=asc]::after{content:" ▲"} th[data-dir=desc]::after{content:" ▼"}
tbody tr:nth-child(even){background:#fafbfc}
td.best{font-weight:700;background:#dafbe1}
tr.failed td{color:#b42318}
td.metric{white-space:normal;min-width:16em;max-width:30em}
td.schedule{white-space:normal;max-width:16em}
ul.equal{margin-top:0}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(560px,100%),1fr));gap:1em}
figure{margin:0}
figure img{width:100%;border:1px solid #d0d7de}
figcaption{font-size:12px;color:#57606a}
.explain{color:#57606a}
.scroll{overflow-x:auto}
.headline li{margin:.3em 0;font-size:15px}
.secondary{display:none}
.more:checked+label+.scroll .secondary{display:table-cell}
.more{position:absolute;opacity:0}
.more+label{display:inline-block;cursor:pointer;color:#0969da;font-size:13px;user-select:none}
.more+label::before{content:"▸ "} .more:checked+label::before{content:"▾ "}
.more:focus-visible+label{outline:2px solid #0969da}
td.metric.improving{background:#fff8c5}
"""

JS = """
function sortTable(th, dir) {
  const body = th.closest("table").tBodies[0], i = th.cellIndex;
  dir = dir || (th.dataset.dir === "asc" ? "desc" : "asc");
  const key = tr => { const v = tr.cells[i].dataset.sort; return v === "" ? null : isNaN(v) ? v : Number(v); };
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);  // blanks last, either way
    return (x < y ? -1 : x > y ? 1 : 0) * (dir === "asc" ? 1 : -1);
  });
  rows.forEach(r => body.appendChild(r));
  th.closest("tr").querySelectorAll("th").forEach(h => delete h.dataset.dir);
  th.dataset.dir = dir;
}
document.querySelectorAll("table.sortable th").forEach(th => th.addEventListener("click", () => sortTable(th)));
document.body.dataset.sortable = "ready";
const wanted = /^#sort=([\\w-]+)-(asc|desc)$/.exec(location.hash);
if (wanted) document.getElementById("details").open = true;  // a linked sort shows its table
if (wanted) document.querySelectorAll(`table.sortable th[data-col="${wanted[1]}"]`)
  .forEach(th => sortTable(th, wanted[2]));
// a plot that failed to decode shows as width 0 instead of silently missing
window.addEventListener("load", () => document.querySelectorAll("img").forEach(img => {
  img.dataset.width = img.naturalWidth;
}));
"""


def _sort_value(value) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def _classes(key: str, c: dict, contenders: set) -> str:
    marks = [key] + ["secondary"] * (key not in PRIMARY)
    if key == "metric":  # yellow only where more training could change the decision: a leading or tied cell
        in_play = (c["task"], c["dataset"], c["model"], c["train_samples"], c["mode"]) in contenders
        marks += ["best"] * bool(c["best"]) + ["improving"] * bool(c.get("still_improving") and in_play)
    return " ".join(marks)


def contenders(board: Leaderboard) -> set:
    """(task, dataset, model, budget, mode) of every cell that leads or ties its budget (the verdicts' adequate)."""
    return {(v["task"], v["dataset"], v["model"], v["train_samples"], m) for v in board.budget_verdicts
            for m in v["adequate"]}


def _table(cells: list[dict], index: int, order: list, contenders: set = frozenset()) -> list[str]:
    more = [header for key, header, _, _ in order if key not in PRIMARY]
    out = [f'<input type="checkbox" class="more" id="more-{index}"><label for="more-{index}">{len(more)} more '
           f'columns: {escape(", ".join(more))}</label>', '<div class="scroll"><table class="sortable"><thead><tr>']
    out += [f'<th data-col="{key}"{"" if key in PRIMARY else " class=secondary"}>{escape(header)}</th>'
            for key, header, _, _ in order]
    out.append("</tr></thead><tbody>")
    for c in cells:
        row = f'<tr class="{escape(c["status"].replace(" ", "-"))}">'
        for key, _, text, sort in order:
            row += f'<td class="{_classes(key, c, contenders)}" data-sort="{escape(_sort_value(sort(c)))}">{escape(text(c))}</td>'
        out.append(row + "</tr>")
    out.append("</tbody></table></div>")
    return out


def _headline(board: Leaderboard) -> list[str]:
    items = ["".join(f"<strong>{escape(t)}</strong>" if bold else escape(t) for t, bold in h["parts"])
             for h in board.headlines]
    return ['<section class="headline" id="headline"><ul>'] + [f"<li>{i}</li>" for i in items] + ["</ul></section>"]


DECISION_HEADERS = ("benchmark", "examples", "use", "metric", "cost/run", "beats significantly")


def _decision(board: Leaderboard) -> list[str]:
    """The decision lines and table (decision.py), as the Markdown opens."""
    out = ['<section class="decision" id="decision"><ul>'] + [f"<li>{escape(d['text'])}</li>"
                                                              for d in board.decisions] + ["</ul>"]
    rows = decision.table_rows(board.decisions)
    if rows:
        out.append('<table class="decision"><thead><tr>' + "".join(f"<th>{escape(h)}</th>" for h in DECISION_HEADERS)
                   + "</tr></thead><tbody>")
        for r in rows:
            beats = decision.beats_text([(escape(m), firm) for m, firm in r["beats"]], lambda m: f"<strong>{m}</strong>")
            texts = [escape(x) for x in (r["benchmark"], r["examples"], r["use"], r["metric"], r["cost"])] + [beats]
            out.append("<tr>" + "".join(f'<td data-label="{h}">{t}</td>' for h, t in zip(DECISION_HEADERS, texts))
                       + "</tr>")
        out += ["</tbody></table>", f'<p class="explain">{escape(decision.EXPLAIN)}</p>']
    return out + ["</section>"]


def _figure(fig: dict) -> str:
    data = base64.b64encode(Path(fig["file"]).read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(fig["title"])}: '
            f'{escape(fig["caption"])}"><figcaption>{escape(fig["caption"])}</figcaption></figure>')


def render(board: Leaderboard, figures: list[dict] = ()) -> str:
    out = ['<!doctype html><html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{escape(board.title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{escape(board.title)}</h1>"]
    if not board.records:
        return "\n".join(out + ["<p>No runs yet.</p></body></html>"]) + "\n"
    out += _decision(board)
    out.append(f'<p class="explain">{escape(runs_line(board))} Plots below; every cell and the definitions in the '
               'fold at the end.</p>')
    for task, dataset in (key for key, _ in board.tables()):
        shown = [f for f in figures if (f["task"], f["dataset"]) == (task, dataset)]
        if shown:
            out += [f'<section class="plots-of"><h2>Plots: {escape(f"{task} · {dataset}")}</h2>',
                    '<div class="plots">'] + [_figure(f) for f in shown] + ["</div></section>"]
    out += [f'<details id="details"><summary>{escape(DETAILS)}</summary>'] + _headline(board)
    out.append(f'<p class="explain">{escape(HEADLINE_EXPLAIN)} {escape(EXPLAIN.replace("**Bold**", "Highlighted"))} '
               f'{escape(IMPROVING)} Click a column header to sort.</p>')
    order, hidden, marked = _order(board), hidden_note(board), contenders(board)
    for i, ((task, dataset), cells) in enumerate(board.tables()):
        out += [f'<section class="task"><h2>{escape(f"{task} · {dataset}")}</h2>',
                f"<p>{escape(table_intro(cells) + (' ' + hidden if hidden else ''))}</p>"] + _table(cells, i, order,
                                                                                                     marked)
        verdicts = [v["text"] for v in board.budget_verdicts + board.crossovers
                    if (v["task"], v["dataset"]) == (task, dataset)]
        equal = equal_lines(board, task, dataset)
        if equal:
            out += [f'<p class="equal">{escape(EQUAL_INTRO)}</p><ul class="equal">'] + \
                [f"<li>{escape(e)}</li>" for e in equal] + ["</ul>"]
        out += ['<h3>Verdicts</h3><ul class="verdicts">'] + [f"<li>{escape(v)}</li>" for v in verdicts] + ["</ul>"]
        out.append("</section>")
    if board.plannable:
        plan = escape(PLAN_LINE).replace("[plan.md](plan.md)", '<a href="plan.md">plan.md</a>').replace("`", "")
        out.append(f"<h2>Plan</h2><p>{plan}</p>")
    out += ["<h2>Cost</h2><ul>"] + [f"<li>{escape(p)}</li>" for p in price_lines(board)] + ["</ul>"]
    failed = failed_lines(board)
    if failed:
        out += ['<h2>Failed runs</h2><ul class="failed">'] + [f"<li>{escape(f)}</li>" for f in failed] + ["</ul>"]
    out.append(f"</details><script>{JS}</script></body></html>")
    return "\n".join(out) + "\n"


def write(board: Leaderboard, figures: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(board, figures), encoding="utf-8")
