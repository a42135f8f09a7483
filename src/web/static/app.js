// The Hydra explorer page. Every number comes from the server (src/web/server.ts); charts are the
// Vega-Lite specs it sends, rendered with Vega. Plain script, no build step.
'use strict';

const $ = (sel) => document.querySelector(sel);
const state = { info: null, clean: null, text: null, ablation: null, controller: null, views: {} };

/** Numbers are shown to 4 decimals; data-value keeps the full value. */
function cell(td, v) {
  td.dataset.value = String(v);
  td.textContent = typeof v === 'number' ? v.toFixed(4) : '—';
}

function showError(message) {
  const el = $('#error');
  el.textContent = message;
  el.hidden = !message;
}

async function api(path, body) {
  const res = await fetch(path, body === undefined ? {} : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || `${res.status} ${res.statusText}`);
  return data;
}

/** Render a Vega-Lite spec into `el`, with SVG and PNG export buttons. */
async function chart(el, spec, name, onClick) {
  state.views[el.id]?.finalize();
  el.textContent = '';
  const box = document.createElement('div');
  el.append(box);
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'svg', container: box, hover: true });
  if (onClick) view.addEventListener('click', (_event, item) => item && item.datum && onClick(item.datum));
  await view.runAsync();
  state.views[el.id] = view;
  const bar = document.createElement('div');
  bar.className = 'export';
  for (const fmt of ['svg', 'png']) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = `Export ${fmt.toUpperCase()}`;
    b.dataset.export = fmt;
    b.addEventListener('click', async () => {
      const url = fmt === 'svg' ? URL.createObjectURL(new Blob([await view.toSVG()], { type: 'image/svg+xml' })) : await view.toImageURL('png', 2);
      const a = document.createElement('a');
      a.href = url;
      a.download = `${name}.${fmt}`;
      document.body.append(a);
      a.click();
      a.remove();
    });
    bar.append(b);
  }
  el.append(bar);
  el.dataset.rendered = name;
  return view;
}

function settings() {
  return { kind: $('#kind').value, samples: Number($('#samples').value), seed: Number($('#seed').value) };
}

// ------------------------------------------------------------------ prompt view

async function runPrompt(text) {
  showError('');
  state.text = text;
  state.ablation = null;
  $('#ablation').hidden = true;
  $('#all').hidden = true;
  try {
    const clean = await api('/api/prompt', { text });
    state.clean = clean;
    renderClean(clean);
    await chart($('#heads-chart'), clean.heads_figure, 'heads');
    $('#ablate-all').disabled = false;
  } catch (e) {
    showError(e.message);
  }
}

function renderClean(clean) {
  $('#clean').hidden = false;
  $('#clean-token').textContent = JSON.stringify(clean.token_text);
  cell($('#clean-sigma'), clean.sigma);
  cell($('#clean-pihat'), clean.pi_hat);
  const top = $('#top-tokens tbody');
  top.textContent = '';
  clean.top.forEach((t, i) => {
    const tr = top.insertRow();
    tr.insertCell().textContent = String(i + 1);
    tr.insertCell().textContent = JSON.stringify(t.text);
    cell(tr.insertCell(), t.prob);
    cell(tr.insertCell(), t.logit);
  });
  const body = $('#de-table tbody');
  body.textContent = '';
  for (let l = 0; l < state.info.layers; l++) {
    const tr = body.insertRow();
    tr.insertCell().textContent = String(l);
    // Names come from the server (models/components.ts): layer l's attention and MLP.
    for (const c of state.info.components.slice(1 + 2 * l, 3 + 2 * l)) {
      const de = tr.insertCell();
      cell(de, clean.de[c]);
      de.classList.add('comp');
      de.dataset.component = c;
      de.title = `ablate ${c}`;
      de.addEventListener('click', () => ablate(c));
      const dp = tr.insertCell();
      dp.dataset.dePrime = c;
      dp.textContent = '';
    }
  }
}

