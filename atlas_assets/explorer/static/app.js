// The map explorer page. Every text from the data is put in the page with textContent (never
// innerHTML), so a datum that looks like HTML shows as the characters it is.
import { createScatterplot } from './vendor/regl-scatterplot.bundle.js';

const $ = (id) => document.getElementById(id);
const PALETTE = [
  '#4e9cf5', '#f5a04e', '#5fd068', '#f0605d', '#b589f0', '#c9a07a', '#f58fd0', '#a8b820',
  '#3fd0d0', '#f5d24e', '#7f8cf5', '#f57f4e', '#62c2a0', '#d46fa3', '#9fd35f', '#e8b3ff',
  '#ffb08a', '#7fd3ff', '#d9d95c', '#c97f7f',
];
const GREY = '#6b717b';
const LABEL_ZOOM_STEPS = [1.6, 3.5]; // zoom factors at which deeper topic labels take over
const MAX_LABELS = 50;

const state = {
  dataset: null, meta: null, n: 0, x: null, y: null, colourBy: 'none', categories: [],
  codes: null, selection: [], labelDepth: 0, hovered: null, datumCache: new Map(),
  tagColours: {}, parents: new Set(),
};
let scatterplot = null;

function colourFor(index, kind) {
  if (kind && kind !== 'value') return GREY;
  if (index < PALETTE.length) return PALETTE[index];
  return hslHex((index * 137.508) % 360, 0.65, 0.62); // golden angle: distinct hues
}

// The scatter library parses hex and rgb, not hsl().
function hslHex(h, s, l) {
  const f = (n) => {
    const k = (n + h / 30) % 12;
    const c = l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(255 * c).toString(16).padStart(2, '0');
  };
  return `#${f(0)}${f(8)}${f(4)}`;
}

function status(message, isError = false) {
  const el = $('status');
  el.textContent = message;
  el.classList.toggle('error', isError);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

async function api(path, options) {
  const res = await fetch(`/api/maps/${encodeURIComponent(state.dataset)}${path}`, options);
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try { message = (await res.json()).error || message; } catch { /* not JSON */ }
    throw new Error(message);
  }
  return res;
}

const postJSON = (path, body) => api(path, {
  method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
});

// Binary answers: uint32 header length, JSON header, padding to 4 bytes, then the typed array.
async function frame(path) {
  const buf = await (await api(path)).arrayBuffer();
  const headLength = new DataView(buf).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, headLength)));
  const offset = 4 + headLength + ((4 - ((4 + headLength) % 4)) % 4);
  return { header, buf, offset };
}

function pointSize(n) {
  if (n < 2000) return 6;
  if (n < 20000) return 4;
  if (n < 200000) return 2.5;
  if (n < 1500000) return 1.5;
  return 1;
}

// -- drawing -------------------------------------------------------------------------------
async function loadColours(by) {
  const { header, buf, offset } = await frame(`/colours?by=${encodeURIComponent(by)}`);
  state.colourBy = by;
  state.categories = header.categories;
  state.codes = new Uint16Array(buf, offset, state.n);
  const colours = header.categories.map((c, i) => (
    by === 'tag' && c.kind === 'value' && state.tagColours[c.label]
      ? state.tagColours[c.label] : colourFor(i, c.kind)));
  const z = Float32Array.from(state.codes);
  const keep = state.selection;
  scatterplot.set({ colorBy: 'valueA', pointColor: colours.length > 1 ? colours : [colours[0], colours[0]] });
  await scatterplot.draw({ x: state.x, y: state.y, valueA: z }, { zDataType: 'categorical' });
  if (keep.length) scatterplot.select(keep, { preventEvent: true });
  renderLegend(colours);
  renderTopics();
}

function renderLegend(colours) {
  const list = $('legend');
  list.replaceChildren();
  state.categories.forEach((c, i) => {
    const item = el('li', 'item');
    const swatch = el('span', 'swatch');
    swatch.style.background = colours[i];
    item.append(swatch, el('span', 'name', c.label), el('span', 'count', c.count.toLocaleString()));
    item.title = c.label;
    if (state.colourBy !== 'none') {
      item.addEventListener('click', () => selectBy(state.colourBy, c.label));
    }
    list.append(item);
  });
}

// Data coordinates -> CSS pixels of the canvas, as regl-scatterplot projects them.
function toScreen(px, py) {
  const canvas = $('map');
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  const v = scatterplot.get('cameraView');
  const vx = v[0] * px + v[4] * py + v[12];
  const vy = v[1] * px + v[5] * py + v[13];
  return [(w * (vx / (w / h) + 1)) / 2, h * (0.5 - vy / 2)];
}

function zoom() { return 1 / scatterplot.get('cameraDistance'); }

