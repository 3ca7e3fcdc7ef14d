// StorePulse console: a page over the worker's HTTP API, nothing more. Every change goes through
// the API with the signed-in key; the role only decides what is shown (the API refuses anyway).
"use strict";

const T = {
  "zh-CN": {
    "nav.triggers": "触发器", "nav.members": "会员查询", "nav.ops": "运维", signout: "退出",
    "login.title": "登录 StorePulse", "login.key": "API 密钥", "login.go": "登录",
    "login.bad": "密钥无效", "lang": "English",
    "tr.title": "触发器", "tr.new": "新建触发器", "tr.status": "状态", "tr.version": "版本",
    "tr.owner": "负责人", "tr.fires": "24小时触发", "tr.delivered": "送达", "tr.redeemed": "核销",
    "tr.uplift": "提升", "tr.all": "全部", "tr.store": "门店", "tr.name": "名称",
    "ed.title": "编辑触发器", "ed.id": "ID", "ed.name": "名称", "ed.when": "当 (事件)",
    "ed.stores": "门店 (逗号分隔, 空=全部)", "ed.if": "条件", "ed.then": "动作",
    "ed.channel": "渠道", "ed.template": "文案", "ed.pool": "券池", "ed.value": "面额",
    "ed.expiry": "有效期", "ed.cooldown": "冷却", "ed.quiet": "免打扰时段", "ed.holdout": "对照组比例",
    "ed.max_fires": "每人最多次数", "ed.goal": "转化目标 (天内购买)", "ed.form": "表单",
    "ed.yaml": "YAML", "ed.helper": "条件可用字段 (点击插入)", "ed.valid": "定义有效",
    "ed.backtest": "回测", "ed.window": "时间窗", "ed.publish": "发布", "ed.draft": "存为草稿",
    "ed.note": "变更说明", "ed.published": "已发布", "ed.saved": "已保存草稿",
    "bt.fires": "将触发", "bt.members": "会员数", "bt.held": "对照组", "bt.supp": "抑制原因",
    "bt.channels": "各渠道消息", "bt.coupons": "券成本 / 预算", "bt.byday": "按日触发",
    "tg.history": "版本历史", "tg.pause": "暂停", "tg.resume": "恢复", "tg.archive": "归档",
    "tg.rollback": "回滚到此版本", "tg.diff": "与当前对比", "tg.edit": "编辑", "tg.report": "效果报告",
    "tg.author": "作者", "tg.at": "时间", "tg.note": "说明", "tg.csv": "导出 CSV",
    "rp.funnel": "漏斗", "rp.candidates": "候选", "rp.fired": "触发", "rp.held_out": "对照",
    "rp.delivered": "送达", "rp.failed": "失败", "rp.redeemed": "核销", "rp.converted": "转化",
    "rp.revenue": "收入", "rp.cost": "券成本", "rp.rate": "转化率 (实验/对照)",
    "rp.uplift": "提升 (95% 置信区间)", "rp.sig": "显著", "rp.nsig": "不显著",
    "rp.byday": "按日", "rp.bystore": "按门店", "rp.none": "无对照组",
    "mb.title": "会员查询", "mb.kind": "标识类型", "mb.value": "值", "mb.find": "查询",
    "mb.profile": "档案", "mb.tier": "等级", "mb.points": "积分", "mb.consent": "授权",
    "mb.tags": "标签", "mb.visits": "到店次数", "mb.last": "最近到店", "mb.why": "决策历史 (为什么没收到)",
    "mb.explain": "模拟事件", "mb.run": "评估", "mb.notfound": "未找到会员",
    "op.dead": "死信 (按原因)", "op.latest": "最近死信 (已脱敏)", "op.feeds": "门店数据源",
    "op.paused": "已暂停的触发器", "op.source": "来源", "op.reason": "原因", "op.count": "数量",
    "op.none": "无", "charts.off": "图表库未安装 (make setup)",
  },
  en: {
    "nav.triggers": "Triggers", "nav.members": "Members", "nav.ops": "Operations", signout: "Sign out",
    "login.title": "Sign in to StorePulse", "login.key": "API key", "login.go": "Sign in",
    "login.bad": "That key is not valid", "lang": "中文",
    "tr.title": "Triggers", "tr.new": "New trigger", "tr.status": "Status", "tr.version": "Version",
    "tr.owner": "Owner", "tr.fires": "Fires 24h", "tr.delivered": "Delivered", "tr.redeemed": "Redeemed",
    "tr.uplift": "Uplift", "tr.all": "All", "tr.store": "Store", "tr.name": "Name",
    "ed.title": "Edit trigger", "ed.id": "ID", "ed.name": "Name", "ed.when": "When (event)",
    "ed.stores": "Stores (comma-separated, empty = all)", "ed.if": "If", "ed.then": "Then",
    "ed.channel": "Channel", "ed.template": "Text", "ed.pool": "Coupon pool", "ed.value": "Value",
    "ed.expiry": "Expiry", "ed.cooldown": "Cooldown", "ed.quiet": "Quiet hours", "ed.holdout": "Holdout share",
    "ed.max_fires": "Max fires per member", "ed.goal": "Goal (purchase within)", "ed.form": "Form",
    "ed.yaml": "YAML", "ed.helper": "Fields a condition can use (click to insert)", "ed.valid": "Definition is valid",
    "ed.backtest": "Backtest", "ed.window": "Window", "ed.publish": "Publish", "ed.draft": "Save draft",
    "ed.note": "Change note", "ed.published": "Published", "ed.saved": "Draft saved",
    "bt.fires": "Would fire", "bt.members": "Members", "bt.held": "Held out", "bt.supp": "Suppressed by reason",
    "bt.channels": "Messages per channel", "bt.coupons": "Coupon cost / budget", "bt.byday": "Fires by day",
    "tg.history": "History", "tg.pause": "Pause", "tg.resume": "Resume", "tg.archive": "Archive",
    "tg.rollback": "Roll back to this", "tg.diff": "Diff to current", "tg.edit": "Edit", "tg.report": "Report",
    "tg.author": "Author", "tg.at": "Time", "tg.note": "Note", "tg.csv": "Export CSV",
    "rp.funnel": "Funnel", "rp.candidates": "Candidates", "rp.fired": "Fired", "rp.held_out": "Held out",
    "rp.delivered": "Delivered", "rp.failed": "Failed", "rp.redeemed": "Redeemed", "rp.converted": "Converted",
    "rp.revenue": "Revenue", "rp.cost": "Coupon cost", "rp.rate": "Conversion (treated / control)",
    "rp.uplift": "Uplift (95 % interval)", "rp.sig": "significant", "rp.nsig": "not significant",
    "rp.byday": "By day", "rp.bystore": "By store", "rp.none": "no control group",
    "mb.title": "Member lookup", "mb.kind": "Identifier", "mb.value": "Value", "mb.find": "Look up",
    "mb.profile": "Profile", "mb.tier": "Tier", "mb.points": "Points", "mb.consent": "Consent",
    "mb.tags": "Tags", "mb.visits": "Visits", "mb.last": "Last visit", "mb.why": "Decision history (why not?)",
    "mb.explain": "Explain an event", "mb.run": "Evaluate", "mb.notfound": "No such member",
    "op.dead": "Dead letters by reason", "op.latest": "Latest dead letters (redacted)", "op.feeds": "Store feeds",
    "op.paused": "Paused triggers", "op.source": "Source", "op.reason": "Reason", "op.count": "Count",
    "op.none": "none", "charts.off": "charting library not installed (make setup)",
  },
};
let lang = localStorage.getItem("sp.lang") || "zh-CN";
const t = (k) => (T[lang] && T[lang][k]) || T.en[k] || k;
const $ = (sel, root = document) => root.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const when = (ms) => (ms ? new Date(ms).toLocaleString(lang) : "");
const session = () => JSON.parse(sessionStorage.getItem("sp.session") || "null");
const may = (role) => { const s = session(); const rank = { viewer: 0, editor: 1, admin: 2 }; return s && rank[s.role] >= rank[role]; };
const charts = [];
let viewGen = 0; // bumped by every route(): a view whose data arrives after the user moved on drops it
const stale = (gen) => gen !== viewGen;

