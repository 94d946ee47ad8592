"""The course's synthetic text world: templated chats, few-shot Q&A, documents and agent logs.

The tiny model is trained on text made here, and the workloads build their prompts from the same
pieces, so the model reads course prompts fluently. Everything is a pure function of a
`random.Random`, so the corpus and every trace are reproducible from a seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

SYSTEM, USER, ASSISTANT, TOOL = "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"
END = "<|end|>"
SPECIAL_TOKENS = [END, SYSTEM, USER, ASSISTANT, TOOL, "<|pad|>"]
EOS = END

CAPITALS = {
    "France": "Paris", "Spain": "Madrid", "Italy": "Rome", "Germany": "Berlin",
    "Japan": "Tokyo", "Egypt": "Cairo", "Peru": "Lima", "Kenya": "Nairobi",
    "Canada": "Ottawa", "Norway": "Oslo", "Greece": "Athens", "Chile": "Santiago",
    "Cuba": "Havana", "India": "New Delhi", "Ireland": "Dublin", "Poland": "Warsaw",
}
COLORS = {
    "the sky": "blue", "grass": "green", "snow": "white", "a banana": "yellow",
    "coal": "black", "a tomato": "red", "an orange": "orange", "a plum": "purple",
}
SOUNDS = {
    "a dog": "woof", "a cat": "meow", "a cow": "moo", "a duck": "quack",
    "a sheep": "baa", "an owl": "hoot", "a lion": "roar", "a frog": "croak",
}
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
PLACES = {
    "library": (9, 18), "museum": (10, 17), "bakery": (7, 14), "pool": (6, 21),
    "bank": (9, 16), "market": (8, 13), "gym": (5, 22), "post office": (8, 17),
}
NAMES = ["Ada", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea"]
TOWNS = ["Riverton", "Oakdale", "Millbrook", "Stonefield", "Lakeside", "Pinehurst"]
TOOLS = ["search", "calculator", "calendar", "weather"]

SYSTEM_PROMPTS = [
    "You are a helpful assistant. Answer in one short sentence.",
    "You are the front desk assistant of the town hall. Be polite and brief.",
    "You are a friendly tutor for children. Explain simply and kindly.",
    "You are an agent that can use tools. Think, act, then answer.",
]


def long_system_prompt(rng: random.Random, n_rules: int = 30) -> str:
    """A long policy-style system prompt (hundreds of tokens), as real deployments use."""
    town = rng.choice(TOWNS)
    rules = [f"You are the assistant of the {town} visitor center. Follow these rules."]
    for i in range(1, n_rules + 1):
        place = rng.choice(sorted(PLACES))
        opens, closes = PLACES[place]
        rules.append(
            f"Rule {i}: the {place} in {town} opens at {opens} and closes at {closes}; "
            f"send visitors there on {rng.choice(DAYS)}."
        )
    rules.append("Answer in one short sentence.")
    return " ".join(rules)


def qa_pair(rng: random.Random) -> tuple[str, str]:
    """One question and its correct answer, drawn from the fact tables."""
    kind = rng.randrange(6)
    if kind == 0:
        country = rng.choice(sorted(CAPITALS))
        answer = f"The capital of {country} is {CAPITALS[country]}."
        return f"What is the capital of {country}?", answer
    if kind == 1:
        thing = rng.choice(sorted(COLORS))
        return f"What color is {thing}?", f"{thing.capitalize()} is {COLORS[thing]}."
    if kind == 2:
        animal = rng.choice(sorted(SOUNDS))
        return f"What does {animal} say?", f"{animal.capitalize()} says {SOUNDS[animal]}."
    if kind == 3:
        place, day = rng.choice(sorted(PLACES)), rng.choice(DAYS)
        opens, closes = PLACES[place]
        return (
            f"When does the {place} open on {day}?",
            f"On {day} the {place} opens at {opens} and closes at {closes}.",
        )
    if kind == 4:
        a, b = rng.randrange(10), rng.randrange(10)
        return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
    name, town = rng.choice(NAMES), rng.choice(TOWNS)
    return f"Where does {name} live?", f"{name} lives in {town}."


def format_chat(messages: Sequence[tuple[str, str]], add_generation_prompt: bool = False) -> str:
    """Render (role, text) messages with the course's chat markers."""
    tag = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT, "tool": TOOL}
    out = "".join(f"{tag[role]}{text}{END}" for role, text in messages)
    return out + (ASSISTANT if add_generation_prompt else "")


