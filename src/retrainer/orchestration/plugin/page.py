"""The Models page's HTML and script: plain HTML, no build step, data from `api/models`."""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Models · retrainer</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#1f2933;background:#fff}
 h1{font-size:20px;margin:0 0 4px} .muted{color:#616e7c} .small{font-size:12px}
 .model{border:1px solid #d9e2ec;border-radius:8px;padding:12px 14px;margin:12px 0}
 .model h2{font-size:17px;margin:0 0 2px;display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
 .grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:10px;margin-top:8px}
 .box{background:#f5f7fa;border-radius:6px;padding:8px 10px;overflow-x:auto} .box h3{font-size:12px;text-transform:uppercase;letter-spacing:.04em;margin:0 0 4px;color:#52606d}
 .badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;background:#e4e7eb}
 .ok,.passed,.promote,.initial{background:#c6f7e2;color:#014d40} .warn,.pin,.confirm{background:#fff3c4;color:#8d2b0b}
 .retrain,.rejected,.schema_changed,.auto-rollback,.rollback{background:#ffe3e3;color:#8a041a}
 .insufficient_data,.no_champion{background:#e4e7eb;color:#3e4c59}
 table{border-collapse:collapse;width:100%} td,th{text-align:left;padding:2px 6px;border-bottom:1px solid #e4e7eb;font-size:13px}
 .bar{display:inline-block;height:8px;background:#3ebd93;border-radius:2px;vertical-align:middle}
 .bar.w{background:#f0b429} .bar.r{background:#e12d39}
 button{font:inherit;border:1px solid #9fb3c8;background:#fff;border-radius:6px;padding:3px 10px;cursor:pointer;margin-right:6px}
 button:hover{background:#f0f4f8} button:disabled{opacity:.5;cursor:default}
 #msg{margin:8px 0;min-height:1.2em} a{color:#0967d2}
</style></head>
<body>
<h1>Models</h1>
<div class="muted small" id="meta">loading...</div>
<div id="msg" role="status"></div>
<div id="models"></div>
<script>
const here = window.location.pathname;
const BASE = here.slice(0, here.indexOf("/retrainer/"));   // Airflow's own path prefix, if any
const API = BASE + "/api/v2";
const params = new URLSearchParams(window.location.search);
const dagParam = params.get("dag") || "";
const onlyModel = params.get("model") ||
  (dagParam.startsWith("retrainer_spec_errors") ? "" : dagParam.replace(/_(retrain|deploy|monitor|rollout_control)$/, ""));
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
const when = ms => { const d = new Date(Number(ms)); return ms && !isNaN(d) ? d.toISOString().replace("T"," ").slice(0,16) + " UTC" : ""; };
const href = u => /^(https?:\/\/|\/)/i.test(String(u ?? "")) ? esc(u) : "#";   // never javascript: or data:
const num = (v, digits) => typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "n/a";
const badge = d => `<span class="badge ${esc(d)}">${esc(d)}</span>`;
const airflowLink = (ref, text) => ref && ref.airflow_url ? `<a target="_top" href="${esc(BASE + "/" + ref.airflow_url)}">${esc(text || "Airflow run")}</a>` : "";
const mlflowLink = (ref, text) => ref && ref.mlflow_url ? `<a target="_blank" rel="noopener" href="${href(ref.mlflow_url)}">${esc(text || "MLflow run")}</a>` : "";
function say(text, bad) { const m = document.getElementById("msg"); m.textContent = text; m.style.color = bad ? "#8a041a" : "#014d40"; }

async function airflow(method, path, body) {
  const resp = await fetch(API + path, {method, credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, body: body ? JSON.stringify(body) : undefined});
  const text = await resp.text();
  if (!resp.ok) throw new Error(`${method} ${path}: ${resp.status} ${text.slice(0, 300)}`);
  return text ? JSON.parse(text) : null;
}
async function trigger(dag, conf, what) {
  try {
    const run = await airflow("POST", `/dags/${dag}/dagRuns`, {logical_date: null, conf});
    say(`${what}: started ${dag} run ${run.dag_run_id}`);
  } catch (e) { say(`${what} failed: ${e.message}`, true); }
}
async function approve(dag) {
  try {
    const data = await airflow("GET", `/dags/${dag}/dagRuns/~/hitlDetails?response_received=false`);
    const pending = (data.hitl_details || []);
    if (!pending.length) { say(`${dag}: nothing waits for an approval`); return; }
    for (const h of pending) {
      const ti = h.task_instance;
      await airflow("PATCH", `/dags/${ti.dag_id}/dagRuns/${encodeURIComponent(ti.dag_run_id)}/taskInstances/${ti.task_id}/${ti.map_index}/hitlDetails`,
                    {chosen_options: ["Approve"], params_input: {}});
    }
    say(`${dag}: approved ${pending.length} pending deployment(s)`);
  } catch (e) { say(`Approve failed: ${e.message}`, true); }
}

function psiTable(m) {
  const mon = m.monitor; if (!mon || !mon.psi) return "";
  const rows = Object.entries(mon.psi).filter(([,v]) => typeof v === "number").sort((a,b) => b[1]-a[1]).slice(0, 8);
  const max = Math.max(m.psi_retrain, ...rows.map(r => r[1]));
  return `<table aria-label="PSI per feature"><tr><th>feature</th><th>PSI</th><th></th></tr>` + rows.map(([f,v]) =>
    `<tr><td>${esc(f)}</td><td>${num(v, 3)}</td><td><span class="bar ${v>=m.psi_retrain?"r":v>=m.psi_warn?"w":""}" style="width:${Math.max(2, 80*v/max)}px"></span></td></tr>`).join("") + `</table>`;
}
function versionLine(alias, v) {
  if (!v) return `<div>${alias}: <span class="muted">none</span></div>`;
  const metric = Object.entries(v.metrics || {}).slice(0, 2).map(([k,x]) => `${esc(k)} ${esc(x)}`).join(", ");
  return `<div>${alias}: <a target="_blank" rel="noopener" href="${href(v.mlflow_url)}"><b>v${esc(v.version)}</b></a> <span class="muted small">${metric}</span></div>`;
}
function render(data) {
  document.getElementById("meta").textContent =
    `${data.models.length} model(s) you can see` + (data.user ? ` · signed in as ${data.user}` : "") +
    (data.broken_specs.length ? ` · broken specs: ${data.broken_specs.join(", ")}` : "");
  const out = data.models.map(m => { try { return modelBox(m); } catch (e) {
    return `<section class="model"><h2>${esc(m.name)}</h2><p class="muted">this model's summary could not be shown (${esc(e.message)})</p></section>`; } });
  document.getElementById("models").innerHTML = out.join("") || `<p class="muted">No model you can see.</p>`;
}
function modelBox(m) {
    const g = m.gate, mon = m.monitor, a = m.aliases;
    const prev = a.previous ? a.previous.version : null;
    const actions = m.can_act ? `
      <button data-act="retrain" data-model="${esc(m.name)}">Trigger retrain</button>
      <button data-act="rollback" data-model="${esc(m.name)}" ${prev ? "" : "disabled"} title="${prev ? "put v"+esc(prev)+" back through the deploy DAG" : "no previous version"}">Roll back${prev ? " to v"+esc(prev) : ""}</button>
      ${m.approval === "manual" ? `<button data-act="approve" data-model="${esc(m.name)}">Approve pending deploy</button>` : ""}` :
      `<span class="muted small">read only</span>`;
    const gate = g ? `${badge(g.decision)} ${esc(g.primary_metric)} ${num(g.candidate, 4)}` +
        (g.champion != null ? ` vs champion v${esc(g.champion_version)} ${num(g.champion, 4)}` : "") +
        `<div class="small">${(g.reasons || []).map(esc).join("<br>")}</div><div class="small muted">${when(g.time)} · ${airflowLink(g)} · ${mlflowLink(g)}</div>`
      : `<span class="muted">no gate decision yet</span>`;
    const monitor = mon ? `${badge(mon.decision)} max PSI ${num(mon.max_psi, 3)} on ${esc(mon.rows)} rows
        (warn ${esc(m.psi_warn)}, retrain ${esc(m.psi_retrain)})` + (mon.action ? `<div class="small">automation: ${esc(mon.action)} ${esc(mon.action_detail || "")}</div>` : "") +
        (mon.estimate && mon.estimate.estimated != null ? `<div class="small">estimated ${esc(mon.estimate.metric)} without labels ${num(mon.estimate.estimated, 3)} (reference ${num(mon.estimate.reference, 3)})` +
          (mon.estimate.outside_share != null ? ` · ${Math.round(100 * mon.estimate.outside_share)}% of the rows outside the training data` + (mon.estimate.trusted ? "" : `: <b>not trusted</b>`) : "") + `</div>` : "") +
        psiTable(m) + `<div class="small muted">${when(mon.time)} · ${airflowLink(mon)} · ${mlflowLink(mon, "MLflow check")}</div>`
      : `<span class="muted">no monitor check yet</span>`;
    const ledger = (m.ledger || []).length ? `<table>` + m.ledger.map(e =>
        `<tr><td>${when(e.time)}</td><td>${badge(e.action)}</td><td>${e.from ? "v"+esc(e.from)+" → " : ""}v${esc(e.to)}</td><td>${esc(e.by)}</td><td>${airflowLink(e, "run")}</td></tr>`).join("") + `</table>`
      : `<span class="muted">no promotion yet</span>`;
    return `<section class="model" id="model-${esc(m.name)}" data-model="${esc(m.name)}">
      <h2>${esc(m.name)} <span class="muted small">${esc(m.task)} · owner ${esc(m.owner)} · ${esc(m.version_count)} version(s) · approval ${esc(m.approval)}</span></h2>
      <div class="muted small">${esc(m.description)}</div>
      <div class="small">DAGs: ${Object.values(m.dags).map(d => `<a target="_top" href="${BASE}/dags/${esc(d)}">${esc(d)}</a>`).join(" · ")} · <a target="_blank" rel="noopener" href="${href(m.mlflow_url)}">MLflow model</a></div>
      <div class="grid">
        <div class="box"><h3>Versions</h3>${versionLine("champion", a.champion)}${versionLine("challenger", a.challenger)}${versionLine("previous", a.previous)}</div>
        <div class="box gate"><h3>Last gate decision</h3>${gate}</div>
        <div class="box monitor"><h3>Last monitor decision</h3>${monitor}</div>
        <div class="box"><h3>Ledger (rollout)</h3>${ledger}</div>
      </div>
      <div style="margin-top:8px">${actions}</div></section>`;
}
document.addEventListener("click", async ev => {
  const b = ev.target.closest("button[data-act]"); if (!b) return;
  const m = b.dataset.model; const row = window.DATA.models.find(x => x.name === m);
  b.disabled = true;
  if (b.dataset.act === "retrain") await trigger(row.dags.retrain, {reason: "Models page"}, "Retrain");
  const sure = {rollback: `Roll ${m} back to v${row.aliases.previous && row.aliases.previous.version}?`,
                approve: `Approve every deployment of ${m} waiting for approval?`}[b.dataset.act];
  if (sure && !window.confirm(sure)) return;
  if (b.dataset.act === "rollback") await trigger(row.dags.deploy, {version: row.aliases.previous.version, reason: "rollback from the Models page"}, "Roll back");
  if (b.dataset.act === "approve") await approve(row.dags.deploy);
  b.disabled = false;
});
async function load() {
  const url = BASE + "/retrainer/api/models" + (onlyModel ? "?model=" + encodeURIComponent(onlyModel) : "");
  const resp = await fetch(url, {credentials: "same-origin"});
  if (!resp.ok) {
    say(resp.status === 401 ? "Log in to Airflow first, then reload this page"
        : `Could not load the models (HTTP ${resp.status}); MLflow may be unreachable: reload in a minute`, true);
    return;
  }
  window.DATA = await resp.json();
  render(window.DATA);
}
load();
</script></body></html>
"""
