"""The conversations: a shared system prompt, per-user history, and rounds that grow it.

Lengths are counted in words of a small vocabulary of short common English words; with the
usual BPE tokenizers each such word (with its leading space) is about one token, so a
``--system-prompt-tokens 1000`` prompt is roughly 1,000 prompt tokens. The exact prompt token
count is reported from the server's usage when it sends one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

# Short, common, single-token words in most tokenizers (why: lengths stay predictable).
_WORDS = (
    "the of and to in is it you that he was for on are as with his they at be this have from "
    "or one had by word but not what all were we when your can said there use an each which "
    "she do how their if will up other about out many then them these so some her would make "
    "like him into time has look two more write go see number no way could people my than "
    "first water been call who oil its now find long down day did get come made may part over "
    "new sound take only little work know place year live me back give most very after thing "
    "our just name good sentence man think say great where help through much before line right "
    "too mean old any same tell boy follow came want show also around form three small set put "
    "end does another well large must big even such because turn here why ask went men read "
    "need land different home us move try kind hand picture again change off play spell air "
    "away animal house point page letter mother answer found study still learn should world"
)
_VOCABULARY = tuple(_WORDS.split())

Message = dict[str, str]


def filler_words(rng: random.Random, count: int) -> str:
    """Return ``count`` pseudo-random vocabulary words joined by spaces."""
    return " ".join(rng.choice(_VOCABULARY) for _ in range(count))


def shared_system_prompt(seed: int, length: int) -> str:
    """The system prompt every user shares, so servers can reuse its KV cache (prefix reuse)."""
    header = "You are a helpful assistant. Answer the user's questions about the text below."
    if length <= 0:
        return header
    return f"{header}\n{filler_words(random.Random(f'system-{seed}'), length)}"


@dataclass
class WorkloadShape:
    """Sizes of one conversation, in approximate tokens (words)."""

    rounds: int
    system_prompt_tokens: int
    user_history_tokens: int
    question_tokens: int
    answer_tokens: int


@dataclass
class UserSession:
    """One simulated user: a chat of ``shape.rounds`` rounds whose history grows each round."""

    user_id: str
    shape: WorkloadShape
    system_prompt: str
    rng: random.Random
    history: list[Message] = field(default_factory=list)
    round_index: int = 0

    @property
    def finished(self) -> bool:
        """True once every round has been asked."""
        return self.round_index >= self.shape.rounds

    def next_messages(self) -> list[Message]:
        """Messages for the next round: system prompt, history so far, and a new question."""
        question = f"Question {self.round_index + 1} from {self.user_id}: "
        question += filler_words(self.rng, self.shape.question_tokens) + "?"
        if self.round_index == 0 and self.shape.user_history_tokens > 0:
            # The per-user part of the prefix: unique per user, shared by all of its rounds.
            background = filler_words(self.rng, self.shape.user_history_tokens)
            question = f"Some background about me ({self.user_id}): {background}\n{question}"
        return [
            {"role": "system", "content": self.system_prompt},
            *self.history,
            {"role": "user", "content": question},
        ]

    def record_round(self, messages: list[Message], answer: str | None) -> None:
        """Advance one round; keep the exchange in the history only when it was answered.

        A failed round is dropped from the history (why: two user turns in a row are rejected
        by some chat templates that require alternating roles).
        """
        if answer is not None:
            self.history.extend([messages[-1], {"role": "assistant", "content": answer}])
        self.round_index += 1


class UserFactory:
    """Makes users with run-unique ids so a session router never mixes two levels' users."""

    def __init__(self, shape: WorkloadShape, seed: int) -> None:
        self._shape = shape
        self._seed = seed
        self._system_prompt = shared_system_prompt(seed, shape.system_prompt_tokens)
        self._next_id = 0

    def new_user(self) -> UserSession:
        """Create the next user, deterministic for a given seed."""
        number = self._next_id
        self._next_id += 1
        return UserSession(
            user_id=f"user-{number:05d}",
            shape=self._shape,
            system_prompt=self._system_prompt,
            rng=random.Random(f"user-{self._seed}-{number}"),
        )


def arrival_gaps(qps: float, arrival: str, rng: random.Random) -> Iterator[float]:
    """Yield seconds between successive request launches at a mean rate of ``qps``.

    ``poisson`` draws exponential gaps (a Poisson process, like independent users);
    ``uniform`` spaces launches evenly at exactly 1/qps.
    """
    while True:
        yield rng.expovariate(qps) if arrival == "poisson" else 1.0 / qps