async function api(method, path, body) {
  const s = session();
  const res = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${s ? s.key : ""}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (res.status === 401) { sessionStorage.removeItem("sp.session"); location.hash = "#/login"; }
  return { status: res.status, ok: res.ok, data: data || {} };
}

function banner(text, error = false) {
  const b = $("#banner");
  b.textContent = text || "";
  b.hidden = !text;
  b.className = error ? "error" : "";
}

function problem(r) {
  const d = r.data || {};
  if (Array.isArray(d.errors)) return d.errors.map((e) => (typeof e === "string" ? e : `${e.field}: ${e.message}`)).join("; ");
  return d.error || `HTTP ${r.status}`;
}

function chart(canvas, config) {
  if (!window.Chart) { canvas.replaceWith(Object.assign(document.createElement("p"), { className: "muted", textContent: t("charts.off") })); return; }
  charts.push(new window.Chart(canvas, { ...config, options: { animation: false, responsive: true, maintainAspectRatio: false, ...(config.options || {}) } }));
}

function chrome() {
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("#lang").textContent = t("lang");
  const s = session();
  $("#nav").hidden = !s;
  $("#signout").hidden = !s;
  $("#who").textContent = s ? `${s.name} · ${s.role}` : "";
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", location.hash.startsWith(a.getAttribute("href"))));
}

// ---------------------------------------------------------------------------------------------
// Sign in
// ---------------------------------------------------------------------------------------------

function viewLogin(main) {
  main.innerHTML = `<section style="max-width:26em;margin:3em auto"><h1>${t("login.title")}</h1>
    <form id="login"><div class="field"><label>${t("login.key")}</label>
    <input type="password" name="key" data-testid="login-key" autocomplete="off" required></div>
    <button data-testid="login-go">${t("login.go")}</button></form></section>`;
  $("#login").onsubmit = async (e) => {
    e.preventDefault();
    const key = e.target.key.value.trim();
    const res = await fetch("/auth/me", { headers: { Authorization: `Bearer ${key}` } });
    if (!res.ok) { banner(t("login.bad"), true); return; }
    const me = await res.json();
    sessionStorage.setItem("sp.session", JSON.stringify({ key, name: me.name, role: me.role }));
    banner("");
    location.hash = "#/triggers";
  };
}

// ---------------------------------------------------------------------------------------------
// Triggers list
// ---------------------------------------------------------------------------------------------

