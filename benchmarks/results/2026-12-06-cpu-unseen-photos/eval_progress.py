"""Runs scripts/evaluate_checkpoint.py's main() unchanged, and also writes each image's row to
stderr as soon as it is measured (the script itself prints only at the end), so that a run cut
short keeps what it measured. Row n is the n-th image in sorted order.

Usage: PYTHONPATH=REPO python eval_progress.py CHECKPOINT IMAGE_DIR > OUT 2> LOG
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
import evaluate_checkpoint as ec  # noqa: E402

_evaluate = ec.evaluate
_t = [time.time(), 0]


def evaluate(model, img, *a, **k):
    r = _evaluate(model, img, *a, **k)
    _t[1] += 1
    print(
        json.dumps({"n": _t[1], "shape": list(img.shape), "s": round(time.time() - _t[0], 1)} | r),
        file=sys.stderr,
        flush=True,
    )
    return r


ec.evaluate = evaluate
ec.main(sys.argv[1], sys.argv[2], False, "fp32")