/** Run an ablation request, streaming progress; resolves to the final message or null if cancelled. */
async function stream(body) {
  const controller = new AbortController();
  state.controller?.abort();
  state.controller = controller;
  $('#progress').hidden = false;
  $('#progress-bar').value = 0;
  $('#progress-text').textContent = 'working…';
  try {
    const res = await fetch('/api/ablate', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: controller.signal });
    if (!res.ok) throw new Error((await res.json()).error || res.statusText);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let last = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      const lines = buf.split('\n');
      buf = lines.pop();
      for (const line of lines.filter(Boolean)) {
        const msg = JSON.parse(line);
        if (msg.progress) {
          const [d, n] = msg.progress;
          $('#progress-bar').value = n ? d / n : 1;
          $('#progress-text').textContent = `${d} / ${n} components`;
        } else last = msg;
      }
    }
    if (!last) throw new Error('the server ended the answer early');
    if (last.error) throw new Error(last.error);
    return last;
  } catch (e) {
    if (e.name === 'AbortError') return null;
    throw e;
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      $('#progress').hidden = true;
    }
  }
}

async function ablate(component) {
  showError('');
  document.querySelectorAll('td.comp.selected').forEach((td) => td.classList.remove('selected'));
  document.querySelector(`td.comp[data-component="${component}"]`)?.classList.add('selected');
  try {
    const msg = await stream({ text: state.text, component, ...settings() });
    if (!msg) return;
    state.ablation = { component, ...msg };
    renderAblation(component, msg);
  } catch (e) {
    showError(e.message);
  }
}

function renderAblation(component, msg) {
  $('#stored-note').hidden = true;
  const r = msg.result;
  const a = r.ablations[component];
  const s = msg.settings;
  $('#ablation').hidden = false;
  $('#ablation').dataset.component = component;
  $('#ablation-title').textContent = `Ablating ${component} (${s.kind}${s.samples > 1 ? `, S = ${s.samples}` : ''}, seed ${s.seed})`;
  for (const td of document.querySelectorAll('#effects td[data-field]')) cell(td, a[td.dataset.field]);
  const resid = a.te - (a.dde_self + a.ce + a.ne);
  $('#closure').textContent = `closure: TE = ΔDE + CE + NE  →  ${a.te.toFixed(4)} = ${a.dde_self.toFixed(4)} + ${a.ce.toFixed(4)} + ${a.ne.toFixed(4)}  (residual ${resid.toExponential(1)})`;
  for (const td of document.querySelectorAll('#de-table td[data-de-prime]')) cell(td, a.de_prime[td.dataset.dePrime]);
  chart($('#profile-chart'), msg.figures.profile, `figure1_${component}`);
  if (msg.figures.heads) chart($('#heads-chart'), msg.figures.heads, `heads_${component}`);
}

async function ablateAll() {
  showError('');
  try {
    const msg = await stream({ text: state.text, component: 'all', ...settings() });
    if (!msg) return;
    const r = msg.result;
    $('#all').hidden = false;
    const body = $('#all-table tbody');
    body.textContent = '';
    for (const [c, a] of Object.entries(r.ablations)) {
      const tr = body.insertRow();
      tr.className = 'clickable';
      tr.dataset.component = c;
      tr.insertCell().textContent = c;
      cell(tr.insertCell(), r.de[c]);
      for (const e of state.info.effects) cell(tr.insertCell(), a[e.key]);
      tr.addEventListener('click', () => ablate(c));
    }
  } catch (e) {
    showError(e.message);
  }
}

// ------------------------------------------------------------------ dataset view

/** The ablated component of a clicked point: Figure 7 and 8 rows name it, Figure 2 rows give its layer and type. */
function componentOf(datum) {
  if (typeof datum.component === 'string') return datum.component;
  if (Number.isInteger(datum.layer) && (datum.type === 'Attention' || datum.type === 'MLP')) return `${datum.type === 'MLP' ? 'mlp' : 'attn'}.${datum.layer}`;
  return null;
}

/** Open a database prompt in the Prompt view with `component` ablated as the run stored it. */
async function openStored(index, text, component) {
  selectTab('prompt');
  $('#prompt-text').value = text;
  await runPrompt(text);
  if (!component) return;
  try {
    const msg = await api(`/api/stored?prompt=${index}&component=${encodeURIComponent(component)}`);
    $('#kind').value = msg.settings.kind;
    $('#samples').value = String(msg.settings.samples);
    $('#seed').value = String(msg.settings.seed);
    state.ablation = { component, ...msg };
    renderAblation(component, msg);
    const s = msg.settings;
    const live = msg.live ? `; live recomputation: TE ${msg.live.te.toFixed(4)}, largest difference ${msg.live.max_abs_diff.toExponential(1)}` : '';
    $('#ablation-title').textContent = `Ablating ${component}: stored in ${s.database} (${s.kind}${s.samples > 1 ? `, S = ${s.samples}` : ''}, seed ${s.seed}${msg.sources.some((x) => x !== null) ? `, sources ${msg.sources.join(', ')}` : ''})`;
    $('#stored-note').textContent = `${msg.note}${live}`;
    $('#stored-note').hidden = false;
  } catch (e) {
    showError(e.message);
  }
}