async function viewTriggers(main) {
  main.innerHTML = `<section><div class="row"><h1 style="flex:1">${t("tr.title")}</h1>
    ${may("editor") ? `<button data-testid="new-trigger" id="new">${t("tr.new")}</button>` : ""}</div>
    <div class="row" id="filters"></div><table data-testid="trigger-list"><thead><tr>
    <th>${t("ed.id")}</th><th>${t("tr.name")}</th><th>${t("tr.status")}</th><th>${t("tr.version")}</th>
    <th>${t("tr.owner")}</th><th>${t("tr.fires")}</th><th>${t("tr.delivered")}</th>
    <th>${t("tr.redeemed")}</th><th>${t("tr.uplift")}</th></tr></thead><tbody></tbody></table></section>`;
  if ($("#new")) $("#new").onclick = () => { location.hash = "#/edit"; };
  const gen = viewGen;
  const reporting = api("GET", "/report?from=24h"); // a child process reads Kafka: seconds
  const list = await api("GET", "/triggers");
  if (stale(gen)) return;
  if (!list.ok) { banner(problem(list), true); return; }
  let stats = {};
  const rows = list.data.triggers || [];
  const pick = (name, values) => `<div class="field"><label>${name}</label><select data-filter="${name}">
    <option value="">${t("tr.all")}</option>${[...new Set(values)].filter(Boolean).sort().map((v) => `<option>${esc(v)}</option>`).join("")}</select></div>`;
  $("#filters").innerHTML = pick(t("tr.status"), rows.map((r) => (r.paused ? "paused" : r.status)))
    + pick(t("tr.store"), rows.flatMap((r) => r.stores || []))
    + pick(t("tr.owner"), rows.map((r) => r.author));
  const draw = () => {
    const [status, store, owner] = [...document.querySelectorAll("[data-filter]")].map((s) => s.value);
    $("tbody", main).innerHTML = rows
      .filter((r) => (!status || (r.paused ? "paused" : r.status) === status)
        && (!store || (r.stores || []).includes(store)) && (!owner || r.author === owner))
      .map((r) => {
        const s = stats[r.id] || {};
        const st = r.paused ? "paused" : r.status || "live";
        const up = s.uplift ? `${(s.uplift.difference * 100).toFixed(1)} pp` : "–";
        return `<tr class="click" data-id="${esc(r.id)}" data-testid="row-${esc(r.id)}"><td>${esc(r.id)}</td><td>${esc(r.name)}</td>
          <td><span class="status ${esc(st)}">${esc(st)}</span></td><td>${esc(r.version ?? 0)}</td><td>${esc(r.author || "")}</td>
          <td data-testid="fires-${esc(r.id)}">${s.fired ?? 0}</td><td>${s.delivered ?? 0}</td><td>${s.redeemed ?? 0}</td><td>${up}</td></tr>`;
      }).join("");
    main.querySelectorAll("tr.click").forEach((tr) => { tr.onclick = () => { location.hash = `#/trigger/${encodeURIComponent(tr.dataset.id)}`; }; });
  };
  document.querySelectorAll("[data-filter]").forEach((s) => { s.onchange = draw; });
  draw();
  const report = await reporting;
  if (stale(gen)) return;
  if (report.ok) { stats = report.data.triggers || {}; draw(); $("tbody", main).dataset.loaded = "1"; }
  else banner(problem(report), true);
}

// ---------------------------------------------------------------------------------------------
// Editor: a form for the common shape and the YAML of the same definition, both validated live
// ---------------------------------------------------------------------------------------------

const FORM_FIELDS = ["id", "name", "when", "stores", "if", "channel", "template", "pool", "value", "expiry", "cooldown", "quiet_hours", "holdout", "max_fires", "goal"];

// form.elements, not form[name]: `id` and `name` are the form element's own properties
function formToDef(f) {
  const v = (n) => f.elements.namedItem(n).value.trim();
  const action = v("kind") === "coupon"
    ? { type: "coupon", channel: v("channel"), pool: v("pool"), value: Number(v("value") || 0), expiry: v("expiry") || "7d", template: v("template") }
    : { type: "message", channel: v("channel"), template: v("template") };
  const def = { id: v("id"), name: v("name") || v("id"), when: { event: v("when") }, then: [action], guardrails: {} };
  if (v("stores")) def.stores = v("stores").split(",").map((s) => s.trim()).filter(Boolean);
  if (v("if")) def.if = v("if");
  if (v("cooldown")) def.guardrails.cooldown = v("cooldown");
  def.guardrails.quiet_hours = v("quiet_hours") || null;
  if (v("holdout")) def.guardrails.holdout = Number(v("holdout"));
  if (v("max_fires")) def.guardrails.max_fires = Number(v("max_fires"));
  if (v("goal")) def.goal = { within: v("goal") };
  return def;
}

function defToForm(f, d) {
  const a = (d.then || [])[0] || {};
  const g = d.guardrails || {};
  const set = (n, x) => { const el = f.elements.namedItem(n); if (el) el.value = x ?? ""; };
  set("id", d.id); set("name", d.name); set("when", (d.when || {}).event || "checkin");
  set("stores", (d.stores || []).join(", ")); set("if", d.if);
  set("kind", a.type === "coupon" ? "coupon" : "message"); set("channel", a.channel || "push");
  set("template", a.template); set("pool", a.pool); set("value", a.value); set("expiry", a.expiry);
  set("cooldown", g.cooldown); set("quiet_hours", g.quiet_hours); set("holdout", g.holdout);
  set("max_fires", g.max_fires); set("goal", (d.goal || {}).within);
}

