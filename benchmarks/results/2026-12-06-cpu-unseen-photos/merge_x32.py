"""Joins the two tiny-x32 runs (README): the rows eval_progress.py logged for the first 34 photos
and evaluate_checkpoint.py's output for the other 15, into eval-tiny-x32.txt, as that script
prints it. Run from this folder, with the photos in /tmp/unseen-photos."""

import json
import os
from pathlib import Path

from tadm.evaluation import mean_scores

names = sorted(os.listdir("/tmp/unseen-photos"))
rows = {}
for line in Path("eval-tiny-x32.log").read_text().splitlines():
    row = json.loads(line)
    rows[names[row["n"] - 1]] = {k: v for k, v in row.items() if k not in ("n", "shape", "s")}
lines = Path("eval-x32-rest.txt").read_text().splitlines()
rest = json.loads([line for line in lines if line.startswith("{")][-1])
rows |= {name: row for name, row in rest["rows"].items() if name != "mean"}
assert sorted(rows) == names, (len(rows), len(names))
rows = {name: rows[name] for name in names}
rows["mean"] = mean_scores([rows[name] for name in names])
keys = list(rows["mean"])
out = [f"model tiny-x32 (x32, model_id {rest['model_id']}, fp32)", ""]
out.append("| image | " + " | ".join(keys) + " |")
out.append("|---" * (len(keys) + 1) + "|")
out += [f"| {name} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |" for name, r in rows.items()]
meta = {k: rest[k] for k in ("model_id", "scale", "precision")}
out.append(json.dumps(meta | {"rows": rows}))
Path("eval-tiny-x32.txt").write_text("\n".join(out) + "\n")
