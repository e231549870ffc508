"""``cycleaug review``: a local web page over one published version (FastAPI + uvicorn on loopback).

A paged grid (source | translation | reconstruction), filters (direction, split, label, passed, any
figure's range), sorting by any figure, a row's full record on click, and flags: mark rows (or every
row of the filter) with a reason; they go to the flags file (:mod:`cyclegan_core.flags`), which the
next publish reads. Paging, filtering and sorting run on the server over the version's small
columns (:class:`cyclegan_core.review.VersionIndex`); the page fetches only the pictures it shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from cyclegan_core import flags as flag_log
from cyclegan_core.reader import PublishedDataset
from cyclegan_core.review import VersionIndex

PAGE_SIZE = 48


def make_app(dataset: PublishedDataset, flags_path: str | Path) -> FastAPI:
    index = VersionIndex(dataset)
    app = FastAPI(title=f"CycleAug review: {dataset.label}", docs_url=None, redoc_url=None)

    def flagged() -> dict[tuple[str, str], flag_log.Flag]:
        return flag_log.flagged(flags_path)

    def with_flags(rows: list[dict]) -> list[dict]:
        now = flagged()
        for r in rows:
            f = now.get((r["direction"], r["source_id"]))
            r["flag"] = None if f is None else {"reason": f.reason, "who": f.who, "when": f.when.isoformat()}
        return rows

    def query(params: dict[str, Any]) -> tuple[dict, str | None, bool]:
        filters = {k: v for k, v in params.items() if k not in ("sort", "desc", "offset", "limit") and v != ""}
        return filters, params.get("sort") or None, str(params.get("desc", "")).lower() in ("1", "true")

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        return PAGE.replace("{{TITLE}}", dataset.label)

    @app.get("/api/meta")
    def meta() -> dict:
        return {"label": dataset.label, "rows": len(index), "metrics": index.metrics, "labels": index.labels,
                "directions": sorted(set(index.columns["direction"])), "page_size": PAGE_SIZE,
                "flagged": len(flagged()), "pictures": [c for c in ("source_image", "image", "reconstruction")]}

    @app.get("/api/rows")
    def rows(request: Request) -> JSONResponse:
        params = dict(request.query_params)
        filters, sort, desc = query(params)
        try:
            page = index.page(filters, sort, desc, int(params.get("offset", 0)), int(params.get("limit", PAGE_SIZE)))
        except (KeyError, ValueError) as err:
            raise HTTPException(400, str(err)) from None
        return JSONResponse({"total": page.total, "rows": with_flags(page.rows)})

    @app.get("/api/record/{row}")
    def record(row: int) -> JSONResponse:
        if not 0 <= row < len(index):
            raise HTTPException(404, f"no row {row}")
        return JSONResponse(with_flags([index.full_record(row) | {"row": row}])[0])

    @app.get("/api/picture/{row}/{column}")
    def picture(row: int, column: str) -> Response:
        if not 0 <= row < len(index):
            raise HTTPException(404, f"no row {row}")
        try:
            data = index.picture(row, column)
        except KeyError as err:
            raise HTTPException(404, str(err)) from None
        return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/flag")
    async def flag(request: Request) -> dict:
        body = await request.json()
        action = body.get("action", "flag")
        if body.get("all_in_filter"):
            filters, _, _ = query(body.get("filter", {}))
            targets = [int(r) for r in index.select(filters)]
        else:
            targets = [int(r) for r in body.get("rows", [])]
        rows = [index.record(r) for r in targets if 0 <= r < len(index)]
        try:
            n = flag_log.add_events(flags_path, action, rows, reason=body.get("reason", ""), who=body.get("who"))
        except flag_log.FlagError as err:
            raise HTTPException(400, str(err)) from None
        return {"action": action, "rows": n, "flagged": len(flagged())}

    return app


def serve(dataset: PublishedDataset, flags_path: str | Path, host: str = "127.0.0.1", port: int = 8765) -> None:
    import uvicorn

    print(f"review {dataset.label}: http://{host}:{port}/ (flags: {flags_path}; Ctrl-C stops)", flush=True)
    uvicorn.run(make_app(dataset, flags_path), host=host, port=port, log_level="warning")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>CycleAug review: {{TITLE}}</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 0; color: #222; }
 header { padding: 8px 12px; background: #f3f4f6; border-bottom: 1px solid #ddd; position: sticky; top: 0; }
 header label { margin-right: 10px; white-space: nowrap; }
 input.num { width: 5em; } #reason { width: 16em; }
 table { border-collapse: collapse; margin: 8px 12px; }
 td, th { border-bottom: 1px solid #eee; padding: 3px 6px; text-align: right; }
 th { cursor: pointer; background: #fafafa; position: sticky; top: 86px; }
 td.pics { white-space: nowrap; }
 td.pics img { width: 56px; height: 56px; image-rendering: pixelated; margin-right: 2px; vertical-align: middle; }
 td.id { font-family: monospace; }
 tr.flagged { background: #fde8e8; } tr:hover { background: #eef4ff; cursor: pointer; }
 #record { position: fixed; right: 8px; bottom: 8px; width: 34em; max-height: 60vh; overflow: auto; background: #fff;
           border: 1px solid #999; padding: 8px; display: none; font: 12px monospace; white-space: pre-wrap;
           word-break: break-all; box-shadow: 0 2px 8px #0003; }
</style></head><body>
<header>
 <b>{{TITLE}}</b> <span id="count"></span><br>
 <label>direction <select id="direction"><option value="">all</option></select></label>
 <label>split <select id="split"><option value="">all</option><option>train</option><option>test</option>
   </select></label>
 <label>label <select id="label"><option value="">all</option></select></label>
 <label>passed <select id="passed"><option value="">all</option><option value="true">yes</option>
   <option value="false">no</option></select></label>
 <label>figure <select id="metric"></select> from <input class="num" id="min"> to <input class="num" id="max"></label>
 <label>sort <select id="sort"><option value="">stored order</option></select>
   <input type="checkbox" id="desc"> descending</label>
 <button id="apply">apply</button>
 <br>
 <label>reason <input id="reason" placeholder="what is wrong with it"></label>
 <button id="flag">flag selected</button> <button id="flagall">flag all in filter</button>
 <button id="unflag">unflag selected</button>
 <button id="prev">&lt; prev</button> <span id="pos"></span> <button id="next">next &gt;</button>
</header>
<table id="grid"><thead></thead><tbody></tbody></table>
<div id="record"></div>
<script>
let meta = null, offset = 0, total = 0;
const $ = (id) => document.getElementById(id);
function filters() {
  const f = {direction: $("direction").value, split: $("split").value, label: $("label").value,
             passed: $("passed").value};
  const m = $("metric").value;
  if (m && $("min").value !== "") f["min_" + m] = $("min").value;
  if (m && $("max").value !== "") f["max_" + m] = $("max").value;
  return f;
}
function params() {
  const p = new URLSearchParams(filters());
  p.set("sort", $("sort").value); p.set("desc", $("desc").checked); p.set("offset", offset);
  p.set("limit", meta.page_size); return p;
}
async function load() {
  const r = await fetch("/api/rows?" + params());
  if (!r.ok) { alert((await r.json()).detail); return; }
  const data = await r.json(); total = data.total;
  $("count").textContent = `${meta.rows} rows, ${total} in the filter, ${meta.flagged} flagged`;
  $("pos").textContent = total ? `${offset + 1}-${Math.min(offset + meta.page_size, total)} of ${total}` : "none";
  const body = $("grid").tBodies[0]; body.innerHTML = "";
  for (const row of data.rows) {
    const tr = body.insertRow(); tr.dataset.row = row.row; if (row.flag) tr.className = "flagged";
    tr.insertCell().innerHTML = `<input type="checkbox" class="pick" value="${row.row}">`;
    const pics = tr.insertCell(); pics.className = "pics";
    for (const c of meta.pictures)
      pics.innerHTML += `<img loading="lazy" alt="${c}" src="/api/picture/${row.row}/${c}">`;
    const id = tr.insertCell(); id.className = "id"; id.textContent = row.sample_id.slice(0, 12);
    id.title = row.sample_id;
    for (const k of ["direction", "split", "label", "passed"]) tr.insertCell().textContent = row[k];
    for (const m of meta.metrics) {
      const v = row[m]; tr.insertCell().textContent = v === null || v === undefined ? "" : Number(v).toPrecision(3);
    }
    tr.insertCell().textContent = row.flag ? row.flag.reason : "";
    tr.onclick = (e) => { if (e.target.tagName !== "INPUT") show(row.row); };
  }
}
async function show(row) {
  const rec = await (await fetch(`/api/record/${row}`)).json();
  $("record").style.display = "block";
  $("record").textContent = "(click to close)\\n" + JSON.stringify(rec, null, 1);
}
async function flag(action, all) {
  const rows = [...document.querySelectorAll(".pick:checked")].map((x) => Number(x.value));
  const body = {action, reason: $("reason").value, rows, all_in_filter: all, filter: filters()};
  const r = await fetch("/api/flag", {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify(body)});
  const out = await r.json();
  if (!r.ok) { alert(out.detail); return; }
  meta.flagged = out.flagged; load();
}
async function init() {
  meta = await (await fetch("/api/meta")).json();
  for (const d of meta.directions) $("direction").add(new Option(d, d));
  for (const l of meta.labels) $("label").add(new Option(l, l));
  for (const m of meta.metrics) { $("metric").add(new Option(m, m)); $("sort").add(new Option(m, m)); }
  const head = $("grid").tHead.insertRow();
  for (const h of ["", "source | translation | reconstruction", "sample_id", "direction", "split", "label", "passed",
                   ...meta.metrics, "flag"]) {
    const th = document.createElement("th"); th.textContent = h; head.appendChild(th);
    if (meta.metrics.includes(h)) th.onclick = () => {
      $("desc").checked = $("sort").value === h ? !$("desc").checked : false;
      $("sort").value = h; offset = 0; load(); };
  }
  $("apply").onclick = () => { offset = 0; load(); };
  $("record").onclick = () => { $("record").style.display = "none"; };
  $("prev").onclick = () => { offset = Math.max(0, offset - meta.page_size); load(); };
  $("next").onclick = () => { if (offset + meta.page_size < total) { offset += meta.page_size; load(); } };
  $("flag").onclick = () => flag("flag", false);
  $("flagall").onclick = () => flag("flag", true);
  $("unflag").onclick = () => flag("unflag", false);
  load();
}
init();
</script></body></html>
"""