function fieldOf(path) {
  const p = path.split(".");
  if (p[0] === "when") return "when";
  if (p[0] === "then") return ["channel", "template", "pool", "value", "expiry"].includes(p[2]) ? p[2] : "template";
  if (p[0] === "guardrails") return p[1] === "quiet_hours" ? "quiet_hours" : p[1];
  return FORM_FIELDS.includes(p[0]) ? p[0] : null;
}

async function viewEditor(main, id) {
  const gen = viewGen;
  const cat = (await api("GET", "/catalog")).data;
  if (stale(gen)) return;
  const events = Object.keys(cat.events || {});
  const input = (name, label, extra = "") => `<div class="field"><label>${label}</label>
    <input name="${name}" data-testid="f-${name}" ${extra}><span class="error" data-error="${name}" data-testid="err-${name}"></span></div>`;
  main.innerHTML = `<section><h1>${t("ed.title")}</h1><div class="grid2"><form id="def" autocomplete="off">
    <div class="row">${input("id", t("ed.id"), 'required pattern="[a-z0-9-]+"')}${input("name", t("ed.name"))}</div>
    <div class="field"><label>${t("ed.when")}</label><select name="when" data-testid="f-when">${events.map((e) => `<option>${e}</option>`).join("")}</select>
      <span class="error" data-error="when"></span></div>
    ${input("stores", t("ed.stores"))}
    <div class="field"><label>${t("ed.if")}</label><textarea name="if" rows="2" data-testid="f-if"></textarea>
      <span class="error" data-error="if" data-testid="err-if"></span></div>
    <h2>${t("ed.then")}</h2><div class="row"><div class="field"><label>&nbsp;</label><select name="kind" data-testid="f-kind">
      <option value="message">message</option><option value="coupon">coupon</option></select></div>
      <div class="field"><label>${t("ed.channel")}</label><select name="channel" data-testid="f-channel">${(cat.channels || []).map((c) => `<option>${c}</option>`).join("")}</select>
      <span class="error" data-error="channel"></span></div></div>
    ${input("template", t("ed.template"))}
    <div class="row" id="coupon-fields">${input("pool", t("ed.pool"), `list="pools"`)}${input("value", t("ed.value"), 'type="number"')}${input("expiry", t("ed.expiry"), 'placeholder="7d"')}</div>
    <datalist id="pools">${(cat.pools || []).map((p) => `<option>${esc(p)}</option>`).join("")}</datalist>
    <div class="row">${input("cooldown", t("ed.cooldown"), 'placeholder="1d"')}${input("quiet_hours", t("ed.quiet"), 'placeholder="22:00-08:00"')}
      ${input("holdout", t("ed.holdout"), 'type="number" step="0.05" min="0" max="0.5"')}${input("max_fires", t("ed.max_fires"), 'type="number"')}
      ${input("goal", t("ed.goal"), 'placeholder="7d"')}</div>
    <ul class="errors" id="other-errors" data-testid="errors"></ul><p id="valid" class="sig" hidden data-testid="valid">${t("ed.valid")}</p>
    </form><div><h2>${t("ed.yaml")}</h2><textarea id="yaml" rows="22" data-testid="yaml"></textarea>
    <ul class="errors" id="yaml-errors"></ul><h2>${t("ed.helper")}</h2><div class="helper" id="helper"></div></div></div></section>
    <section><h2>${t("ed.backtest")}</h2><div class="row"><div class="field"><label>${t("ed.window")}</label>
      <select id="window" data-testid="bt-window"><option value="1h">1h</option><option value="1d">1d</option><option value="7d" selected>7d</option><option value="30d">30d</option></select></div>
      <button id="bt" class="secondary" data-testid="backtest">${t("ed.backtest")}</button></div><div id="bt-out" data-testid="bt-out"></div></section>
    <section><div class="row"><div class="field" style="flex:1"><label>${t("ed.note")}</label><input id="note" data-testid="note"></div>
      ${may("editor") ? `<button id="draft" class="secondary" data-testid="save-draft">${t("ed.draft")}</button><button id="publish" data-testid="publish">${t("ed.publish")}</button>` : ""}</div></section>`;
  const form = $("#def");
  const el = (n) => form.elements.namedItem(n);
  let expected = 0;
  if (id) {
    const r = await api("GET", `/triggers/${encodeURIComponent(id)}`);
    if (stale(gen)) return;
    if (r.ok) { defToForm(form, r.data.definition || r.data); expected = r.data.version || 0; el("id").readOnly = true; }
  } else {
    defToForm(form, { when: { event: "checkin" }, then: [{ type: "message", channel: "push", template: "" }], guardrails: { quiet_hours: "22:00-08:00", cooldown: "1d" } });
  }
  const helper = (fields, root) => Object.entries(fields).map(([k, v]) => `<code data-insert="${root}.${k}" title="${esc(typeof v === "string" ? v : "map")}">${root}.${k}</code>`).join("");
  const drawHelper = () => {
    $("#helper").innerHTML = `<b>event</b> ${helper((cat.events || {})[el("when").value] || {}, "event")}<br><b>member</b> ${helper(cat.member || {}, "member")}<br><b>store</b> ${helper(cat.store || {}, "store")}<br><b>now</b> ${helper(cat.now || {}, "now")}`;
    $("#helper").querySelectorAll("[data-insert]").forEach((c) => { c.onclick = () => { const cond = el("if"); cond.value += (cond.value ? " " : "") + c.dataset.insert; check(); }; });
  };
  const showCoupon = () => { $("#coupon-fields").hidden = el("kind").value !== "coupon"; };
  const show = (res) => {
    form.querySelectorAll("[data-error]").forEach((e) => { e.textContent = ""; });
    const other = [];
    for (const e of res.errors || []) {
      const slot = fieldOf(e.field) && form.querySelector(`[data-error="${fieldOf(e.field)}"]`);
      if (slot) slot.textContent = e.message; else other.push(`${e.field}: ${e.message}`);
    }
    $("#other-errors").innerHTML = other.map((o) => `<li>${esc(o)}</li>`).join("");
    $("#valid").hidden = !res.ok;
  };
  let timer = null;
  const check = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const r = await api("POST", "/triggers/validate", { definition: formToDef(form) });
      if (stale(gen)) return;
      show(r.data);
      if (document.activeElement !== $("#yaml") && r.data.yaml) $("#yaml").value = r.data.yaml;
    }, 250);
  };
  $("#yaml").oninput = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const r = await api("POST", "/triggers/validate", { yaml: $("#yaml").value });
      if (stale(gen)) return;
      $("#yaml-errors").innerHTML = (r.data.errors || []).map((e) => `<li>${esc(e.field)}: ${esc(e.message)}</li>`).join("");
      if (r.data.definition) { defToForm(form, r.data.definition); show(r.data); showCoupon(); drawHelper(); }
    }, 300);
  };
  form.oninput = () => { showCoupon(); check(); };
  el("when").onchange = () => { drawHelper(); check(); };
  form.onsubmit = (e) => e.preventDefault();
  showCoupon(); drawHelper(); check();
  $("#bt").onclick = async () => {
    $("#bt-out").innerHTML = `<p class="muted">…</p>`;
    const def = formToDef(form);
    const r = await api("POST", "/triggers/backtest", { definition: def, from: $("#window").value });
    if (stale(gen)) return;
    if (!r.ok) { $("#bt-out").innerHTML = `<p class="error">${esc(problem(r))}</p>`; return; }
    const rep = (r.data.triggers || {})[def.id] || {};
    const pools = Object.entries(rep.coupons || {}).map(([p, c]) => `${esc(p)}: ${c.face_value} / ${c.budget ?? "–"} (${c.issued})`).join("<br>") || "–";
    const list = (o) => Object.entries(o || {}).map(([k, n]) => `${esc(k)}: ${n}`).join("<br>") || "–";
    $("#bt-out").innerHTML = `<div class="kpis"><div class="kpi"><b data-testid="bt-fires">${rep.fires ?? 0}</b><span>${t("bt.fires")}</span></div>
      <div class="kpi"><b>${rep.members ?? 0}</b><span>${t("bt.members")}</span></div><div class="kpi"><b>${rep.held_out ?? 0}</b><span>${t("bt.held")}</span></div></div>
      <div class="grid2"><div><h2>${t("bt.supp")}</h2><p data-testid="bt-suppressed">${list(rep.suppressed)}</p><h2>${t("bt.channels")}</h2><p>${list(rep.messages_by_channel)}</p>
      <h2>${t("bt.coupons")}</h2><p>${pools}</p></div><div><h2>${t("bt.byday")}</h2><canvas id="bt-chart"></canvas></div></div>
      <p class="muted">${esc(r.data.cannot_know || "")}</p>`;
    const days = Object.keys(rep.fires_by_day || {});
    chart($("#bt-chart"), { type: "bar", data: { labels: days, datasets: [{ label: t("bt.fires"), data: days.map((d) => rep.fires_by_day[d]), backgroundColor: "#d9480f" }] } });
  };
  const send = async (status) => {
    const r = await api("POST", "/triggers", { definition: formToDef(form), status, note: $("#note").value, expected_version: expected });
    if (!r.ok) { banner(problem(r), true); return; }
    banner(status === "live" ? t("ed.published") : t("ed.saved"));
    location.hash = `#/trigger/${encodeURIComponent(formToDef(form).id)}`;
  };
  if ($("#publish")) { $("#publish").onclick = () => send("live"); $("#draft").onclick = () => send("draft"); }
}

