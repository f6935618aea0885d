"""Build the tiny random-weight Llama and its BPE tokenizer that the real-engine tests serve.

Run with the vLLM environment's Python (it needs torch, tokenizers and transformers):

    .cache/vllm-venv/bin/python scripts/engines/build_tiny_model.py [--out .cache/tiny-model-4k]

Everything is offline and deterministic: the tokenizer is trained on a sorted list of vLLM's own
source files (shipped in the pinned wheel) and the weights come from a fixed seed, so two builds
give byte-identical files. A finished build carries a marker file; a later run with the same
recipe returns at once.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# v1 (2,048 positions) lived in .cache/tiny-model; a new recipe gets a new folder, so checkouts
# still on the old one keep theirs.
DEFAULT_OUT = ROOT / ".cache" / "tiny-model-4k"
# Bump when anything below changes, so cached builds are rebuilt.
RECIPE = (
    "tiny-llama-v2: 2 layers, hidden 128, 4 heads, 2 kv heads, vocab 2048, 4096 positions, seed 0"
)
# Positions the model supports: run_pd.sh's default conversation reaches ~3,050 tokens of this
# tokenizer in its fifth round (1,000-word system prompt, 200 of history, 5 x 30 + 4 x 100).
MAX_POSITIONS = 4096
MARKER = ".pdstack-complete"
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
VOCAB_SIZE = 2048
TRAINING_FILES = 400


def is_complete(out: Path) -> bool:
    """True when `out` holds a finished build of this recipe."""
    marker = out / MARKER
    if not marker.is_file() or marker.read_text() != RECIPE:
        return False
    return all((out / name).is_file() for name in REQUIRED)


def training_files() -> list[str]:
    """vLLM's Python sources from the installed wheel, in a stable order."""
    import importlib.util

    # find_spec locates the package without importing it (importing vllm takes seconds).
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("vllm is not installed in this Python: run it with the vLLM venv")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(str(p) for p in package_dir.rglob("*.py"))
    if len(files) < TRAINING_FILES:
        raise SystemExit(f"expected at least {TRAINING_FILES} .py files under {package_dir}")
    return files[:TRAINING_FILES]


def build(out: Path) -> None:
    """Train the tokenizer, create the random model and save both into `out`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train(training_files(), trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(out)

    cfg = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=False,
        dtype="bfloat16",
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model directory")
    out: Path = parser.parse_args().out.resolve()
    if is_complete(out):
        print(f"tiny model ready: {out}")
        return 0
    started = time.monotonic()
    print(f"Building the tiny model into {out} (offline, about 10 s) ...", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so an interrupted build never looks complete.
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-model-", dir=out.parent))
    try:
        build(tmp)
        (tmp / MARKER).write_text(RECIPE)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"tiny model ready in {time.monotonic() - started:.1f}s: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