function updateLabels() {
  const layer = $('labels');
  const topics = state.meta.topics;
  if (!topics.length) { layer.replaceChildren(); state.labelDepth = 0; return; }
  const z = zoom();
  let depth = 1 + LABEL_ZOOM_STEPS.filter((s) => z >= s).length;
  depth = Math.min(depth, state.meta.topic_depths);
  state.labelDepth = depth;
  const w = layer.clientWidth;
  const h = layer.clientHeight;

  const placed = [];
  const nodes = [];
  // Deeper labels replace their parent's; a topic without subtopics keeps its own label.
  const candidates = topics
    .filter((t) => t.depth === depth || (t.depth < depth && !state.parents.has(`${t.depth}:${t.label}`)))
    .sort((a, b) => b.depth - a.depth || b.count - a.count);
  for (const topic of candidates) {
    if (nodes.length >= MAX_LABELS) break;
    const [sx, sy] = toScreen(topic.x, topic.y);
    const fontPx = topic.depth === 1 ? 15 : topic.depth === 2 ? 13 : 12;
    const bw = topic.label.length * fontPx * 0.58 + 8;
    const bh = fontPx * 1.5;
    const box = [sx - bw / 2, sy - bh / 2, sx + bw / 2, sy + bh / 2];
    if (box[0] < 0 || box[2] > w || box[1] < 0 || box[3] > h) continue; // no half labels
    if (placed.some((p) => box[0] < p[2] && box[2] > p[0] && box[1] < p[3] && box[3] > p[1])) continue;
    placed.push(box);
    const node = el('div', `label d${topic.depth}`, topic.label);
    node.dataset.depth = String(topic.depth);
    node.style.left = `${sx}px`;
    node.style.top = `${sy}px`;
    nodes.push(node);
  }
  layer.replaceChildren(...nodes);
}

let labelFrame = 0;
function scheduleLabels() {
  if (!labelFrame) labelFrame = requestAnimationFrame(() => { labelFrame = 0; updateLabels(); });
}

// -- datums ----------------------------------------------------------------------------------
async function getDatum(index) {
  if (!state.datumCache.has(index)) {
    if (state.datumCache.size > 500) state.datumCache.clear();
    state.datumCache.set(index, api(`/datums/${index}`).then((r) => r.json()));
  }
  try {
    return await state.datumCache.get(index);
  } catch (err) {
    state.datumCache.delete(index);
    throw err;
  }
}

function textOf(datum) {
  const field = datum.fields.find((f) => f.name === datum.text_field);
  return field ? field.value : '';
}

async function showHover(index) {
  state.hovered = index;
  let datum;
  try { datum = await getDatum(index); } catch (err) { status(err.message, true); return; }
  if (state.hovered !== index) return;
  const card = $('hover');
  const text = String(textOf(datum) ?? '');
  const rest = datum.fields.filter((f) => f.name !== datum.text_field && f.name !== datum.id_field);
  const lines = [...datum.map, ...rest].filter((f) => f.value !== null && f.value !== '').slice(0, 8)
    .map((f) => `${f.name}: ${String(f.value ?? '').slice(0, 120)}`);
  if (datum.tags.length) lines.push(`tags: ${datum.tags.join(', ')}`);
  card.replaceChildren(
    el('div', 'hover-id', `${datum.id_field} ${datum.id}`),
    el('div', 'hover-text', text.length > 700 ? `${text.slice(0, 700)}…` : text),
    el('div', 'hover-id', lines.join('\n')),
  );
  card.hidden = false;
}

function hideHover(index) {
  if (state.hovered === index) { state.hovered = null; $('hover').hidden = true; }
}

async function showDatum(index) {
  let datum;
  try { datum = await getDatum(index); } catch (err) { status(err.message, true); return; }
  const list = $('datum');
  list.replaceChildren();
  for (const f of [...datum.fields, ...datum.map, { name: 'tags', value: datum.tags.join(', ') }]) {
    list.append(el('dt', null, f.name), el('dd', null, f.value ?? ''));
  }
  $('datum-box').hidden = false;
}

// -- selection ---------------------------------------------------------------------------------
function setSelection(indices) {
  state.selection = Array.from(indices);
  const n = state.selection.length;
  $('selection-count').textContent = `${n.toLocaleString()} point${n === 1 ? '' : 's'}`;
  if (n === 1) showDatum(state.selection[0]);
}

function select(indices, { zoomTo = false } = {}) {
  if (!indices.length) { scatterplot.deselect(); setSelection([]); return; }
  scatterplot.select(indices);
  setSelection(indices);
  if (zoomTo) scatterplot.zoomToPoints(indices, { transition: true, padding: 0.25 });
}

async function selectBy(by, value) {
  try {
    const res = await api(`/select?by=${encodeURIComponent(by)}&value=${encodeURIComponent(value)}`);
    const { indices } = await res.json();
    select(indices, { zoomTo: true });
    status(`${indices.length.toLocaleString()} points in ${value}`);
  } catch (err) { status(err.message, true); }
}

