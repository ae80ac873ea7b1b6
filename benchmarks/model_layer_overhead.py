"""Model-layer overhead: llmduet's in-process backend against raw llama-cpp-python.

Same GGUF (the bundled SmolLM2), same threads, prompts, sampling and seeds; raw and
llmduet runs are interleaved (order alternating each round) so machine noise hits both
alike. Prints output tokens/s for each, their ratio (goal >= 0.97) and the TTFT llmduet
adds (goal <= 5 ms).

    python benchmarks/model_layer_overhead.py [--rounds 3] [--max-tokens 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
from pathlib import Path

import llama_cpp

from common import PROMPTS, count_tokens, messages, run_raw
from llmduet.models.llamacpp import LlamaCppBackend, bundled_model_path
from llmduet.models.types import ChatRequest


def run_duet(
    backend: LlamaCppBackend, llm: llama_cpp.Llama, prompt: str, seed: int, args: argparse.Namespace
) -> dict:
    request = ChatRequest(
        messages=messages(prompt),
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=seed,
    )
    result = asyncio.run(backend.complete(request))
    tokens = count_tokens(llm, result.text)
    return {
        "text": result.text,
        "tokens": tokens,
        "ttft": result.ttft_s or result.total_s,
        "total": result.total_s,
        "usage_tokens": result.output_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--out", default="benchmarks/results/model_layer_overhead.json")
    args = parser.parse_args()

    path = bundled_model_path()
    raw = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=2048,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    duet = LlamaCppBackend("llama", path, n_ctx=2048, threads=args.threads, max_sequences=1)
    duet.model()
    run_raw(raw, "Hello", 0, args.max_tokens, args.temperature)  # warm both up
    run_duet(duet, raw, "Hello", 0, args)

    samples: dict[str, list[dict]] = {"raw": [], "duet": []}
    for round_index in range(args.rounds):
        for index, prompt in enumerate(PROMPTS):
            seed = 1000 * round_index + index
            order = ["raw", "duet"] if (round_index + index) % 2 == 0 else ["duet", "raw"]
            got = {}
            for who in order:
                got[who] = (
                    run_raw(raw, prompt, seed, args.max_tokens, args.temperature)
                    if who == "raw"
                    else run_duet(duet, raw, prompt, seed, args)
                )
                samples[who].append(got[who])

    def summary(rows: list[dict]) -> dict:
        tokens = sum(r["tokens"] for r in rows)
        seconds = sum(r["total"] for r in rows)
        return {
            "calls": len(rows),
            "output_tokens": tokens,
            "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds, 2),
            "ttft_ms_p50": round(statistics.median(r["ttft"] for r in rows) * 1000, 2),
            "ttft_ms_mean": round(statistics.fmean(r["ttft"] for r in rows) * 1000, 2),
        }

    raw_s, duet_s = summary(samples["raw"]), summary(samples["duet"])
    ratio = duet_s["tokens_per_s"] / raw_s["tokens_per_s"]
    added_ttft = duet_s["ttft_ms_p50"] - raw_s["ttft_ms_p50"]
    report = {
        "benchmark": "model_layer_overhead",
        "machine": {
            "cpus": __import__("os").cpu_count(),
            "python": platform.python_version(),
            "llama_cpp_python": llama_cpp.__version__,
        },
        "settings": vars(args),
        "raw_llama_cpp_python": raw_s,
        "llmduet_llamacpp_backend": duet_s,
        "tokens_per_s_ratio": round(ratio, 3),
        "added_ttft_ms_p50": round(added_ttft, 2),
        "duet_usage_tokens": sum(r["usage_tokens"] for r in samples["duet"]),
    }
    print(f"{'':28}{'raw llama-cpp-python':>22}{'llmduet backend':>18}")
    print(f"{'output tokens/s':28}{raw_s['tokens_per_s']:>22.1f}{duet_s['tokens_per_s']:>18.1f}")
    print(f"{'TTFT p50 (ms)':28}{raw_s['ttft_ms_p50']:>22.2f}{duet_s['ttft_ms_p50']:>18.2f}")
    print(f"{'TTFT mean (ms)':28}{raw_s['ttft_ms_mean']:>22.2f}{duet_s['ttft_ms_mean']:>18.2f}")
    print(f"tokens/s ratio (llmduet / raw): {ratio:.3f}   (goal >= 0.97)")
    print(f"added TTFT p50: {added_ttft:+.2f} ms   (goal <= 5 ms)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
