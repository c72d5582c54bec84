"""Running one model in a fresh process, as the benchmark scripts do.

:func:`run_model` starts ``kinrec benchmark --split-dir DIR --models NAME --json`` and records
its outcome: the record it printed (NDCG@10, Recall@20, fit time), or the ``error:`` line of a
refusal, or the signal that killed it, with its wall time and its peak resident memory
(``wait4``'s maximum RSS of that process).

On Linux a child's maximum RSS is never below its parent's peak RSS at the time it was
started (``execve`` carries the high-water mark over), so the calling process should stay
small: build large data in another process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_run(command: list[str], env: dict[str, str], timeout: float) -> dict:
    """Run ``command`` in a fresh process, killed after ``timeout`` seconds: its exit status
    (negative: the signal that ended it), wall seconds, peak RSS in GiB (``wait4``), whether
    it timed out, and its stdout and stderr."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        deadline = start + timeout
        status, usage, timed_out = 0, None, False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.5)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return {
        "exit": proc.returncode,
        "wall_seconds": round(wall, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 1024**2, 2),  # KiB on Linux
        "timed_out": timed_out,
        "stdout": stdout,
        "stderr": stderr,
    }


def error_line(run: dict) -> str:
    """What a failed :func:`timed_run` said: its last ``error:`` line, or the signal that
    killed it, or its last line of output."""
    lines = [line.strip() for line in run["stderr"].splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if run["exit"] < 0:
        return f"killed by signal {-run['exit']}" + (f"; last output: {lines[-1]}" if lines else "")
    return (errors or lines or ["(no output)"])[-1]


def run_model(
    split_dir: Path,
    model: str,
    env: dict[str, str],
    timeout: float,
    config: Path | None = None,
    eval_users: int | None = None,
) -> dict:
    """One ``kinrec benchmark`` run in a fresh process (with the pipeline TOML ``config``
    and ``--eval-users`` when given): its record, or its error line, with its wall time and
    peak resident memory (``wait4``'s maximum RSS of that process). ``timed_out`` is set
    (true) when it was killed at ``timeout`` seconds; ``record`` holds the whole record of a
    run that fit."""
    command = [
        sys.executable,
        "-m",
        "kinrec.cli",
        "benchmark",
        "--split-dir",
        str(split_dir),
        "--models",
        model,
        "--json",
    ]
    if config is not None:
        command += ["--config", str(config)]
    if eval_users is not None:
        command += ["--eval-users", str(eval_users)]
    run = timed_run(command, env, timeout)
    result = {
        "model": model,
        "exit": run["exit"],
        "wall_seconds": run["wall_seconds"],
        "peak_rss_gib": run["peak_rss_gib"],
    }
    if run["timed_out"]:
        result["timed_out"] = True
    records = [json.loads(line) for line in run["stdout"].splitlines() if line.startswith("{")]
    if run["exit"] == 0 and records:
        record = records[0]
        result.update(
            ndcg10=record.get("ndcg@10"),
            recall20=record.get("recall@20"),
            fit_seconds=record.get("train_seconds"),
            eval_seconds=record.get("eval_seconds"),
            linear_head=record.get("fit_info", {}).get("linear_head"),
            epochs_run=record.get("fit_info", {}).get("epochs_run"),
            stopped_by_budget=record.get("fit_info", {}).get("stopped_by_budget"),
            record=record,
        )
    else:
        result["error"] = error_line(run)
    return result


def total_memory_gib() -> float:
    """The machine's memory in GiB (``MemTotal``; NaN where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) / 1024**2
    except (OSError, ValueError, IndexError):
        return float("nan")


def write_results(path: Path, text: str, payload: dict) -> None:
    """Print a benchmark's markdown ``text`` and write it to ``path``.md, ``payload`` to
    ``path``.json (``path`` without suffix; its folder is created)."""
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".md").write_text(text)
    path.with_suffix(".json").write_text(json.dumps(payload, indent=1))


def encode_split_texts(folder: Path, db: str) -> dict:
    """What ``kinrec encode`` does for a stored dataset, for the item texts of the split in
    ``folder`` (rendered as the models render them), into the embedding cache at ``db``:
    the number of texts, encoded and cached ones, model load and encoding seconds."""
    from kinrec.data.loaders import load_split_dir
    from kinrec.knowledge.encoder import EncoderConfig, StoreEmbeddingCache, TextEncoder
    from kinrec.knowledge.text import render_item_texts

    split = load_split_dir(folder)
    texts = [text for _, text in render_item_texts(split.dataset) if text.strip()]
    start = time.perf_counter()
    encoder = TextEncoder(EncoderConfig(progress=False), cache=StoreEmbeddingCache(db))
    loaded = time.perf_counter()
    encoder.encode(texts)
    done = time.perf_counter()
    return {
        "texts": len(texts),
        "encoded": encoder.stats.encoded,
        "cache_hits": encoder.stats.cache_hits,
        "load_seconds": round(loaded - start, 2),
        "seconds": round(done - loaded, 2),
        "texts_per_second": round(len(texts) / max(done - loaded, 1e-9), 1),
        "model": encoder.model_id,
    }


def reused(spec: str) -> tuple[str, list[dict]]:
    """``MODEL=PATH`` or ``MODEL=PATH#KEY`` -> (model, records)."""
    model, _, where = spec.partition("=")
    path, _, key = where.partition("#")
    text = Path(path).read_text()
    if key:
        return model, json.loads(text)["runs"][key]
    return model, [json.loads(line) for line in text.splitlines() if line.strip()]
