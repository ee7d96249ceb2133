"""A GGUF file as a chat callable for :func:`~distillery_assets.poetry.session.run_session` (llama-cpp-python).

Generation stops on the chat template's end-of-turn: llama-cpp-python formats messages with the template
stored in the GGUF (``tokenizer.chat_template``) and stops on its EOS token; we also pass the template's
end-of-turn string explicitly (``<|im_end|>`` for ChatML, ``<|eot_id|>`` for Llama 3, ``<end_of_turn>`` ...)
so a file whose EOS differs from its end-of-turn still stops at the end of the reply.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from distillery_assets.poetry.session import Reply
from distillery_assets.poetry.settings import ModelSettings, Sampling

END_OF_TURN_MARKERS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>")


def end_of_turn_stops(chat_template: str | None, eos_token: str | None) -> list[str]:
    """Stop strings for a chat template: the end-of-turn markers it uses, plus the EOS token."""
    stops = [m for m in END_OF_TURN_MARKERS if chat_template and m in chat_template]
    if eos_token and eos_token not in stops:
        stops.append(eos_token)
    return stops


def end_of_turn_ids(llm, stops: list[str], eos_id: int) -> list[int]:
    """Token ids that end a reply: the EOS token and every stop string that is a single special token."""
    ids = {eos_id} if eos_id >= 0 else set()
    for stop in stops:
        toks = llm.tokenize(stop.encode("utf-8"), add_bos=False, special=True)
        if len(toks) == 1:
            ids.add(toks[0])
    return sorted(ids)


def count_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())


class HoldEndOfTurn:
    """A llama-cpp-python logits processor: end-of-turn tokens get -inf until the generated text has
    ``min_lines`` non-empty lines. The first call sees only the prompt, so its length marks where the reply
    starts. The model still chooses every token; it just cannot stop before the last line is begun."""

    def __init__(self, detokenize, end_ids: list[int], min_lines: int):
        self.detokenize, self.end_ids, self.min_lines = detokenize, list(end_ids), int(min_lines)
        self.prompt_len: int | None = None

    def __call__(self, input_ids, scores):
        if self.prompt_len is None:
            self.prompt_len = len(input_ids)
        reply = self.detokenize(list(input_ids[self.prompt_len:])).decode("utf-8", "ignore")
        if count_lines(reply) < self.min_lines:
            scores[self.end_ids] = -float("inf")
        return scores


class _Captured(Exception):
    def __init__(self, tokens: list[int]):
        self.tokens = tokens


class _PromptOnly:
    """Stands in for the ``Llama`` a chat handler is given: its ``create_completion`` raises with the prompt
    tokens the handler built, so the caller gets exactly what a real completion would evaluate."""

    def __init__(self, llm):
        self._llm = llm

    def __getattr__(self, name):
        return getattr(self._llm, name)

    def create_completion(self, prompt, **kwargs):
        raise _Captured(list(prompt))


def prompt_tokens(llm, messages: list[dict[str, str]]) -> list[int]:
    """The tokens ``llm.create_chat_completion(messages=messages)`` evaluates as its prompt (the GGUF's chat
    template, through llama-cpp-python's own handler)."""
    from distillery_assets.llm.providers.local import _chat_handler

    try:
        _chat_handler(llm)(llama=_PromptOnly(llm), messages=messages)
    except _Captured as got:
        return got.tokens
    raise RuntimeError("the chat handler returned without asking for a completion")


def common_prefix(a, b) -> int:
    """How many leading tokens two token sequences share (lists, tuples or numpy slices)."""
    return len(os.path.commonprefix([list(a), list(b)]))


READ_AHEAD_MIN_TOKENS = 8
"""New stable tokens a read-ahead waits for before it evaluates (one forward pass per few tokens, not per token)."""

READ_AHEAD_CHUNK = 32
"""The most tokens one read-ahead evaluation takes, so closing it waits for at most one such chunk."""

GRID = 16
"""The grid a tutor context evaluates its prompts on: batches (``n_batch`` and ``n_ubatch``) of this many tokens,
each from a multiple of it (:func:`aligned_start`). llama.cpp's logits move with how a prompt is split into
batches (a Q4_K_M poet differed at 16 of 28 single split points of a 29-token probe; the bundled Q4_1 in 2 of 30
random splits of 418 tokens), so a reply used to depend on how far a read-ahead had got, or on what an earlier turn
left in the context. On the grid every position is evaluated in the same batch whatever the context held, so a
reply depends on its prompt and seed only. Costs: up to GRID - 1 tokens evaluated again per turn (the cell the
held prefix ends in), and prompt batches of 16 (about 10% slower than 512 at one thread, measured)."""


def aligned_start(held: int, canonical: int, prompt_len: int, grid: int | None) -> int:
    """Where a prompt's evaluation starts in a context that holds ``held`` of its tokens. Without a grid: there.
    On a grid (:data:`GRID`): at the start of the cell that position falls in, and never past ``canonical`` (the end of the
    context's cells that were each evaluated whole, in one batch), and before the prompt's last token (so a
    prompt is never only partly re-evaluated from a lone last token). Every cell of the prompt is then
    evaluated in one batch of the same rows, whatever the context held, so the logits are those of a fresh
    context."""
    if grid is None:
        return held
    start = min(held, canonical, prompt_len - 1)
    return max(0, start - start % grid)

class _Gate:
    """One read-ahead evaluation at a time in this process, the waiting one of lowest ``priority`` first: two
    read-aheads of one turn (the educator's revision brief, then the final note that follows an approval) share
    the one core beside the writer, chunk by chunk (measured: both at once slowed the writer's decode from
    ~60-90 to ~36-40 tokens/s on two cores), the likelier turn first."""

    def __init__(self):
        self._cv = threading.Condition()
        self._busy = False
        self._waiting: list[int] = []

    @contextmanager
    def turn(self, priority: int) -> Iterator[None]:
        with self._cv:
            self._waiting.append(priority)
            while self._busy or min(self._waiting) < priority:
                self._cv.wait()
            self._waiting.remove(priority)
            self._busy = True
        try:
            yield
        finally:
            with self._cv:
                self._busy = False
                self._cv.notify_all()


_READING = _Gate()


class ReadAhead:
    """Evaluates the known beginning of a model's next prompt while another model is still writing the text
    that prompt carries (the tutor's critique carries the poet's draft; the poet's revision, the educator's
    brief). A background thread takes the text written so far (:meth:`feed`), builds the next turn's prompt
    tokens up to it (``user_prefix(text)`` as the user turn, through the chat template) and evaluates those
    not yet in the context, leaving out the last tokens of the text (a token can still merge with what comes
    next), at most :data:`READ_AHEAD_CHUNK` tokens per evaluation. When the writer is done (:meth:`close`:
    it waits for the chunk under way, and leaves the rest), the next turn is an ordinary completion: llama.cpp
    re-evaluates only where its prompt differs from what was read ahead (the longest common prefix), so a
    wrong guess costs time, never a different prompt. llama.cpp runs without Python's lock, so the writer's
    decode and this prefill use two cores at once."""

    def __init__(self, llm, system: str, user_prefix: Callable[[str], str], *, threads: int = 1, margin: int = 2,
                 release: Callable[[], None] | None = None, priority: int = 0, grid: int | None = None,
                 cells: dict[int, int] | None = None):
        self.llm, self.system, self.user_prefix, self._release = llm, system, user_prefix, release
        # on a grid: whole cells only, from a cell's start; ``cells`` records per context how far its whole
        # cells reach (GGUFChat.canonical)
        self.grid, self.cells = grid, cells if cells is not None else {}
        self.priority = int(priority)  # among read-aheads running at once, the lowest evaluates first
        self.threads, self.margin = int(threads), int(margin)
        self.evaluated = 0  # tokens this read-ahead put into the context
        self.error: BaseException | None = None
        self._text: str | None = None
        self._closing = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="read-ahead", daemon=True)
        self._thread.start()

    def feed(self, text: str) -> None:
        with self._wake:
            self._text = text
            self._wake.notify()

    def _stable(self, text: str) -> list[int]:
        messages = [{"role": "system", "content": self.system}, {"role": "user", "content": self.user_prefix(text)}]
        with_text = prompt_tokens(self.llm, messages)
        longer = prompt_tokens(self.llm, [messages[0], {"role": "user",
                                                             "content": messages[1]["content"] + " \u2026 more"}])
        return with_text[:max(0, common_prefix(with_text, longer) - self.margin)]

    def _run(self) -> None:
        from distillery_assets.threads import set_llama_thread_counts

        llm, done = self.llm, ""
        before = (llm.n_threads, llm.n_threads_batch)
        try:
            set_llama_thread_counts(llm, self.threads, self.threads)
            while True:
                with self._wake:
                    while not self._closing and (self._text is None or self._text == done):
                        self._wake.wait()
                    if self._closing:
                        return
                    text = self._text
                tokens = self._stable(text)
                held = common_prefix(llm.input_ids[:llm.n_tokens], tokens)
                if self.grid is None:
                    keep, end = held, len(tokens)
                else:  # whole cells from a cell's start
                    keep = aligned_start(held, self.cells.get(id(llm), 0), len(tokens) + 1, self.grid)
                    end = len(tokens) - len(tokens) % self.grid
                if end - keep >= max(READ_AHEAD_MIN_TOKENS, self.grid or 0):
                    chunk = tokens[keep:min(end, keep + READ_AHEAD_CHUNK)]
                    with _READING.turn(self.priority):
                        if self._closing:
                            return
                        llm.n_tokens = keep
                        llm.eval(chunk)
                        if self.grid is not None:
                            self.cells[id(llm)] = keep + len(chunk)
                    self.evaluated += len(chunk)
                    if keep + len(chunk) < end:
                        continue  # more of this text to read: the next chunk, unless closed meanwhile
                done = text
        except BaseException as exc:  # noqa: BLE001 - reported by close(); the next turn evaluates as usual
            self.error = exc
        finally:
            set_llama_thread_counts(llm, *before)

    def stop(self) -> None:
        """Tell the reader to stop after the evaluation under way, without waiting for it (:meth:`close` waits)."""
        with self._wake:
            self._closing = True
            self._wake.notify()

    def close(self) -> int:
        """Stop after the evaluation under way; returns the tokens read ahead. The model is free again."""
        self.stop()
        self._thread.join()
        if self._release is not None:
            self._release()
            self._release = None
        return self.evaluated