// ---------------------------------------------------------------------------------------------
// One trigger: status, history with diffs and rollback, report with charts and CSV
// ---------------------------------------------------------------------------------------------

async function viewTrigger(main, id) {
  const enc = encodeURIComponent(id);
  const gen = viewGen;
  const [rec, vers] = await Promise.all([api("GET", `/triggers/${enc}`), api("GET", `/triggers/${enc}/versions`)]);
  if (stale(gen)) return;
  if (!rec.ok) { banner(problem(rec), true); return; }
  const r = rec.data;
  const status = r.status || "live";
  const edit = may("editor");
  main.innerHTML = `<section><div class="row"><h1 style="flex:1">${esc(id)} <span class="status ${esc(status)}" data-testid="status">${esc(status)}</span>
    <span class="muted">v${esc(r.version ?? 0)}</span></h1>
    ${edit ? `<button class="secondary" id="edit" data-testid="edit">${t("tg.edit")}</button>
    ${status === "live" ? `<button class="secondary" data-change="pause" data-testid="pause">${t("tg.pause")}</button>` : ""}
    ${status === "paused" ? `<button class="secondary" data-change="resume" data-testid="resume">${t("tg.resume")}</button>` : ""}
    ${status !== "archived" ? `<button class="secondary" data-change="archive">${t("tg.archive")}</button>` : ""}` : ""}</div></section>
    <section><h2>${t("tg.report")}</h2><div class="row"><select id="rwin" data-testid="report-window"><option value="1d">1d</option><option value="7d" selected>7d</option><option value="30d">30d</option></select>
    <button class="secondary" id="csv" data-testid="csv">${t("tg.csv")}</button></div><div id="report" data-testid="report"></div></section>
    <section><h2>${t("tg.history")}</h2><table data-testid="versions"><thead><tr><th>v</th><th>${t("tr.status")}</th><th>${t("tg.author")}</th><th>${t("tg.at")}</th><th>${t("tg.note")}</th><th></th></tr></thead>
    <tbody>${((vers.data || {}).versions || []).slice().reverse().map((v) => `<tr><td>${v.version}</td><td>${esc(v.status)}</td><td>${esc(v.author)}</td><td>${when(v.at)}</td><td>${esc(v.note)}</td>
    <td><button class="link" data-diff="${v.version}">${t("tg.diff")}</button> ${edit && v.version !== r.version ? `<button class="link" data-rollback="${v.version}" data-testid="rollback-${v.version}">${t("tg.rollback")}</button>` : ""}</td></tr>`).join("")}</tbody></table>
    <pre id="diff" data-testid="diff" hidden></pre></section>`;
  if ($("#edit")) $("#edit").onclick = () => { location.hash = `#/edit/${enc}`; };
  main.querySelectorAll("[data-change]").forEach((b) => {
    b.onclick = async () => {
      const res = await api("POST", `/triggers/${enc}/${b.dataset.change}`, { note: "" });
      if (!res.ok) banner(problem(res), true); else { banner(`${id}: ${res.data.status || b.dataset.change}`); route(); }
    };
  });
  main.querySelectorAll("[data-diff]").forEach((b) => {
    b.onclick = async () => {
      const res = await api("GET", `/triggers/${enc}/diff?from=${b.dataset.diff}&to=${r.version}`);
      $("#diff").hidden = false; $("#diff").textContent = res.ok ? res.data.diff || "(no difference)" : problem(res);
    };
  });
  main.querySelectorAll("[data-rollback]").forEach((b) => {
    b.onclick = async () => {
      const res = await api("POST", `/triggers/${enc}/rollback?to=${b.dataset.rollback}`, { note: `rollback to v${b.dataset.rollback}` });
      if (!res.ok) banner(problem(res), true); else { banner(`${id}: v${res.data.version}`); route(); }
    };
  });
  let last = null;
  const load = async () => {
    $("#report").innerHTML = `<p class="muted">…</p>`;
    const res = await api("GET", `/triggers/${enc}/report?from=${$("#rwin").value}`);
    if (stale(gen)) return;
    if (!res.ok) { $("#report").innerHTML = `<p class="error">${esc(problem(res))}</p>`; return; }
    last = (res.data.triggers || {})[id] || {};
    drawReport(last);
  };
  $("#rwin").onchange = load;
  $("#csv").onclick = () => { if (last) download(`${id}-report.csv`, reportCsv(last)); };
  load();
}