// -- panels ----------------------------------------------------------------------------------
function topicColour(topic) {
  if (state.colourBy !== `topic_depth_${topic.depth}`) return null;
  const i = state.categories.findIndex((c) => c.label === topic.label);
  return i < 0 ? null : colourFor(i, state.categories[i].kind);
}

function topicItem(topic, children) {
  const li = el('li');
  const row = el('div', 'item');
  const toggle = el('span', 'toggle', children.length ? '▸' : '');
  const swatch = el('span', 'swatch');
  swatch.style.background = topicColour(topic) || 'transparent';
  row.append(toggle, swatch, el('span', 'name', topic.label), el('span', 'count', topic.count.toLocaleString()));
  row.title = topic.description ? `${topic.label}: ${topic.description}` : topic.label;
  row.addEventListener('click', () => selectBy(`topic_depth_${topic.depth}`, topic.label));
  li.append(row);
  if (children.length) {
    const sub = el('ul', 'children');
    sub.hidden = true;
    toggle.addEventListener('click', (event) => {
      event.stopPropagation();
      if (!sub.childElementCount) sub.append(...children.map((c) => topicItem(c, childrenOf(c))));
      sub.hidden = !sub.hidden;
      toggle.textContent = sub.hidden ? '▸' : '▾';
    });
    li.append(sub);
  }
  return li;
}

function childrenOf(topic) {
  return state.meta.topics
    .filter((t) => t.depth === topic.depth + 1 && t.parent === topic.label)
    .sort((a, b) => b.count - a.count);
}

function renderTopics() {
  const list = $('topics');
  const roots = state.meta.topics.filter((t) => t.depth === 1).sort((a, b) => b.count - a.count);
  if (!roots.length) {
    list.replaceChildren(el('li', 'item', 'No topics built for this map yet.'));
    return;
  }
  list.replaceChildren(...roots.map((t) => topicItem(t, childrenOf(t))));
}

function renderTags(tags) {
  state.tagColours = Object.fromEntries(tags.map((t) => [t.name, t.color]));
  const list = $('tags');
  if (!tags.length) {
    list.replaceChildren(el('li', 'item', 'No tags yet: select points, name a tag, press Tag.'));
    return;
  }
  list.replaceChildren(...tags.map((t) => {
    const item = el('li', 'item');
    const swatch = el('span', 'swatch');
    swatch.style.background = t.color || GREY;
    item.append(swatch, el('span', 'name', t.name), el('span', 'count', t.count.toLocaleString()));
    item.addEventListener('click', () => { $('tag-name').value = t.name; selectBy('tag', t.name); });
    return item;
  }));
}

// -- actions ---------------------------------------------------------------------------------
async function tagSelection(remove) {
  const tag = $('tag-name').value.trim();
  if (!tag) { status('Type a tag name first.', true); return; }
  if (!state.selection.length) { status('Select points first (lasso, rectangle, search or a topic).', true); return; }
  try {
    const res = await postJSON('/tags', { tag, indices: state.selection, remove });
    const body = await res.json();
    renderTags(body.tags);
    state.datumCache.clear();
    const selected = state.selection.length.toLocaleString();
    status(remove
      ? `untagged ${body.changed.toLocaleString()} of ${selected} selected points ${JSON.stringify(tag)}`
      : `tagged ${body.changed.toLocaleString()} more points ${JSON.stringify(tag)} (${selected} selected)`);
    if (state.colourBy === 'tag') await loadColours('tag');
  } catch (err) { status(err.message, true); }
}

async function exportSelection(format) {
  if (!state.selection.length) { status('Select points to export first.', true); return; }
  try {
    const res = await postJSON('/export', { indices: state.selection, format });
    const blob = await res.blob();
    const name = /filename="([^"]+)"/.exec(res.headers.get('content-disposition') || '')?.[1] || `selection.${format}`;
    const link = el('a');
    link.href = URL.createObjectURL(blob);
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    status(`exported ${state.selection.length.toLocaleString()} rows as ${name}`);
  } catch (err) { status(err.message, true); }
}

async function search(event) {
  event.preventDefault();
  const q = $('search-input').value.trim();
  if (!q) return;
  const mode = $('search-mode').value;
  status(mode === 'semantic' ? 'searching by meaning…' : 'searching…');
  try {
    const res = await api(`/search?q=${encodeURIComponent(q)}&mode=${mode}`);
    const body = await res.json();
    $('results-count').textContent = `${body.total.toLocaleString()} found`;
    $('results').replaceChildren(...body.results.map((r) => {
      const li = el('li');
      li.dataset.index = String(r.index);
      const id = r.distance === undefined ? r.id : `${r.id}  (distance ${r.distance})`;
      li.append(el('div', 'rid', id), el('div', null, r.snippet));
      li.addEventListener('click', () => {
        select([r.index]);
        scatterplot.zoomToPoints([r.index], { transition: true, padding: 2 });
      });
      return li;
    }));
    $('results-box').hidden = false;
    select(body.indices);
    status(`${body.total.toLocaleString()} matches for ${JSON.stringify(q)}`);
  } catch (err) { status(err.message, true); }
}

