"""What the benchmarks share: the chat prompts (so figures are comparable) and the raw
llama-cpp-python baseline call."""

import time

import llama_cpp

SYSTEM = "You are a helpful assistant."
PROMPTS = [
    "Explain what a context window is.",
    "Write a haiku about the sea.",
    "List five fruits and their colours.",
    "How do I boil an egg?",
    "Describe a cat to someone who has never seen one.",
    "What are the benefits of walking every day?",
    "Give me three tips for writing clear emails.",
    "Why is the sky blue?",
]


def messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


def count_tokens(llm: llama_cpp.Llama, text: str) -> int:
    """Output tokens counted one way for every side: re-tokenising the text."""
    return len(llm.tokenize(text.encode(), add_bos=False, special=False))


def run_raw(
    llm: llama_cpp.Llama, prompt: str, seed: int, max_tokens: int, temperature: float
) -> dict:
    """One streamed chat on raw llama-cpp-python: text, tokens, TTFT and total seconds."""
    started = time.perf_counter()
    first = None
    parts: list[str] = []
    for chunk in llm.create_chat_completion(
        messages=messages(prompt),
        stream=True,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=0.95,
        top_k=40,
        min_p=0.05,
        seed=seed,
    ):
        content = chunk["choices"][0]["delta"].get("content")
        if content:
            first = first or time.perf_counter()
            parts.append(content)
    finished = time.perf_counter()
    text = "".join(parts)
    return {
        "text": text,
        "tokens": count_tokens(llm, text),
        "ttft": (first or finished) - started,
        "total": finished - started,
    }
