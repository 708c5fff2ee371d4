#!/usr/bin/env python3
"""Writes a random-weight Gemma-2 model directory of a given shape, for benchmarks.

    make_model.py OUT --shape gemma-2-2b [--layers 8] [--dtype float32] [--device cpu]
    make_model.py OUT --config my_config.json

Shapes are the published configs' dimensions; `--layers` keeps only the first N blocks. The
tokenizer is the test fixture's (its ids all fall inside Gemma's vocabulary).
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from transformers import Gemma2Config, Gemma2ForCausalLM

SHAPES = {
    "gemma-2-2b": dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                       query_pre_attn_scalar=256),
    "gemma-2-9b": dict(hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=256,
                       query_pre_attn_scalar=256),
    "gemma-2-27b": dict(hidden_size=4608, intermediate_size=36864, num_hidden_layers=46,
                        num_attention_heads=32, num_key_value_heads=16, head_dim=128,
                        query_pre_attn_scalar=144),
}
COMMON = dict(vocab_size=256000, sliding_window=4096, attn_logit_softcapping=50.0,
              final_logit_softcapping=30.0, max_position_embeddings=8192, rms_norm_eps=1e-6,
              rope_theta=10000.0, hidden_activation="gelu_pytorch_tanh", bos_token_id=2,
              eos_token_id=1, pad_token_id=0)

HERE = Path(__file__).resolve().parent
TOKENIZER_DIR = HERE.parent.parent / "tests" / "fixtures" / "tiny-gemma2"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shape", choices=sorted(SHAPES))
    ap.add_argument("--config", help="a config.json whose keys override the shape")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    cfg = dict(COMMON)
    if args.shape:
        cfg.update(SHAPES[args.shape])
    if args.config:
        cfg.update(json.loads(Path(args.config).read_text()))
    if args.layers:
        cfg["num_hidden_layers"] = args.layers
    dtype = getattr(torch, args.dtype)

    t0 = time.time()
    torch.manual_seed(0)
    config = Gemma2Config(**cfg)
    torch.set_default_dtype(dtype)  # build in the target dtype: no f32 copy of a 27B model
    with torch.device(args.device):
        model = Gemma2ForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(0.0, 0.1)
            else:
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, safe_serialization=True, max_shard_size="5GB")
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TOKENIZER_DIR / f, out / f)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"out": str(out), "params": params, "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