const FUNNEL = ["candidates", "fired", "held_out", "delivered", "failed", "redeemed", "converted"];

function drawReport(f) {
  const u = f.uplift;
  const rate = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)} %`);
  const uplift = u ? `${(u.difference * 100).toFixed(1)} pp [${(u.ci95[0] * 100).toFixed(1)}, ${(u.ci95[1] * 100).toFixed(1)}] <span class="${u.significant ? "sig" : "muted"}">${u.significant ? t("rp.sig") : t("rp.nsig")}</span>` : t("rp.none");
  const stores = Object.entries(f.by_store || {});
  $("#report").innerHTML = `<div class="kpis">${FUNNEL.map((k) => `<div class="kpi"><b data-testid="rp-${k}">${f[k] ?? 0}</b><span>${t(`rp.${k}`)}</span></div>`).join("")}
    <div class="kpi"><b>${f.revenue ?? 0}</b><span>${t("rp.revenue")}</span></div><div class="kpi"><b>${f.coupon_cost ?? 0}</b><span>${t("rp.cost")}</span></div></div>
    <p>${t("rp.rate")}: ${rate(f.conversion_rate)} / ${rate(f.conversion_rate_control)} · ${t("rp.uplift")}: <span data-testid="uplift">${uplift}</span></p>
    <div class="grid2"><div><h2>${t("rp.funnel")}</h2><canvas id="funnel"></canvas></div><div><h2>${t("rp.byday")}</h2><canvas id="byday"></canvas></div></div>
    <h2>${t("rp.bystore")}</h2><table><thead><tr><th>${t("tr.store")}</th>${FUNNEL.map((k) => `<th>${t(`rp.${k}`)}</th>`).join("")}<th>${t("rp.revenue")}</th></tr></thead>
    <tbody>${stores.map(([s, x]) => `<tr><td>${esc(s)}</td>${FUNNEL.map((k) => `<td>${x[k] ?? 0}</td>`).join("")}<td>${x.revenue ?? 0}</td></tr>`).join("")}</tbody></table>`;
  chart($("#funnel"), { type: "bar", data: { labels: FUNNEL.map((k) => t(`rp.${k}`)), datasets: [{ label: t("rp.funnel"), data: FUNNEL.map((k) => f[k] || 0), backgroundColor: "#d9480f" }] } });
  const days = Object.keys(f.by_day || {});
  chart($("#byday"), { type: "line", data: { labels: days, datasets: ["fired", "delivered", "redeemed", "converted"].map((k, i) => ({ label: t(`rp.${k}`), data: days.map((d) => f.by_day[d][k] || 0), borderColor: ["#d9480f", "#1c7ed6", "#2b8a3e", "#7048e8"][i] })) } });
}

function reportCsv(f) {
  const cols = [...FUNNEL, "revenue", "coupon_cost"];
  const lines = [["scope", "key", ...cols].join(",")];
  lines.push(["total", "", ...cols.map((c) => f[c] ?? 0)].join(","));
  for (const [scope, table] of [["day", f.by_day], ["store", f.by_store]]) {
    for (const [k, x] of Object.entries(table || {})) lines.push([scope, `"${String(k).replace(/"/g, '""')}"`, ...cols.map((c) => x[c] ?? 0)].join(","));
  }
  return lines.join("\n") + "\n";
}

