"""`qlora chat`: talk to a domain's adapter through the router, as its users will, token by token.

Greedy (temperature 0) by default: an adapter trained on a few hundred rows answers its
training distribution well only near the mode; sampling at the API's default temperature 1
from a small model reads as noise. Each answer is followed by the version that gave it, so
during a canary the operator sees which arm answered.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from qlora.serving.client import ServingClient

EXIT_WORDS = {"/exit", "/quit", "exit", "quit"}
RESET_WORDS = {"/reset", "/clear"}


@dataclass
class ChatSession:
    client: ServingClient
    model: str
    system: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    history: list[dict] = field(default_factory=list)

    def messages(self, user_text: str) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.history + [{"role": "user", "content": user_text}]

    def ask(self, user_text: str, on_text: Callable[[str], None]) -> tuple[str, str]:
        """Stream one answer to ``on_text``; returns (answer, the versioned name that answered)."""
        pieces, answered_by = [], self.model
        for chunk in self.client.stream_chat(self.model, self.messages(user_text), self.max_tokens, self.temperature):
            answered_by = chunk.get("model") or answered_by
            for choice in chunk.get("choices", []):
                if text := (choice.get("delta") or {}).get("content"):
                    pieces.append(text)
                    on_text(text)
        answer = "".join(pieces)
        self.history += [{"role": "user", "content": user_text}, {"role": "assistant", "content": answer}]
        return answer, answered_by


def run_chat(session: ChatSession, lines: Iterable[str], write: Callable[[str], None]) -> int:
    """The loop over input lines (stdin, or a test's list); returns the number of answers."""
    write(f"chatting with {session.model} (temperature {session.temperature}); /reset clears, /exit leaves\n")
    answers = 0
    write("> ")
    for line in lines:
        text = line.strip()
        if text in EXIT_WORDS:
            break
        if text in RESET_WORDS:
            session.history.clear()
            write("(history cleared)\n> ")
            continue
        if text:
            _, answered_by = session.ask(text, write)
            write(f"\n  [{answered_by}]\n")
            answers += 1
        write("> ")
    write("\n")
    return answers
