"""Build the GPU check's tiny model offline: the project's tiny-model tokenizer (trained on
vLLM's own sources, scripts/engines/build_tiny_model.py) with a 2-layer random-weight Llama whose
attention has the shape of Llama-3.1-8B's (32 query heads, 8 KV heads of size 128) and 8192
positions (the chart's --max-model-len). Deterministic; a finished build returns at once.

Runs 1 and 2 used hidden 256 with the CPU model's attention (2 KV heads of size 32); run 3 used
this shape to rule out a layout misread by LMCache on unusual head sizes (it was not the cause:
see docs/real-engines.md, "GPU runs 2 and 3").
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engines"))
import build_tiny_model as cpu_model

RECIPE = cpu_model.RECIPE + " | gpu: hidden 4096, 32 heads, 8 kv heads of 128, 8192 positions"


def main(out: Path) -> int:
    marker = out / cpu_model.MARKER
    if marker.is_file() and marker.read_text() == RECIPE:
        print(f"tiny GPU model ready: {out}")
        return 0
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-gpu-", dir=out.parent))
    try:
        cpu_model.build(tmp)  # tokenizer, chat template and a small model we replace
        cfg = LlamaConfig.from_pretrained(tmp)
        cfg.hidden_size, cfg.intermediate_size, cfg.max_position_embeddings = 4096, 4096, 8192
        cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim = 32, 8, 128
        torch.manual_seed(0)
        LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(tmp)
        marker_tmp = tmp / cpu_model.MARKER
        marker_tmp.write_text(RECIPE)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"tiny GPU model built in {time.monotonic() - started:.1f}s: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve()))
