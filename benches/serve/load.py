#!/usr/bin/env python3
"""Load for `train-vector serve`: CLIENTS threads each send REQUESTS completions one after
another (loopback only), steered or not; prints one JSON line with the request count, failures,
p50/p99 latency, generated tokens and tokens per second. Standard library only.

    load.py URL CLIENTS REQUESTS MAX_TOKENS [VECTOR MULTIPLIER]
"""
import json
import sys
import threading
import time
import urllib.error
import urllib.request

url, clients, requests, max_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
steering = [{"vector": sys.argv[5], "multiplier": float(sys.argv[6])}] if len(sys.argv) > 6 else []
prompts = [
    "Sally puts her marble in the basket and leaves the room. Anne moves the marble to the box.",
    "Tom thinks his keys are in his coat, but his sister moved them to the drawer.",
    "The weather today is lovely, said Jonah, as the rain soaked his coat.",
    "Explain how a steering vector changes what a language model writes.",
]
results, lock = [], threading.Lock()


def client(c):
    for r in range(requests):
        body = json.dumps({
            "prompt": prompts[(c + r) % len(prompts)], "max_tokens": max_tokens,
            "temperature": 0, "steering": steering,
        }).encode()
        req = urllib.request.Request(url + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        start = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=600) as resp:
                out = json.load(resp)
            ok, tokens = True, out["usage"]["completion_tokens"]
        except (urllib.error.URLError, KeyError, ValueError):
            ok, tokens = False, 0
        with lock:
            results.append((ok, time.monotonic() - start, tokens))


begin = time.monotonic()
threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
wall = time.monotonic() - begin
lat = sorted(r[1] for r in results)
tokens = sum(r[2] for r in results)
print(json.dumps({
    "clients": clients, "requests": len(results), "failed": sum(1 for r in results if not r[0]),
    "p50_s": round(lat[len(lat) // 2], 3), "p99_s": round(lat[min(len(lat) - 1, len(lat) * 99 // 100)], 3),
    "tokens": tokens, "tokens_per_s": round(tokens / wall, 1), "steered": bool(steering),
}))
