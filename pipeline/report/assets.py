"""The files every report page shares: its stylesheet, and a script that marks images that did
not load."""

STYLE_NAME = "report.css"
SCRIPT_NAME = "report.js"

SCRIPT = """\
// Marks the images that did not load (a moved archive, when thumbnails are only linked) and
// says how many; body[data-images-loaded] holds "loaded/total" once the page has loaded.
addEventListener("load", () => {
  const images = Array.from(document.images);
  let loaded = 0;
  for (const img of images) {
    const ok = img.complete && img.naturalWidth > 0;
    img.dataset.loaded = ok ? "yes" : "no";
    loaded += ok ? 1 : 0;
  }
  document.body.dataset.imagesLoaded = `${loaded}/${images.length}`;
  if (loaded < images.length) {
    const note = document.getElementById("missing");
    note.textContent = `${images.length - loaded} of ${images.length} images on this page ` +
      "did not load (marked in red).";
    note.hidden = false;
  }
});
"""

STYLE = """\
:root { --ink: #1c2330; --muted: #5f6b7d; --line: #dfe4eb; --bg: #f3f5f8; --card: #fff;
  --accent: #2f6fd6; --bad: #c43c31; --ok: #2e8b57; --skip: #8a6d1d; --kept: #5b57a6; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header.top { background: var(--ink); color: #fff; padding: 14px 28px; display: flex;
  align-items: baseline; gap: 18px; flex-wrap: wrap; }
header.top h1 { margin: 0; font-size: 20px; font-weight: 600; }
header.top .archive { margin: 0; color: #b8c2d3; font-family: ui-monospace, monospace;
  overflow-wrap: anywhere; }
main { padding: 18px 28px 40px; max-width: 1400px; margin: 0 auto; }
h2 { font-size: 16px; margin: 0 0 10px; }
.totals { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; }
.tile { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 14px; }
.tile .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; }
.tile .value { font-size: 22px; font-weight: 600; margin: 2px 0; white-space: nowrap; }
.tile .sub { color: var(--muted); font-size: 12px; }
.models { color: var(--muted); font-size: 12px; margin: 8px 0 18px;
  font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
.histogram { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 12px 14px; margin-bottom: 18px; max-width: 760px; }
.histogram svg { width: 100%; height: auto; display: block; }
.histogram .col { fill: var(--accent); }
.histogram .col.kept { fill: var(--kept); }
.histogram .caption { color: var(--muted); font-size: 12px; margin: 6px 0 0; }
.histogram .key { display: inline-block; width: 10px; height: 10px; margin-right: 5px;
  border-radius: 2px; background: var(--accent); }
.histogram .key.kept { background: var(--kept); }
.histogram .rule { stroke: var(--line); }
.histogram .mean { stroke: var(--bad); stroke-width: 1.5; stroke-dasharray: 5 3; }
.histogram .mean-label { fill: var(--bad); font-size: 11px; font-weight: 600; }
.histogram .tick { fill: var(--muted); font-size: 11px; }
.histogram .axis { fill: var(--ink); font-size: 12px; }
.warning { background: #fff4e5; border: 1px solid #f0c27b; border-radius: 6px; padding: 8px 12px; }
#missing { position: fixed; left: 28px; right: 28px; bottom: 12px; margin: 0; }
.gallery .bar { display: flex; align-items: baseline; justify-content: space-between;
  flex-wrap: wrap; gap: 8px; margin: 8px 0; }
.pages { display: flex; gap: 6px; align-items: baseline; flex-wrap: wrap; margin: 8px 0; }
.pages a, .pages span { padding: 2px 8px; border-radius: 4px; }
.pages a { color: var(--accent); text-decoration: none; border: 1px solid var(--line);
  background: var(--card); }
.pages .here { background: var(--accent); color: #fff; }
.pages .off { color: #b0b8c4; }
.pages .of { color: var(--muted); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(330px, 100%), 1fr));
  gap: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 12px; min-width: 0; }
.card.wide { grid-column: 1 / -1; }
.card h3 { margin: 0 0 8px; font-size: 13px; font-weight: 600; display: flex; gap: 8px;
  align-items: baseline; }
.card .rank { color: var(--muted); font-weight: 400; }
.card .path { font-family: ui-monospace, monospace; overflow-wrap: anywhere; flex: 1; }
.status { font-size: 11px; font-weight: 600; padding: 1px 7px; border-radius: 9px; color: #fff; }
.status.ok { background: var(--ok); } .status.skipped { background: var(--skip); }
.status.error { background: var(--bad); } .status.kept { background: var(--kept); }
.card .body { display: flex; gap: 14px; align-items: flex-start; flex-wrap: wrap; }
.pictures { display: flex; gap: 10px; flex-wrap: wrap; min-width: 0; max-width: 100%; }
figure { margin: 0; max-width: 100%; }
figure img { display: block; image-rendering: pixelated; background: #e9edf2;
  border-radius: 3px; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 11px; margin-top: 3px; }
.frame { position: relative; }
.window { position: absolute; outline: 2px solid #ffd23f;
  box-shadow: 0 0 0 1px rgba(0, 0, 0, .6); }
img[data-loaded="no"] { outline: 3px solid var(--bad); }
.metrics { display: grid; grid-template-columns: auto auto; gap: 1px 12px; margin: 0;
  font-size: 12px; }
.metrics dt { color: var(--muted); }
.metrics dd { margin: 0; font-variant-numeric: tabular-nums; }
.message { color: var(--bad); margin: 8px 0 0; overflow-wrap: anywhere; }
.note { color: var(--muted); font-size: 12px; margin: 6px 0 0; overflow-wrap: anywhere; }
a.error { color: var(--bad); } a.kept, .kept-reason { color: var(--kept); }
.note.loss { color: var(--kept); }
.losses { color: var(--kept); font-size: 13px; margin: -10px 0 18px; }
/* A narrow window: the histogram's labels drawn larger as the histogram is drawn smaller (its
   SVG is 720 units wide: at 390 px, 22 units are 10.5 px); on a phone, narrower margins */
@media (max-width: 720px) {
  .histogram .tick, .histogram .mean-label { font-size: 15px; }
  .histogram .axis { font-size: 16px; }
}
@media (max-width: 600px) {
  .histogram .tick, .histogram .mean-label { font-size: 18px; }
  .histogram .axis { font-size: 19px; }
}
@media (max-width: 480px) {
  header.top { padding: 12px; }
  main { padding: 12px 12px 40px; }
  #missing { left: 12px; right: 12px; }
  .histogram, .card { padding: 10px; }
  .histogram .tick, .histogram .mean-label { font-size: 22px; }
  .histogram .axis { font-size: 24px; }
}
code.option { font-family: ui-monospace, monospace; font-size: .95em; white-space: nowrap; }
"""
