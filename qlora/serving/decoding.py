"""Per-row decoding state: pick the next token, detect the end, stream the new text.

Stop strings are cut from the answer (as OpenAI and vLLM do), and text is held back
while it could still be the start of a stop string or half of a UTF-8 character, so
a streamed answer never shows what the final answer drops.
"""
from __future__ import annotations

import torch


class RowDecoder:
    def __init__(self, tokenizer, request, stop_token_ids: set[int]):
        self.tokenizer = tokenizer
        self.request = request
        self.stop_token_ids = stop_token_ids
        self.token_ids: list[int] = []
        self.text = ""
        self.sent = 0                     # characters of ``text`` already streamed
        self.finished = False
        self.finish_reason = "length"
        self.completion_tokens = 0
        self.error = ""                   # set when this row's sampling failed: the row ends, others go on
        self.watch_text = bool(request.stop) or request.on_delta is not None
        self.generator = None
        if request.temperature > 0 and request.seed is not None:
            self.generator = torch.Generator().manual_seed(request.seed)

    @property
    def samples(self) -> bool:
        return self.request.temperature > 0 and not self.finished

    def choose(self, logits: torch.Tensor) -> int:
        """Sample one token (temperature > 0); greedy rows are chosen for the whole batch at once.

        A failure here (non-finite probabilities) ends this row with an error and never raises, so
        the rows sharing its batch go on decoding."""
        try:
            return self._sample(logits)
        except (RuntimeError, ValueError) as exc:
            self.error = f"sampling failed: {exc!r}"
            self.finished, self.finish_reason = True, "error"
            return int(logits.argmax())

    def _sample(self, logits: torch.Tensor) -> int:
        if self.request.top_k > 0:
            kth = torch.topk(logits, min(self.request.top_k, logits.shape[-1])).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits / self.request.temperature, dim=-1)
        if self.request.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < self.request.top_p
            keep[0] = True  # the top token always stays (a top_p below float32's range compares as 0)
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def accept(self, token_id: int) -> None:
        if self.finished:
            return
        self.completion_tokens += 1
        if token_id in self.stop_token_ids:
            self._finish("stop")
            return
        self.token_ids.append(token_id)
        if self.watch_text:  # decoding every step is only needed to find stop strings or to stream
            self.text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
            cut = _first_stop(self.text, self.request.stop)
            if cut is not None:
                self.text = self.text[:cut]
                self._finish("stop")
                return
        if self.completion_tokens >= self.request.max_tokens:
            self._finish("length")
            return
        self._stream(final=False)

    def _finish(self, reason: str) -> None:
        self.finished = True
        self.finish_reason = reason
        if not self.watch_text:
            self.text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        self._stream(final=True)

    def _stream(self, final: bool) -> None:
        if self.request.on_delta is None:
            return
        end = len(self.text) if final else self._safe_end()
        if end > self.sent:
            self.request.on_delta(self.text[self.sent:end])
            self.sent = end

    def _safe_end(self) -> int:
        end = len(self.text)
        if self.text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its other bytes
            end -= 1
        for stop in self.request.stop:
            for k in range(min(len(stop) - 1, end), 0, -1):
                if self.text[:end].endswith(stop[:k]):
                    end = min(end, len(self.text[:end]) - k)
                    break
        return max(end, self.sent)


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None
