// Draws docs/performance.svg from a confab-bench JSON report: one small bar chart per
// headline metric, one bar per server. No dependencies, no external service.
//   node bench/chart.mjs bench/results/latest.json docs/performance.svg
import { readFileSync, writeFileSync } from 'node:fs';

const [input = 'bench/results/latest.json', output = 'docs/performance.svg'] = process.argv.slice(2);
const report = JSON.parse(readFileSync(input, 'utf8'));
const r = report.results;
const servers = ['confab', 'socketio', 'bare', 'bare-rust'].filter((s) => r[s]);
const colors = { confab: '#2b6cb0', socketio: '#a0a0a0', bare: '#d69e2e', 'bare-rust': '#c05621' };
const names = { confab: 'Confab', socketio: 'Socket.IO 4', bare: 'bare ws (Node)', 'bare-rust': 'bare Rust (tokio)' };
const get = (obj, path) => path.split('/').reduce((o, k) => (o == null ? undefined : o[k]), obj);
const panels = [
  ['fanout', 'delivered_per_s', 'Room, members ack: delivered msg/s', 'higher is better'],
  ['fanout', 'server_cpu_us_per_delivery', 'Room, members ack: server CPU µs per delivery', 'lower is better'],
  ['fanout-half', 'delivery_latency/p99_ms', 'Room at half rate: p99 ms', 'lower is better'],
  ['durable', 'acked_per_s', '1:1, one in flight: acked msg/s (Confab fsyncs)', 'higher is better'],
  ['durable', 'ack_latency/p50_ms', '1:1, one in flight: ack p50 ms', 'lower is better'],
  ['durable', 'server_cpu_us_per_message', '1:1: server CPU µs per acked message', 'lower is better'],
  ['idle', 'server_kb_per_conn', 'Idle: server KB per connection', 'lower is better'],
  ['opens', 'opens_per_s', 'Session opens per second', 'higher is better'],
];
const W = 420, H = 40 + servers.length * 26 + 20, cols = 2;
const rows = Math.ceil(panels.length / cols);
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');
const fmt = (v) => (v >= 1000 ? Math.round(v).toLocaleString('en-US') : v >= 10 ? v.toFixed(1) : v.toFixed(2));
let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W * cols}" height="${H * rows + 50}" font-family="sans-serif" font-size="12">\n`;
svg += `<rect width="100%" height="100%" fill="white"/>\n`;
const m = report.machine || {};
svg += `<text x="10" y="20" font-size="14" font-weight="bold">confab-bench: ${esc(m.cores)} cores, ${esc(m.cpu || '')}</text>\n`;
svg += servers.map((s, i) => `<rect x="${10 + i * 190}" y="30" width="12" height="12" fill="${colors[s]}"/><text x="${26 + i * 190}" y="40">${names[s]}</text>`).join('') + '\n';
panels.forEach(([scenario, path, title, hint], i) => {
  const x0 = (i % cols) * W + 10, y0 = Math.floor(i / cols) * H + 55;
  const vals = servers.map((s) => get(r[s]?.[scenario], path)).map((v) => (typeof v === 'number' ? v : null));
  const max = Math.max(1e-9, ...vals.filter((v) => v != null));
  svg += `<text x="${x0}" y="${y0 + 14}" font-weight="bold">${esc(title)}</text><text x="${x0}" y="${y0 + 28}" fill="#666">${hint}</text>\n`;
  servers.forEach((s, k) => {
    const v = vals[k], y = y0 + 36 + k * 26, w = v == null ? 0 : Math.max(1, ((W - 120) * v) / max);
    svg += `<rect x="${x0}" y="${y}" width="${w.toFixed(1)}" height="20" fill="${colors[s]}"/>`;
    svg += `<text x="${x0 + w + 4}" y="${y + 14}">${v == null ? 'n/a' : fmt(v)}</text>\n`;
  });
});
svg += '</svg>\n';
writeFileSync(output, svg);
console.log(`wrote ${output}`);