class GGUFChat:
    """Loads a GGUF once; calling it runs one chat completion. Threads: the settings' ``n_threads`` /
    ``n_threads_batch``, else the thread policy's (``distillery_assets.threads``).

    ``system``: the system prompt every turn of this model starts with. It is evaluated once, at load
    (:meth:`prime`), so a turn's first token waits only for its own new tokens: llama.cpp keeps the evaluated
    tokens and each completion re-evaluates only what differs from them (its longest common prefix with the
    previous prompt). ``benchmarks/tutor.py`` measures first-token latency with and without it."""

    def __init__(self, path: Path, settings: ModelSettings | None = None, *, system: str | None = None,
                 contexts: int | None = None):
        from llama_cpp import Llama  # heavy import, only when a model is really loaded

        from distillery_assets.threads import llama_threads, spare_cores

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        s = settings or ModelSettings()
        self.path = path
        def load():
            return Llama(model_path=str(path), n_ctx=s.n_ctx, **llama_threads(s.n_threads, s.n_threads_batch),
                         n_batch=GRID, n_ubatch=GRID, n_gpu_layers=s.n_gpu_layers, verbose=False)

        self.llm = load()  # the context of the turn being asked (select() picks it)
        # more contexts on the same file: its weights are memory-mapped, so they share one copy in the page cache
        # (on a GPU, n_gpu_layers > 0, each context uploads its own)
        self.contexts = [self.llm] + [load() for _ in range((contexts or s.contexts) - 1)]
        self._reserved: set[int] = set()  # contexts a read-ahead is filling
        # prompt threads per turn: the policy's, plus a core nobody else is using (fixed when the settings say)
        self.spare = spare_cores(s.n_threads or s.n_threads_batch)
        meta = self.llm.metadata or {}
        eos_id = self.llm.token_eos()
        eos = self.llm.detokenize([eos_id], special=True).decode("utf-8", "ignore") if eos_id >= 0 else None
        self.stops = end_of_turn_stops(meta.get("tokenizer.chat_template"), eos)

        self.end_ids = end_of_turn_ids(self.llm, self.stops, eos_id)
        # prompts are evaluated on a grid of GRID-token cells, so a reply does not depend on what the context held
        # before, or on how far a read-ahead got (None: where the held prefix ends, llama-cpp-python's own way)
        self.grid: int | None = GRID
        self.canonical: dict[int, int] = {}  # per context (id): how far its cells evaluated whole reach
        self.primed_tokens = self.prime(system) if system else 0

    def prime(self, system: str) -> int:
        """Evaluate the prompt prefix every turn with ``system`` shares (the chat template's system turn and
        the start of the user turn) and keep it in the context; returns the tokens now held. Done with one
        real chat completion of one token, so the prefix is tokenized exactly as the turns' prompts are; the
        next completion re-evaluates only from where its prompt differs."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": ""}]
        for llm in self.contexts:
            self._align(llm, messages)
            llm.create_chat_completion(messages=messages, max_tokens=1, seed=0, temperature=0.0)
        return int(self.llm.n_tokens)

    def _align(self, llm, messages: list[dict[str, str]]) -> None:
        """On a grid (:attr:`grid`): make ``llm``'s next completion of ``messages`` start at the cell its held
        prefix ends in (:func:`aligned_start`), and record how far its cells will then reach whole."""
        if self.grid is None:
            return
        prompt = prompt_tokens(llm, messages)
        held = common_prefix(llm.input_ids[:llm.n_tokens], prompt)
        llm.n_tokens = min(llm.n_tokens, aligned_start(held, self.canonical.get(id(llm), 0), len(prompt), self.grid))
        self.canonical[id(llm)] = len(prompt) - len(prompt) % self.grid

    def _free(self) -> list:
        return [c for c in self.contexts if id(c) not in self._reserved]

    def select(self, messages: list[dict[str, str]]):
        """Make the free context that holds the most of this turn's prompt the one asked (``self.llm``)."""
        free = self._free()
        if len(free) > 1:
            prompt = prompt_tokens(self.llm, messages)
            self.llm = max(free, key=lambda c: common_prefix(c.input_ids[:c.n_tokens], prompt))
        elif free:
            self.llm = free[0]
        return self.llm

    def completion_kwargs(self, messages: list[dict[str, str]], sampling: Sampling) -> dict:
        """What one reply passes to ``create_chat_completion`` (benchmarks/local_llm.py streams the same);
        sets the turn's threads first."""
        if not self.spare.fixed:
            from distillery_assets.threads import set_llama_threads

            set_llama_threads(self.llm, self.spare.check()[0])
        self._align(self.llm, messages)
        processors = None
        if sampling.min_lines and self.end_ids:
            from llama_cpp import LogitsProcessorList

            processors = LogitsProcessorList([HoldEndOfTurn(self.llm.detokenize, self.end_ids, sampling.min_lines)])
        return dict(messages=messages, temperature=sampling.temperature, top_p=sampling.top_p,
                    repeat_penalty=sampling.repeat_penalty, max_tokens=sampling.max_tokens, stop=self.stops, seed=0,
                    logits_processor=processors)

    streams_text = True  # __call__ takes on_text (session.run_session reads the next prompt ahead with it)

    def __call__(self, messages: list[dict[str, str]], sampling: Sampling,
                 on_text: Callable[[str], None] | None = None) -> Reply:
        self.select(messages)
        kwargs = self.completion_kwargs(messages, sampling)
        if on_text is None:
            out = self.llm.create_chat_completion(**kwargs)
            choice = out["choices"][0]
            return Reply(text=choice["message"]["content"] or "", finish_reason=choice.get("finish_reason"))
        text, finish = "", None
        for chunk in self.llm.create_chat_completion(stream=True, **kwargs):
            choice = chunk["choices"][0]
            piece = choice["delta"].get("content") or ""
            if piece:
                text += piece
                on_text(text)
            finish = choice.get("finish_reason") or finish
        return Reply(text=text, finish_reason=finish)

    def read_ahead(self, system: str, user_prefix: Callable[[str], str], *,
                   beside: list[dict[str, str]] | None = None, priority: int = 0) -> ReadAhead | None:
        """Start evaluating this model's next prompt (``system``, then ``user_prefix(text so far)``) in a free
        context while the text is written (:class:`ReadAhead`); None when no context is free. ``beside``: this
        model writes that text itself, from these messages, so the context best for them is kept for it and
        the read-ahead needs a second one (``contexts: 2``). ``priority``: see :class:`_Gate`."""
        if not self.core_free():
            return None
        free = self._free()
        if beside is not None:
            writer = self.select(beside)
            free = [c for c in free if c is not writer]
        if not free:
            return None
        start = prompt_tokens(self.llm, [{"role": "system", "content": system},
                                         {"role": "user", "content": user_prefix("")}])
        llm = max(free, key=lambda c: common_prefix(c.input_ids[:c.n_tokens], start))
        self._reserved.add(id(llm))
        return ReadAhead(llm, system, user_prefix, release=lambda: self._reserved.discard(id(llm)), priority=priority,
                         grid=self.grid, cells=self.canonical)

    def core_free(self) -> bool:
        """Whether a read-ahead would have a core to itself: with the thread policy's spare cores, when the rest
        of the machine leaves one free (on two cores beside a busy process, reading ahead slowed the writer's
        decode from ~78 to ~35 tokens/s and the whole session by a third: benchmarks/tutor.py); with fixed
        thread counts, on any machine of more than one core."""
        if self.spare.fixed:
            return self.spare.cores > 1
        return self.spare.check(now_if_unmeasured=True)[0] > 1  # a session's first turn comes right after load

    def close(self) -> None:
        for llm in self.contexts:
            llm.close()