async function loadDataset() {
  const el = $('#fig2-chart');
  if (el.dataset.rendered) return;
  try {
    const data = await api('/api/dataset');
    const list = $('#dataset-findings');
    list.textContent = '';
    for (const f of data.findings) {
      const li = document.createElement('li');
      li.textContent = f.sentence;
      li.dataset.verdict = f.verdict;
      list.append(li);
    }
    const texts = new Map(data.prompts.map((p) => [p.index, p.text]));
    const open = (datum) => {
      const text = texts.get(datum.prompt);
      if (typeof text !== 'string') return;
      openStored(datum.prompt, text, componentOf(datum));
    };
    await chart(el, data.figures.fig2, 'figure2', open);
    await chart($('#fig7-chart'), data.figures.fig7, 'figure7', open);
    await chart($('#fig8-chart'), data.figures.fig8, 'figure8', open);
  } catch (e) {
    el.textContent = e.message;
  }
}

// ------------------------------------------------------------------ repair matrix (heads view, with a database)

async function loadRepair() {
  const el = $('#repair-chart');
  if (el.dataset.rendered) return;
  try {
    const data = await api('/api/repair');
    await chart(el, data.figure, `repair_${data.level}`);
    const body = $('#repair-table tbody');
    body.textContent = '';
    for (const r of data.rows) {
      const tr = body.insertRow();
      tr.dataset.ablated = r.ablated;
      tr.dataset.verdict = r.verdict;
      tr.insertCell().textContent = r.ablated;
      tr.insertCell().textContent = r.verdict;
      tr.insertCell().textContent = r.top.map((t) => `${t.component} ${t.mean_dde.toFixed(4)}`).join(', ');
      const s = tr.insertCell();
      s.textContent = r.sentence;
      s.className = 'sentence';
    }
  } catch (e) {
    el.textContent = e.message;
  }
}

// ------------------------------------------------------------------ wiring

function selectTab(name) {
  for (const b of document.querySelectorAll('.tab')) b.classList.toggle('active', b.dataset.tab === name);
  for (const s of document.querySelectorAll('.tab-body')) s.hidden = s.id !== `tab-${name}`;
  if (name === 'dataset') loadDataset();
  if (name === 'heads' && state.info.dataset) loadRepair();
}

async function main() {
  const info = await api('/api/info');
  state.info = info;
  $('#model-info').textContent = `${info.model}: ${info.layers} layers, ${info.heads} heads, width ${info.width}${info.dataset ? `; database ${info.dataset}` : ''}`;
  for (const k of info.kinds) {
    const o = new Option(k.name, k.name, k.name === 'resample', k.name === 'resample');
    o.title = k.summary;
    $('#kind').append(o);
  }
  // The effects tables' columns are the server's declared effect fields.
  for (const e of info.effects) {
    for (const table of ['#effects', '#all-table']) {
      const th = document.createElement('th');
      th.textContent = e.label;
      th.title = e.doc;
      $(`${table} thead tr`).append(th);
    }
    $('#effects tbody tr').insertCell().dataset.field = e.key;
  }
  $('#samples').value = String(Math.min(info.default_samples, info.max_samples || info.default_samples));
  $('#samples').max = String(info.max_samples || 64);
  $('#dataset-tab').hidden = !info.dataset;
  $('#repair-block').hidden = !info.dataset;
  for (const b of document.querySelectorAll('.tab')) b.addEventListener('click', () => selectTab(b.dataset.tab));
  $('#prompt-form').addEventListener('submit', (e) => {
    e.preventDefault();
    runPrompt($('#prompt-text').value);
  });
  $('#ablate-all').addEventListener('click', ablateAll);
  $('#cancel').addEventListener('click', () => state.controller?.abort());
  document.body.dataset.ready = 'true';
}

main().catch((e) => showError(e.message));
