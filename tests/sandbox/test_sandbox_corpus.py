"""S6: a legitimate corpus never trips the filter or the limits (no SIGSYS, no EPERM)."""

from __future__ import annotations

import asyncio

import pytest

from rixin.sandbox import SandboxService

CORPUS = r"""
import csv, io, json, math, os, statistics, subprocess, tempfile, threading, sqlite3, zipfile
import numpy as np
a = np.random.default_rng(0).normal(size=(200, 50))
u, s, vt = np.linalg.svd(a, full_matrices=False)
assert abs(float((a @ np.linalg.pinv(a)).trace()) - 50) < 1e-6
rows = [{"x": i, "sqrt": math.sqrt(i)} for i in range(100)]
with open("/work/data.csv", "w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=["x", "sqrt"])
    writer.writeheader()
    writer.writerows(rows)
with open("/work/data.csv") as fh:
    back = list(csv.DictReader(fh))
json.dump({"n": len(back), "mean": statistics.mean(float(r["sqrt"]) for r in back)},
          open("/work/summary.json", "w"))
with tempfile.NamedTemporaryFile(dir="/tmp") as tmp:
    tmp.write(b"x" * 100000)
db = sqlite3.connect("/work/t.db")
db.execute("create table if not exists t (x)")
db.executemany("insert into t values (?)", [(i,) for i in range(100)])
db.commit()
with zipfile.ZipFile("/work/a.zip", "w") as zf:
    zf.writestr("a.txt", "hello")
out = []
threads = [threading.Thread(target=lambda: out.append(sum(range(10000)))) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
assert subprocess.run(["/bin/echo", "ok"], capture_output=True, text=True).stdout == "ok\n"
import multiprocessing
with multiprocessing.Pool(2) as pool:
    assert pool.map(abs, [-1, -2]) == [1, 2]
from PIL import Image, ImageDraw
img = Image.new("RGB", (64, 64), "white")
ImageDraw.Draw(img).line((0, 0, 63, 63), fill="red")
img.save("/work/plot.png")
try:
    import pandas as pd
    pd.DataFrame(rows).describe()
except ImportError:
    pass
try:
    import matplotlib.pyplot as plt
    plt.plot([1, 2, 3]); plt.savefig("/work/mpl.png")
except ImportError:
    pass
print("corpus ok", len(out))
"""


async def _corpus(service: SandboxService, runs: int, concurrency: int) -> None:
    sessions = [await service.create_session(f"p{i}") for i in range(concurrency)]
    failures: list[str] = []

    async def worker(index: int) -> None:
        for _ in range(index, runs, concurrency):
            result = await service.run(sessions[index].id, CORPUS, timeout_s=15)
            text = result.stdout + result.stderr
            if (
                result.exit_code != 0
                or "corpus ok" not in result.stdout
                or "Operation not permitted" in text
                or result.killed_reason is not None
            ):
                failures.append(f"exit={result.exit_code} {result.killed_reason} {text[-800:]}")

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    assert failures == [], failures[:3]


async def test_s6_no_false_positives(service: SandboxService) -> None:
    await _corpus(service, runs=48, concurrency=4)


@pytest.mark.slow
async def test_s6_no_false_positives_1000(
    service: SandboxService, request: pytest.FixtureRequest
) -> None:
    """S6, full length: 1,000 runs (about 4 minutes on 2 cores; only with ``-m slow``)."""
    if "slow" not in str(request.config.getoption("markexpr")):
        pytest.skip("the 1,000-run corpus runs with -m slow")
    await _corpus(service, runs=1000, concurrency=4)
