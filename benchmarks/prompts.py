"""The chat prompts every benchmark sends, so their figures are comparable."""

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