def chat(rng: random.Random, n_turns: int, system: str | None = None) -> list[tuple[str, str]]:
    """A multi-turn conversation: system prompt, then user/assistant pairs."""
    messages = [("system", system if system is not None else rng.choice(SYSTEM_PROMPTS))]
    for _ in range(n_turns):
        q, a = qa_pair(rng)
        messages += [("user", q), ("assistant", a)]
    return messages


def fewshot_examples(rng: random.Random, k: int) -> str:
    """k solved examples in the Q:/A: format that few-shot prompts share."""
    return "".join(f"Q: {q}\nA: {a}\n\n" for q, a in (qa_pair(rng) for _ in range(k)))


def fewshot_prompt(examples: str, question: str) -> str:
    """Shared examples followed by a new question, ending where the answer starts."""
    return f"{examples}Q: {question}\nA:"


def document(rng: random.Random, n_sentences: int) -> str:
    """A report about a fictional town, built from facts a question can ask about."""
    town = rng.choice(TOWNS)
    sentences = [f"This is the {town} town report."]
    for _ in range(n_sentences):
        kind = rng.randrange(3)
        if kind == 0:
            place = rng.choice(sorted(PLACES))
            opens, closes = PLACES[place]
            sentences.append(f"The {place} opens at {opens} and closes at {closes}.")
        elif kind == 1:
            sentences.append(f"{rng.choice(NAMES)} lives in {town} and visits the "
                             f"{rng.choice(sorted(PLACES))} on {rng.choice(DAYS)}.")
        else:
            a, b = rng.randrange(10), rng.randrange(10)
            sentences.append(f"On {rng.choice(DAYS)} {a} plus {b} people came, so {a + b} in all.")
    return " ".join(sentences)


def agent_step(rng: random.Random) -> tuple[str, str, str]:
    """One tool-use step: the thought and action the assistant writes, and the tool's reply."""
    tool = rng.choice(TOOLS)
    if tool == "calculator":
        a, b = rng.randrange(10), rng.randrange(10)
        return (f"I need to add {a} and {b}.", f"calculator[{a} + {b}]", f"{a + b}")
    if tool == "weather":
        town = rng.choice(TOWNS)
        sky = rng.choice(["sunny", "rainy", "cloudy", "windy"])
        return (f"I should check the weather in {town}.", f"weather[{town}]", f"It is {sky}.")
    if tool == "calendar":
        name, day = rng.choice(NAMES), rng.choice(DAYS)
        return (f"I should look at the calendar of {name}.", f"calendar[{name}]",
                f"{name} is free on {day}.")
    country = rng.choice(sorted(CAPITALS))
    return (f"I should search for the capital of {country}.", f"search[capital of {country}]",
            f"{CAPITALS[country]}.")


def agent_transcript(rng: random.Random, n_steps: int) -> list[tuple[str, str]]:
    """A tool-using agent loop: each step appends a thought/action and the tool's observation."""
    q, a = qa_pair(rng)
    messages = [("system", SYSTEM_PROMPTS[3]), ("user", q)]
    for _ in range(n_steps):
        thought, action, observation = agent_step(rng)
        messages += [("assistant", f"Thought: {thought} Action: {action}"), ("tool", observation)]
    messages.append(("assistant", f"Answer: {a}"))
    return messages


def training_documents(n_docs: int, seed: int = 0) -> list[str]:
    """The training corpus: a seeded mix of chats, few-shot blocks, documents and agent logs."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        kind = rng.random()
        if kind < 0.40:
            system = long_system_prompt(rng, rng.randrange(2, 8)) if rng.random() < 0.2 else None
            docs.append(format_chat(chat(rng, rng.randrange(1, 5), system)))
        elif kind < 0.60:
            examples = fewshot_examples(rng, rng.randrange(1, 5))
            q, a = qa_pair(rng)
            docs.append(fewshot_prompt(examples, q) + f" {a}\n\n")
        elif kind < 0.80:
            doc = document(rng, rng.randrange(3, 10))
            q, a = qa_pair(rng)
            docs.append(format_chat([("system", SYSTEM_PROMPTS[0]), ("user", f"{doc} {q}"),
                                     ("assistant", a)]))
        else:
            docs.append(format_chat(agent_transcript(rng, rng.randrange(1, 4))))
    return docs