function download(name, text) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  a.download = name;
  document.body.appendChild(a); a.click(); a.remove();
}

// ---------------------------------------------------------------------------------------------
// Member lookup: profile, decision history ("why not"), explain
// ---------------------------------------------------------------------------------------------

async function viewMembers(main, id) {
  main.innerHTML = `<section><h1>${t("mb.title")}</h1><form id="find" class="row"><div class="field"><label>${t("mb.kind")}</label>
    <select name="kind" data-testid="mb-kind">${["member_id", "member_card", "phone", "openid", "app_device_id", "mac"].map((k) => `<option>${k}</option>`).join("")}</select></div>
    <div class="field" style="flex:1"><label>${t("mb.value")}</label><input name="value" data-testid="mb-value" required></div>
    <button data-testid="mb-find">${t("mb.find")}</button></form></section><div id="member"></div>`;
  $("#find").onsubmit = async (e) => {
    e.preventDefault();
    const f = e.target;
    const [kind, value] = ["kind", "value"].map((n) => f.elements.namedItem(n).value);
    const r = await api("GET", `/lookup?kind=${encodeURIComponent(kind)}&value=${encodeURIComponent(value)}`);
    if (!r.ok) { banner(r.status === 404 ? t("mb.notfound") : problem(r), true); return; }
    banner("");
    location.hash = `#/members/${encodeURIComponent(r.data.member_id)}`;
  };
  if (id) await showMember(id);
}

async function showMember(id) {
  const enc = encodeURIComponent(id);
  const gen = viewGen;
  const [m, d] = await Promise.all([api("GET", `/members/${enc}`), api("GET", `/members/${enc}/decisions`)]);
  if (stale(gen)) return;
  if (!m.ok) { banner(m.status === 404 ? t("mb.notfound") : problem(m), true); return; }
  const r = m.data.member;
  const consent = Object.entries(r.consent || {}).map(([c, g]) => `${esc(c)} ${g ? "✓" : "✗"}`).join(" · ");
  const tags = [...(r.crm_tags || []), ...(r.tags || [])].map(esc).join(", ");
  const cat = (await api("GET", "/catalog")).data;
  if (stale(gen)) return;
  $("#member").innerHTML = `<section data-testid="profile"><h2>${t("mb.profile")}: ${esc(id)} ${esc(r.first_name || "")}</h2><div class="kpis">
    <div class="kpi"><b>${esc(r.tier || "–")}</b><span>${t("mb.tier")}</span></div><div class="kpi"><b>${r.points ?? 0}</b><span>${t("mb.points")}</span></div>
    <div class="kpi"><b>${r.visits ?? 0}</b><span>${t("mb.visits")}</span></div><div class="kpi"><b>${when(r.last_visit_ts)}</b><span>${t("mb.last")}</span></div></div>
    <p>${t("mb.consent")}: ${consent || "–"}<br>${t("mb.tags")}: ${tags || "–"}<br>${Object.entries(r.visits_by_store || {}).map(([s, n]) => `${esc(s)}: ${n}`).join(" · ")}</p></section>
    <section><h2>${t("mb.why")}</h2><table data-testid="decisions"><thead><tr><th>${t("tg.at")}</th><th>trigger</th><th>verdict</th><th>${t("op.reason")}</th><th>event</th></tr></thead>
    <tbody>${((d.data || {}).decisions || []).map((x) => `<tr><td>${when(x.at)}</td><td>${esc(x.trigger)}</td><td>${esc(x.verdict)}</td><td>${esc(x.reason)}</td><td>${esc(x.event)}</td></tr>`).join("")}</tbody></table></section>
    <section><h2>${t("mb.explain")}</h2><form id="explain" class="row"><div class="field"><label>type</label><select name="type">${Object.keys(cat.events || {}).map((e) => `<option>${e}</option>`).join("")}</select></div>
    <div class="field"><label>store_id</label><select name="store">${(cat.stores || []).map((s) => `<option>${esc(s.id)}</option>`).join("")}</select></div>
    <div class="field" style="flex:1"><label>JSON</label><input name="extra" placeholder='{"total": 300}'></div><button>${t("mb.run")}</button></form><div id="explained"></div></section>`;
  $("#explain").onsubmit = async (e) => {
    e.preventDefault();
    const f = e.target;
    let extra = {};
    const v = (n) => f.elements.namedItem(n).value;
    try { extra = v("extra") ? JSON.parse(v("extra")) : {}; } catch (err) { banner(String(err), true); return; }
    const res = await api("POST", `/explain/${enc}`, { type: v("type"), store_id: v("store"), ...extra });
    $("#explained").innerHTML = res.ok ? `<table><tbody>${(res.data.decisions || []).map((x) => `<tr><td>${esc(x.trigger)}</td><td>${esc(x.verdict)}</td><td>${esc(x.reason)}</td></tr>`).join("")}</tbody></table>` : `<p class="error">${esc(problem(res))}</p>`;
  };
}

