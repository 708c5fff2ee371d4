#!/usr/bin/env python3
"""The Python stack as train_vector.py drives it: transformers + steering-vectors,
`train_steering_vector(model, tokenizer, pairs, layers=..., batch_size=2)`.

Prints one JSON line: load and train seconds, tokens, and the device's peak memory.
"""

import argparse
import json
import time

import torch
from steering_vectors import train_steering_vector
from transformers import AutoModelForCausalLM, AutoTokenizer


def tom_pairs(path, n):
    data = json.load(open(path))[:n]
    return [(d["scenario"] + " " + d["high_tom"], d["scenario"] + " " + d["low_tom"]) for d in data]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--pairs", required=True, help="theory_of_mind.json")
    ap.add_argument("--num-samples", type=int, default=100)
    ap.add_argument("--layers", default="all")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--attn", default="sdpa", help="sdpa is what the script gets by default")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.time()
    kwargs = dict(dtype=getattr(torch, args.dtype), attn_implementation=args.attn)
    try:  # straight onto the device, as the script's device_map="auto" does
        model = AutoModelForCausalLM.from_pretrained(args.model, device_map=args.device, **kwargs)
    except ValueError:  # no accelerate installed
        model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs).to(args.device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t1 = time.time()

    pairs = tom_pairs(args.pairs, args.num_samples)
    layers = None if args.layers == "all" else [int(x) for x in args.layers.split(",")]
    train_steering_vector(model, tokenizer, pairs, layers=layers, batch_size=args.batch_size,
                          show_progress=False)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t2 = time.time()

    tokens = sum(len(tokenizer(s)["input_ids"]) for p in pairs for s in p)
    out = {"load_s": t1 - t0, "train_s": t2 - t1, "tokens": tokens, "pairs": len(pairs)}
    if args.device.startswith("cuda"):
        out["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
