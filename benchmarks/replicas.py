"""Several replicas of the service on one PostgreSQL store: throughput, latency, how fast an
event on one replica reaches another, and kill -9 of one replica under load.

1. Starts a throw-away PostgreSQL server on a Unix socket (:mod:`kinrec.store.pgtemp`),
   ingests ml-100k into it (``kinrec ingest ml-100k``) and trains EASE (``kinrec train``).
2. For 1, 2 and 3 replicas of ``kinrec serve`` on 127.0.0.1 (keys on, replication on),
   requests of 90% GET recommendations of a random ml-100k user and 10% POST events:
   ``--clients`` closed-loop clients for ``--seconds`` (client i always on replica i mod n,
   each sending its next request when the last is answered: throughput, p50/p99, errors),
   then ``--rate`` requests/s in all, evenly spaced, round-robin over the replicas, for
   ``--seconds`` (p50/p99 at a load the machine carries). During both (2 and 3 replicas) a
   prober posts an event for a fresh user to replica A and polls replica B (the next one)
   until B's history of the user lists it: the event-to-effect delay from A's 201 to B's
   reflecting response; then the same probe with no load.
3. With 3 replicas: clients post events round-robin over the replicas; replica 1 is killed
   with -9 half-way; every event acknowledged (201) by any replica must be in the store
   afterwards, and the other replicas must go on answering.

    python benchmarks/replicas.py [--work DIR] [--seconds 20] [--clients 12] [--rate 300]
        [--replicas 1,2,3] [--kill-seconds 10]

Prints a table and writes benchmarks/results/replicas.{md,json,png}. Clients, replicas and
PostgreSQL share the machine's cores; the load average is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import PY, RESULTS, RawClient, free_port, pct, serve_cmd, start

DATASET = "ml-100k"


# --------------------------------------------------------------------------- set-up
def prepare(work: Path, db: str) -> dict:
    env = {**os.environ, "KINREC_DB": db}
    timings = {}
    t = time.perf_counter()
    cmd = [PY, "-m", "kinrec.cli", "ingest", DATASET, "--db", db]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    timings["ingest_s"] = round(time.perf_counter() - t, 1)
    model_dir = work / "ease-ml-100k"
    t = time.perf_counter()
    cmd = [PY, "-m", "kinrec.cli", "train", "--model", "ease", "--dataset", DATASET, "--db", db]
    subprocess.run([*cmd, "--out", str(model_dir)], check=True, stdout=subprocess.DEVNULL)
    timings["train_s"] = round(time.perf_counter() - t, 1)
    from kinrec.serving.keys import create_key
    from kinrec.store import Store

    with Store(db) as store:
        key = create_key(store, "benchmark", "admin")[1]
    return {"db": db, "model_dir": model_dir, "key": key, **timings}


def start_replicas(setup: dict, n: int, work: Path) -> list[tuple[subprocess.Popen, int]]:
    out = []
    for i in range(n):
        port = free_port()
        cmd = serve_cmd(setup, port, "--no-access-log")
        proc, ready_s = start(cmd, port, work / f"replica-{i}.log")
        print(f"replica {i} on port {port} ready in {ready_s:.1f} s", flush=True)
        out.append((proc, port))
    return out


def stop_replicas(replicas: list[tuple[subprocess.Popen, int]]) -> None:
    for proc, _ in replicas:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc, _ in replicas:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


# --------------------------------------------------------------------------- load
def _request(rng: random.Random, users: list[str], items: list[str]) -> tuple:
    if rng.random() < 0.1:
        body = {"user_id": rng.choice(users), "item_id": rng.choice(items), "type": "click"}
        return "POST", "/v1/events", body, 201
    return "GET", f"/v1/users/{rng.choice(users)}/recommendations?k=10", None, 200


async def closed_loop(
    ports: list[int], key: str, users: list[str], items: list[str], clients: int, seconds: float
) -> dict:
    """``clients`` clients back to back, client i on ``ports[i % n]``."""
    lat: list[float] = []
    errors: list[str] = []
    per_replica = [0] * len(ports)
    stop = time.perf_counter() + seconds
    load0 = os.getloadavg()[0]

    async def client(i: int) -> None:
        rng = random.Random(1000 + i)
        replica = i % len(ports)
        async with RawClient(ports[replica], key, 1) as c:
            while time.perf_counter() < stop:
                method, path, body, want = _request(rng, users, items)
                t = time.perf_counter()
                try:
                    status = await c.request(method, path, body)
                    if status != want:
                        errors.append(str(status))
                except Exception as exc:
                    errors.append(type(exc).__name__)
                lat.append(time.perf_counter() - t)
                per_replica[replica] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - t0
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(lat),
        "per_replica": per_replica,
        "throughput_rps": round(len(lat) / elapsed, 1),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "load_avg_1min": round(max(load0, os.getloadavg()[0]), 2),
    }


async def open_loop(
    ports: list[int], key: str, users: list[str], items: list[str], rate: float, seconds: float
) -> dict:
    """Arrivals at ``rate``/s in all (evenly spaced), request i to ``ports[i % n]``, at most
    16 in flight per replica; latency from sending to the whole response."""
    loop = asyncio.get_running_loop()
    rng = random.Random(7)
    lat: list[float] = []
    late: list[float] = []
    errors: list[str] = []
    clients = [RawClient(p, key, 16) for p in ports]
    for c in clients:
        await c.__aenter__()
    try:

        async def one(c: RawClient, scheduled: float, method, path, body, want) -> None:
            start = loop.time()
            try:
                status = await c.request(method, path, body)
                if status != want:
                    errors.append(str(status))
            except Exception as exc:
                errors.append(type(exc).__name__)
            end = loop.time()
            lat.append(end - start)
            late.append(end - scheduled)

        n = int(rate * seconds)
        t0 = loop.time() + 0.05
        tasks = []
        for i in range(n):
            scheduled = t0 + i / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            request = _request(rng, users, items)
            tasks.append(asyncio.create_task(one(clients[i % len(ports)], scheduled, *request)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - t0
    finally:
        for c in clients:
            await c.__aexit__()
    return {
        "target_rps": rate,
        "achieved_rps": round(len(lat) / elapsed, 1),
        "requests": len(lat),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "p99_from_schedule_ms": pct(late, 99),
        "errors": len(errors),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


# --------------------------------------------------------------------------- freshness
def event_to_effect(
    ports: list[int], key: str, items: list[str], tag: str, stop: threading.Event | None = None,
    trials: int = 100, timeout: float = 5.0,
) -> dict:  # fmt: skip
    """Post an event for a fresh user to replica A, poll replica B (the next one) until its
    history of the user lists the event: the delay from A's response to B's reflecting one.
    ``trials`` probes, or until ``stop`` is set."""
    rng = random.Random(11)
    headers = {"Authorization": f"Bearer {key}"}
    delays: list[float] = []
    missed = 0
    clients = [httpx.Client(base_url=f"http://127.0.0.1:{p}", headers=headers) for p in ports]
    try:
        i = 0
        while (stop is None and i < trials) or (stop is not None and not stop.is_set()):
            a, b = clients[i % len(ports)], clients[(i + 1) % len(ports)]
            user, item = f"probe-{tag}-{os.getpid()}-{i}", rng.choice(items)
            r = a.post("/v1/events", json={"user_id": user, "item_id": item, "type": "like"})
            assert r.status_code == 201, r.text
            event_id = r.json()["ids"][0]
            t0 = time.perf_counter()
            while True:
                events = b.get(f"/v1/users/{user}/history", params={"limit": 5}).json()["events"]
                now = time.perf_counter()
                if any(e["id"] == event_id for e in events):
                    delays.append(now - t0)
                    break
                if now - t0 > timeout:
                    missed += 1
                    break
                time.sleep(0.002)
            i += 1
            if stop is not None:
                time.sleep(0.05)  # a probe every ~50 ms under load
    finally:
        for c in clients:
            c.close()
    return {
        "trials": len(delays) + missed,
        "reflected": len(delays),
        "not_within_5s": missed,
        "p50_ms": pct(delays, 50),
        "p99_ms": pct(delays, 99),
        "max_ms": max(delays) * 1000 if delays else float("nan"),
    }


# --------------------------------------------------------------------------- kill -9
async def post_while_killing(
    replicas: list[tuple[subprocess.Popen, int]], key: str, users: list[str], items: list[str],
    clients: int, seconds: float, victim: int,
) -> dict:  # fmt: skip
    acked: dict[int, int] = {}  # event id -> replica that acknowledged it
    after_kill = [0] * len(replicas)  # answers per replica after the kill
    errors_after = [0] * len(replicas)
    killed_at: list[float] = []
    stop = time.perf_counter() + seconds

    async def client(i: int) -> None:
        rng = random.Random(500 + i)
        replica = i % len(replicas)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{replicas[replica][1]}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        ) as c:
            while time.perf_counter() < stop:
                body = {"user_id": rng.choice(users), "item_id": rng.choice(items), "type": "view"}
                try:
                    r = await c.post("/v1/events", json=body)
                except httpx.HTTPError:
                    if killed_at:
                        errors_after[replica] += 1
                    if replica == victim and killed_at:
                        return  # its replica is gone: a balancer would stop sending there
                    continue
                if r.status_code == 201:
                    acked[r.json()["ids"][0]] = replica
                    if killed_at:
                        after_kill[replica] += 1
                elif killed_at:
                    errors_after[replica] += 1

    async def killer() -> None:
        await asyncio.sleep(seconds / 2)
        os.kill(replicas[victim][0].pid, signal.SIGKILL)
        killed_at.append(time.perf_counter())

    await asyncio.gather(killer(), *(client(i) for i in range(clients)))
    replicas[victim][0].wait(10)
    return {"acked": acked, "after_kill": after_kill, "errors_after_kill": errors_after}


def kill_test(setup: dict, work: Path, users: list[str], items: list[str], args) -> dict:
    from kinrec.serving import persist
    from kinrec.store import Store

    replicas = start_replicas(setup, 3, work)
    victim = 1
    try:
        out = asyncio.run(
            post_while_killing(
                replicas, setup["key"], users, items, args.clients, args.kill_seconds, victim
            )
        )
        acked = out["acked"]
        with Store(setup["db"]) as store:
            present = persist.event_ids_present(store, list(acked))
        survivors = [i for i in range(3) if i != victim]
        alive = all(replicas[i][0].poll() is None for i in survivors)
        # the survivors still answer, and each reflects the other's last acknowledged event
        headers = {"Authorization": f"Bearer {setup['key']}"}
        reads_ok = 0
        for i in survivors:
            r = httpx.get(
                f"http://127.0.0.1:{replicas[i][1]}/v1/users/{users[0]}/recommendations",
                headers=headers,
            )
            reads_ok += r.status_code == 200
    finally:
        stop_replicas(replicas)
    by_replica = [sum(1 for r in acked.values() if r == i) for i in range(3)]
    return {
        "replicas": 3,
        "killed": victim,
        "seconds": args.kill_seconds,
        "acknowledged": len(acked),
        "acknowledged_by_replica": by_replica,
        "acknowledged_present": len(present),
        "lost": len(acked) - len(present),
        "survivors_alive": alive,
        "survivor_answers_after_kill": [out["after_kill"][i] for i in survivors],
        "survivor_errors_after_kill": [out["errors_after_kill"][i] for i in survivors],
        "survivor_reads_after": reads_ok,
    }


# --------------------------------------------------------------------------- report
def write_report(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "replicas.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    m = result["machine"]
    lines = [
        "# Replicas on one PostgreSQL store (ml-100k, EASE)",
        "",
        f"`{result['command']}` on {m['cpus']} cores ({m['platform']}), {result['date']}; "
        f"PostgreSQL {result['postgres']} on a Unix socket, every replica (`kinrec serve`) "
        "and the load client on the same cores. Load average (1 min) before: "
        f"{m['load_avg_before']}, after: {m['load_avg_after']}.",
        "",
        f"Requests: 90% GET recommendations, 10% POST events. Closed loop: {result['clients']} "
        "clients, client i on replica i mod n, each sending its next request when the last is "
        f"answered, {result['seconds']:g} s (the throughput: every core busy). Then "
        f"{result['rate']:g} requests/s in all, evenly spaced, round-robin over the replicas, "
        f"{result['seconds']:g} s. Event to effect: an event posted to replica A, replica B "
        "(the next one) polled every 2 ms until its history of the user lists it; the time "
        "from A's 201 to B's reflecting response; a probe every ~50 ms during each load, then "
        "100 probes without load (idle).",
        "",
        "| replicas | closed loop req/s | p50 ms | p99 ms | errors | "
        f"at {result['rate']:g} req/s: p50 ms | p99 ms | errors | "
        "event to effect p50 / p99 ms: idle | "
        f"at {result['rate']:g} req/s | saturated | load avg |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def effect(e: dict | None) -> str:
        return f"{e['p50_ms']:.1f} / {e['p99_ms']:.1f}" if e else "-"

    for r in result["configs"]:
        o = r["open_loop"]
        lines.append(
            f"| {r['replicas']} | {r['throughput_rps']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['errors']} | {o['p50_ms']:.2f} | {o['p99_ms']:.2f} | {o['errors']} | "
            f"{effect(r.get('effect_idle'))} | {effect(r.get('effect_rate'))} | "
            f"{effect(r.get('effect_saturated'))} | {r['load_avg_1min']} |"
        )
    lines.append("")
    for r in result["configs"]:
        for name in ("effect_idle", "effect_rate", "effect_saturated"):
            e = r.get(name)
            if e:
                lines.append(
                    f"- {r['replicas']} replicas, {name.removeprefix('effect_')}: "
                    f"{e['reflected']} of {e['trials']} probes reflected on replica B (max "
                    f"{e['max_ms']:.1f} ms), {e['not_within_5s']} not within 5 s."
                )
    k = result["kill"]
    lines += [
        "",
        f"## kill -9 of one of {k['replicas']} replicas under load",
        "",
        f"{result['clients']} clients post events round-robin over the replicas for "
        f"{k['seconds']:g} s; replica {k['killed']} is killed with -9 half-way.",
        "",
        f"- {k['acknowledged']} events acknowledged (201) by the replicas "
        f"({', '.join(str(n) for n in k['acknowledged_by_replica'])}); "
        f"{k['acknowledged_present']} of them in the store afterwards: {k['lost']} lost.",
        f"- The other replicas answered "
        f"{', '.join(str(n) for n in k['survivor_answers_after_kill'])} event posts after "
        f"the kill with {sum(k['survivor_errors_after_kill'])} errors, and "
        f"both still served recommendations afterwards ({k['survivor_reads_after']} of 2).",
        "",
    ]
    from _plots import link, plot_replicas

    lines += [link("replicas", "replicas.png"), ""]
    (RESULTS / "replicas.md").write_text("\n".join(lines))
    print("\n".join(lines))
    plot_replicas(result, RESULTS / "replicas.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="model folder and logs here")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per configuration")
    parser.add_argument("--clients", type=int, default=12, help="closed-loop clients")
    parser.add_argument("--replicas", default="1,2,3", help="replica counts to measure")
    parser.add_argument(
        "--rate", type=float, default=300.0, help="open-loop requests/s in all (second phase)"
    )
    parser.add_argument("--kill-seconds", type=float, default=10.0)
    args = parser.parse_args()
    command = "python benchmarks/replicas.py " + " ".join(sys.argv[1:])
    from kinrec.store.pgtemp import throwaway_postgres

    work = args.work or Path(tempfile.mkdtemp(prefix="kinrec-replicas-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = round(os.getloadavg()[0], 2)
    with throwaway_postgres(port=54331, options="-c max_connections=200") as db:
        setup = prepare(work, db)
        from kinrec.models.base import Recommender
        from kinrec.store import Store

        model = Recommender.load(setup["model_dir"])
        users, items = model.user_map.ids(), model.item_map.ids()
        with Store(db) as store, store.engine.connect() as conn:
            postgres = conn.exec_driver_sql("SHOW server_version").scalar()
        configs = []
        for n in (int(x) for x in args.replicas.split(",")):
            replicas = start_replicas(setup, n, work)
            ports = [p for _, p in replicas]
            try:
                key = setup["key"]
                row: dict = {}
                for phase in ("saturated", "rate"):
                    stop, probe = threading.Event(), {}
                    prober = None
                    if n > 1:

                        def run_probe(
                            ports=ports, stop=stop, probe=probe, tag=f"{phase}{n}", key=key
                        ):
                            probe.update(event_to_effect(ports, key, items, tag, stop=stop))

                        prober = threading.Thread(target=run_probe)
                        prober.start()
                    if phase == "saturated":  # throughput: closed loop
                        row.update(
                            asyncio.run(
                                closed_loop(ports, key, users, items, args.clients, args.seconds)
                            )
                        )
                    else:  # latency at a fixed request rate
                        row["open_loop"] = asyncio.run(
                            open_loop(ports, key, users, items, args.rate, args.seconds)
                        )
                    stop.set()
                    if prober is not None:
                        prober.join(30)
                        row[f"effect_{phase}"] = probe
                if n > 1:
                    row["effect_idle"] = event_to_effect(ports, key, items, f"idle{n}")
                row["replicas"] = n
                print(json.dumps(row), flush=True)
                configs.append(row)
            finally:
                stop_replicas(replicas)
        kill = kill_test(setup, work, users, items, args)
        print(json.dumps(kill), flush=True)
    result = {
        "command": command.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_avg_before": load_before,
            "load_avg_after": round(os.getloadavg()[0], 2),
        },
        "postgres": postgres,
        "setup": {k: v for k, v in setup.items() if k.endswith("_s")},
        "clients": args.clients,
        "rate": args.rate,
        "seconds": args.seconds,
        "configs": configs,
        "kill": kill,
    }
    write_report(result)


if __name__ == "__main__":
    main()