function setMode(mode) {
  for (const b of document.querySelectorAll('#modes button')) {
    b.classList.toggle('active', b.dataset.mode === mode);
  }
  if (mode === 'pan') scatterplot.set({ mouseMode: 'panZoom' });
  else scatterplot.set({ mouseMode: 'lasso', lassoType: mode === 'lasso' ? 'freeform' : 'rectangle' });
}

// -- start -----------------------------------------------------------------------------------
async function start() {
  const config = await (await fetch('/api/config')).json();
  state.dataset = new URLSearchParams(location.search).get('dataset') || config.default_dataset;
  if (!state.dataset) {
    $('dataset-name').textContent = 'Choose a dataset:';
    for (const name of config.datasets) {
      const link = el('a', null, name);
      link.href = `/?dataset=${encodeURIComponent(name)}`;
      $('title').append(' ', link);
    }
    return;
  }
  status('loading map…');
  state.meta = await (await api('/meta')).json();
  const meta = state.meta;
  state.parents = new Set(meta.topics.filter((t) => t.parent != null).map((t) => `${t.depth - 1}:${t.parent}`));
  document.title = `${meta.identifier} · Atlas map explorer`;
  $('dataset-name').textContent = meta.identifier;
  $('dataset-count').textContent = `${meta.n.toLocaleString()} points`;
  if (!meta.semantic_search) {
    const option = $('search-mode').querySelector('option[value="semantic"]');
    option.disabled = true;
    option.title = 'this map was built from uploaded vectors';
  }
  $('colour-by').replaceChildren(...meta.colour_options.map((o) => {
    const option = el('option', null, o.label);
    option.value = o.key;
    return option;
  }));
  $('colour-by').value = meta.default_colour;
  renderTags(meta.tags);

  const { buf, offset } = await frame('/points');
  state.n = meta.n;
  state.x = new Float32Array(buf, offset, state.n);
  state.y = new Float32Array(buf, offset + 4 * state.n, state.n);

  scatterplot = createScatterplot({
    canvas: $('map'),
    width: 'auto',
    height: 'auto',
    backgroundColor: '#14161a',
    pointSize: pointSize(state.n),
    pointSizeSelected: 2,
    pointOutlineWidth: 1.5,
    opacity: state.n > 200000 ? 0.6 : 0.85,
    opacityInactiveScale: 0.6,
    pointColorActive: '#ffffff',
    pointColorHover: '#ffffff',
    lassoColor: '#4ea1ff',
    lassoMinDelay: 5,
    lassoMinDist: 2,
    performanceMode: state.n > 2000000,
  });
  scatterplot.subscribe('pointover', (i) => showHover(i));
  scatterplot.subscribe('pointout', (i) => hideHover(i));
  scatterplot.subscribe('select', ({ points }) => setSelection(points));
  scatterplot.subscribe('deselect', () => setSelection([]));
  scatterplot.subscribe('view', scheduleLabels);
  window.addEventListener('resize', scheduleLabels);

  await loadColours(meta.default_colour);
  updateLabels();

  $('colour-by').addEventListener('change', (e) => loadColours(e.target.value).catch((err) => status(err.message, true)));
  $('search-form').addEventListener('submit', search);
  for (const b of document.querySelectorAll('#modes button')) {
    b.addEventListener('click', () => setMode(b.dataset.mode));
  }
  $('tag-add').addEventListener('click', () => tagSelection(false));
  $('tag-remove').addEventListener('click', () => tagSelection(true));
  $('export-csv').addEventListener('click', () => exportSelection('csv'));
  $('export-parquet').addEventListener('click', () => exportSelection('parquet'));
  $('clear-selection').addEventListener('click', () => select([]));
  status(meta.topics.length ? 'drag to pan, wheel to zoom; hover a point to read it'
    : 'no topics built yet; drag to pan, wheel to zoom, hover a point to read it');
  document.body.dataset.ready = '1';
}

// Test and console hooks: read-only views of the page's state.
window.atlasExplorer = {
  state,
  get scatterplot() { return scatterplot; },
  screenPosition(index) { return toScreen(state.x[index], state.y[index]); },
  toScreen: (x, y) => toScreen(x, y),
  zoom: () => zoom(),
};

start().catch((err) => { status(err.message, true); document.body.dataset.ready = 'error'; });
