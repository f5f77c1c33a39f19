"""How close one level of concurrent chat calls comes to the client floor of this machine.

    python benchmarks/http_floor.py                 # 64 and 256 calls at 200 ms, 5 rounds
    python benchmarks/http_floor.py --calls 16,64 --latency 0.1 --rounds 7

One *level* is N chat calls sent at once, all answered after the server's fixed latency:
its ideal wall time is the latency. Each client runs in its own process against the
benchmark server (``server.py``, another process's threads on the same cores), and the
table gives the median wall time of a level over the rounds after a warm-up level:

* ``raw asyncio``: a minimal HTTP/1.1 client on asyncio streams, keep-alive, nothing
  else -- the floor any Python client on one event loop can reach here;
* ``httpx + httpcore``: the SDK's default HTTP stack (one pool sized to the batch);
* ``httpx + Http1Transport``: tracegrad's transport under the same httpx client;
* ``tracegrad engine``: ``OpenAIEngine.complete`` from N threads -- the whole path a
  training step takes (the shared loop, the direct chat poster, reply parsing).

The difference to the latency is what the client (and the server, sharing the cores)
costs per level.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

CLIENTS = ("raw asyncio", "httpx + httpcore", "httpx + Http1Transport", "tracegrad engine")

_CHILD = r'''
import asyncio, json, statistics, sys, time
from concurrent.futures import ThreadPoolExecutor
url, kind, n, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is 2 + 3?"}]}
data = json.dumps(body).encode()
host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
path = "/" + url.split("//", 1)[1].split("/", 1)[1] + "/chat/completions"

async def raw():
    idle = []
    async def one():
        if idle:
            r, w = idle.pop()
        else:
            r, w = await asyncio.open_connection(host, int(port))
        w.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer sk-bench\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                + data)
        head = await r.readuntil(b"\r\n\r\n")
        length = int(next(l.split(b":")[1] for l in head.split(b"\r\n")
                          if l.lower().startswith(b"content-length")))
        json.loads(await r.readexactly(length))
        idle.append((r, w))
    return await levels(one)

async def levels(one):
    await asyncio.gather(*[one() for _ in range(n)])  # warm-up: connections, imports
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        await asyncio.gather(*[one() for _ in range(n)])
        out.append(time.perf_counter() - t)
    return out

async def via_httpx(transport):
    import httpx2
    async with httpx2.AsyncClient(transport=transport, timeout=60) as c:
        async def one():
            resp = await c.post(url + "/chat/completions", content=data, headers={
                "Content-Type": "application/json", "Authorization": "Bearer sk-bench"})
            json.loads(resp.content)
        return await levels(one)

def engine():
    from tracegrad.llm import OpenAIEngine
    from tracegrad.llm.base import make_request
    eng = OpenAIEngine("gpt-4o-mini", base_url=url, api_key="sk-bench", max_concurrency=n)
    out = []
    with ThreadPoolExecutor(n) as pool:
        for i in range(rounds + 1):
            t = time.perf_counter()
            list(pool.map(lambda j: eng.complete(make_request(f"q{i}.{j}")), range(n)))
            out.append(time.perf_counter() - t)
    return out[1:]

if kind == "raw asyncio":
    times = asyncio.run(raw())
elif kind == "httpx + httpcore":
    import httpx2
    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=max(100, n))
    times = asyncio.run(via_httpx(httpx2.AsyncHTTPTransport(limits=limits)))
elif kind == "httpx + Http1Transport":
    from tracegrad.llm.http1 import Http1Transport
    times = asyncio.run(via_httpx(Http1Transport(max_idle=max(100, n))))
else:
    times = engine()
print(json.dumps(times))
'''


def run_client(url: str, kind: str, n: int, rounds: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": os.path.dirname(HERE), "TRACEGRAD_NO_CACHE": "1"}
    env.pop("HTTPS_PROXY", None)
    env.pop("HTTP_PROXY", None)
    out = subprocess.run([sys.executable, "-c", _CHILD, url, kind, str(n), str(rounds)],
                         capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", default="64,256", help="calls per level, comma-separated")
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from server import BenchServer

    rows = []
    with BenchServer(args.latency) as server:
        for n in (int(x) for x in args.calls.split(",")):
            for kind in CLIENTS:
                times = run_client(server.url, kind, n, args.rounds)
                med = statistics.median(times)
                rows.append((n, kind, med, min(times), max(times)))
                print(f"{n:>4} calls  {kind:<24} {med:.3f} s [{min(times):.3f}-{max(times):.3f}]"
                      f"  x{med / args.latency:.2f} the latency", file=sys.stderr, flush=True)
    print(f"| calls | client | level wall s, median [min-max] of {args.rounds} | x latency "
          f"({args.latency:g} s) | over the raw floor |")
    print("|--:|---|--:|--:|--:|")
    floor = {n: med for n, kind, med, _, _ in rows if kind == "raw asyncio"}
    for n, kind, med, lo, hi in rows:
        print(f"| {n} | {kind} | {med:.3f} [{lo:.3f}-{hi:.3f}] | {med / args.latency:.2f} | "
              f"{med - floor[n]:+.3f} s |")


if __name__ == "__main__":
    main()