// ---------------------------------------------------------------------------------------------
// Operations: dead letters, store feeds, paused triggers
// ---------------------------------------------------------------------------------------------

async function viewOps(main) {
  const gen = viewGen;
  const [dead, feeds, trig] = await Promise.all([api("GET", "/dead-letters?limit=500"), api("GET", "/stores/health"), api("GET", "/triggers")]);
  if (stale(gen)) return;
  const grid = {};
  const sources = ["wifi", "beacons", "checkins", "pos"];
  for (const f of (feeds.data || {}).feeds || []) (grid[f.store] = grid[f.store] || {})[f.source] = f;
  const cell = (f) => (!f ? "<td>–</td>" : `<td class="${!f.open ? "cell-closed" : f.silent ? "cell-silent" : "cell-ok"}" data-testid="feed-${esc(f.store)}-${esc(f.source)}">${f.silent ? "⚠ " : ""}${f.age_s === null || f.age_s === undefined ? "–" : `${Math.round(f.age_s)} s`}</td>`);
  const paused = ((trig.data || {}).triggers || []).filter((x) => x.paused || x.status === "paused");
  main.innerHTML = `<section><h2>${t("op.dead")}</h2><table data-testid="dead-counts"><thead><tr><th>${t("op.source")}</th><th>${t("op.reason")}</th><th>${t("op.count")}</th></tr></thead>
    <tbody>${((dead.data || {}).counts || []).map((c) => `<tr><td>${esc(c.source)}</td><td>${esc(c.reason)}</td><td>${c.count}</td></tr>`).join("") || `<tr><td colspan=3>${t("op.none")}</td></tr>`}</tbody></table>
    <h2>${t("op.latest")}</h2><table><tbody>${((dead.data || {}).latest || []).slice(0, 10).map((d) => `<tr><td>${when(d.at)}</td><td>${esc(d.source)}</td><td>${esc(d.reason)}</td><td>${esc(d.message)}</td><td><code>${esc(d.sample).slice(0, 160)}</code></td></tr>`).join("")}</tbody></table></section>
    <section><h2>${t("op.feeds")}</h2><table data-testid="feeds"><thead><tr><th>${t("tr.store")}</th>${sources.map((s) => `<th>${s}</th>`).join("")}</tr></thead>
    <tbody>${Object.keys(grid).sort().map((s) => `<tr><td>${esc(s)}</td>${sources.map((src) => cell(grid[s][src])).join("")}</tr>`).join("")}</tbody></table></section>
    <section><h2>${t("op.paused")}</h2><table data-testid="paused"><tbody>${paused.map((x) => `<tr><td>${esc(x.id)}</td><td>${esc(x.status)}</td><td>${esc(typeof x.paused === "string" ? x.paused : JSON.stringify(x.paused || ""))}</td></tr>`).join("") || `<tr><td>${t("op.none")}</td></tr>`}</tbody></table></section>`;
}

// ---------------------------------------------------------------------------------------------

async function route() {
  viewGen += 1;
  while (charts.length) charts.pop().destroy();
  const main = $("#view");
  const [, page, arg] = (location.hash || "#/").split("/").map(decodeURIComponent);
  chrome();
  if (!session() && page !== "login") { location.hash = "#/login"; return; }
  try {
    if (page === "login") viewLogin(main);
    else if (page === "edit") await viewEditor(main, arg);
    else if (page === "trigger") await viewTrigger(main, arg);
    else if (page === "members") await viewMembers(main, arg);
    else if (page === "ops") await viewOps(main);
    else await viewTriggers(main);
  } catch (err) {
    banner(String(err), true);
  }
  chrome();
}

window.addEventListener("hashchange", () => { banner(""); route(); });
window.addEventListener("DOMContentLoaded", () => {
  $("#lang").onclick = () => { lang = lang === "zh-CN" ? "en" : "zh-CN"; localStorage.setItem("sp.lang", lang); route(); };
  $("#signout").onclick = () => { sessionStorage.removeItem("sp.session"); location.hash = "#/login"; };
  route();
});
