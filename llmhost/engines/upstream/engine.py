"""Any OpenAI-compatible server as an llmhost engine.

llmhost renders and tokenizes the prompt itself (so templates, thinking, tool calls and the code loop
behave the same on every engine), checks it against the context, and streams it to one backend's
`/v1/completions`: token ids where the server takes them, otherwise the prompt text with special tokens
written out. Backends are attached URLs or supervised child servers; with several (replicas) each
request goes to the live one with the fewest requests in flight. Closing a stream closes its HTTP
response, which makes the server abort the sequence.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from llmhost.client.sse import aiter_sse_data, is_done
from llmhost.engines.base import EngineListener
from llmhost.engines.threaded import check_prompt
from llmhost.errors import (
    EngineError,
    InvalidRequest,
    ModelNotLoaded,
    QueueFull,
)
from llmhost.models.source import ModelSource
from llmhost.types import Delta, EngineInfo, EngineStats, FinishReason, SamplingParams, Usage

from .backends import AttachedBackend, Backend
from .router import Router
from .tokenizer import LocalTokenizer, load_tokenizer
from .wire import (
    DIALECTS,
    completion_body,
    finish_reason,
    parse_logprobs,
    parse_prompt_logprobs,
    parse_usage,
    scoring_body,
)

log = logging.getLogger("llmhost.upstream")


class UpstreamEngine:
    def __init__(
        self,
        source: ModelSource,
        backends: Sequence[Backend],
        *,
        engine_name: str,
        model_name: str,
        upstream_model: str | None,
        prompt_as_tokens: bool,
        max_model_len: int | None,
        max_num_seqs: int,
        device: str = "upstream",
        api_key: str | None = None,
        dialect: str = "generic",
    ) -> None:
        self.name = engine_name
        self._source = source
        self._backends = list(backends)
        self._model_name = model_name
        self._upstream_model = upstream_model
        self._prompt_as_tokens = prompt_as_tokens
        self._requested_max_model_len = max_model_len
        self._max_num_seqs = max_num_seqs
        self._device = device
        self._dialect = DIALECTS[dialect]
        # The key only ever goes into this client's headers: never logged, never in a child's env.
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._router = Router(self._backends)
        # httpx logs every request at INFO: one line per generated sequence is noise in a server log.
        if logging.getLogger("httpx").level == logging.NOTSET:
            logging.getLogger("httpx").setLevel(logging.WARNING)
        self._tokenizer: LocalTokenizer | None = None
        self._client: httpx.AsyncClient | None = None
        self._info: EngineInfo | None = None
        self._listener: EngineListener | None = None
        self._was_down = False
        for b in self._backends:
            b.listeners.append(self._on_backend_event)

    # -- lifecycle ---------------------------------------------------------------------------------
    def attach_listener(self, listener: EngineListener) -> None:
        self._listener = listener

    @property
    def max_concurrency(self) -> int:
        """Sequences llmhost lets run at once: --max-num-seqs on every backend (replica); also
        `info().max_num_seqs` once started."""
        return self._max_num_seqs

    @property
    def backends(self) -> list[Backend]:
        return list(self._backends)

    @property
    def router(self) -> Router:
        return self._router

    async def start(self) -> None:
        if self._info is not None:
            return
        if self._tokenizer is None:
            self._tokenizer = await asyncio.to_thread(load_tokenizer, self._source)
        try:
            await asyncio.gather(*(b.start() for b in self._backends))
        except BaseException:
            await asyncio.gather(*(b.close() for b in self._backends), return_exceptions=True)
            raise
        # No pool limit: admission control above already bounds the sequences in flight.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=None),
            headers=self._headers,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self._info = self._make_info()
        log.info(
            "upstream engine %s ready: %d backend(s) %s, prompts as %s, max_model_len=%d",
            self.name,
            len(self._backends),
            ", ".join(str(b.base_url) for b in self._backends),
            "token ids" if self._prompt_as_tokens else "text",
            self._info.max_model_len,
        )

    def _make_info(self) -> EngineInfo:
        assert self._tokenizer is not None
        vocab = self._tokenizer.info
        limits = [self._requested_max_model_len, vocab.context_length]
        for b in self._backends:
            spec = getattr(b, "spec", None)  # a supervisor may have lowered it (memory retry)
            limits.append(getattr(spec, "max_model_len", None))
            for m in getattr(b, "models", []):
                if self._upstream_model is None and isinstance(m.get("id"), str):
                    self._upstream_model = m["id"]
                limits.append(m.get("max_model_len") if isinstance(m.get("max_model_len"), int) else None)
        known = [v for v in limits if v]
        reported = any(
            isinstance(m.get("max_model_len"), int) for b in self._backends for m in getattr(b, "models", [])
        )
        if (
            self._requested_max_model_len is None
            and any(isinstance(b, AttachedBackend) for b in self._backends)
            and not reported
        ):
            log.warning(
                "the upstream does not report its context length; assuming the model's (%s). Set "
                "--max-model-len to the server's own (llama_cpp.server: its --n_ctx) so too-long prompts "
                "get a clear 400 here",
                vocab.context_length,
            )
        return EngineInfo(
            engine=self.name,
            model_path=str(self._source.path),
            model_name=self._model_name,
            max_model_len=min(known) if known else 4096,
            max_num_seqs=self._max_num_seqs,
            device=self._device,
            model_size_bytes=vocab.size_bytes,
            vocab_size=vocab.vocab_size,
            chat_template=vocab.chat_template,
            bos_token=vocab.bos_token,
            eos_token=vocab.eos_token,
            supports_grammar=self._dialect.grammar is not None,
            supports_prompt_logprobs=self._dialect.has_prompt_logprobs,
        )

    async def close(self) -> None:
        self._info = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        await asyncio.gather(*(b.close() for b in self._backends), return_exceptions=True)

    def _on_backend_event(self, event: str, backend: Backend) -> None:
        listener = self._listener
        if event == "restarted" and listener is not None:
            listener.engine_restarted(backend.label)
        all_down = all(b.base_url is None for b in self._backends)
        if all_down and not self._was_down:
            self._was_down = True
            reasons = "; ".join(b.down_reason or "down" for b in self._backends)
            if listener is not None:
                listener.engine_down(reasons)
        elif not all_down and self._was_down:
            self._was_down = False
            if listener is not None:
                listener.engine_up()

    # -- protocol ----------------------------------------------------------------------------------
    def info(self) -> EngineInfo:
        if self._info is None:
            raise ModelNotLoaded("the model is not loaded yet")
        return self._info

    def stats(self) -> EngineStats:
        running = sum(b.in_flight for b in self._backends)
        return EngineStats(
            num_running=running,
            num_waiting=0,
            kv_cache_usage=0.0,  # the upstream's own /metrics knows; not mirrored here
            num_steps=0,
            last_step_num_seqs=0,
        )

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return self._require_tokenizer().tokenize(text, add_special=add_special)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self._require_tokenizer().detokenize(token_ids)

    def _require_tokenizer(self) -> LocalTokenizer:
        if self._tokenizer is None:
            raise ModelNotLoaded("the model is not loaded yet")
        return self._tokenizer

    def generate(
        self, prompt_tokens: Sequence[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[Delta]:
        info = self.info()
        prompt, room = check_prompt(prompt_tokens, params, info)  # 4xx here, before any request is sent
        backend = self._router.pick(request_id)
        if backend is None:
            reasons = "; ".join(b.down_reason or "down" for b in self._backends)
            raise ModelNotLoaded(f"no engine server is up ({reasons})")
        tok = self._require_tokenizer()
        wire_prompt: str | list[int] = prompt if self._prompt_as_tokens else tok.prompt_text(prompt)
        model = self._upstream_model or self._model_name
        max_tokens = room if params.max_tokens is None else params.max_tokens
        body = completion_body(model, wire_prompt, params, max_tokens, self._dialect)
        if params.prompt_logprobs is not None:
            if not self._dialect.has_prompt_logprobs:  # the pipeline refuses it first (EngineInfo)
                raise InvalidRequest("this engine cannot return 'prompt_logprobs'", param="prompt_logprobs")
            return self._score(backend, scoring_body(body, params.prompt_logprobs), prompt, params)
        return self._stream(backend, body, len(prompt), params)

    async def _score(
        self, backend: Backend, body: dict[str, Any], prompt: list[int], params: SamplingParams
    ) -> AsyncIterator[Delta]:
        """One non-streamed request that also returns the prompt's log-probabilities (vLLM streams no
        `prompt_logprobs`): the whole answer comes back as one delta, the scores on it."""
        client, url = self._client, backend.base_url
        if client is None or url is None:
            raise ModelNotLoaded(backend.down_reason or "the engine is not running")
        backend.in_flight += 1
        try:
            resp = await client.post(url + "/v1/completions", json=body)
            if resp.status_code != 200:
                raise _http_error(resp)
            answer = resp.json()
            choice = (answer.get("choices") or [None])[0]
            if not isinstance(choice, dict):
                raise EngineError(f"{backend.label} answered without a choice")
        except httpx.TransportError as exc:
            reason = backend.down_reason or f"{type(exc).__name__}: {exc}"
            raise ModelNotLoaded(f"{backend.label} went away during the request ({reason})") from None
        except ValueError as exc:
            raise EngineError(f"{backend.label} sent an unreadable answer: {exc}") from None
        finally:
            backend.in_flight -= 1
        scores = parse_prompt_logprobs(choice.get("prompt_logprobs"), prompt, params.prompt_logprobs or 0)
        if params.max_tokens == 0:  # the server generated one token it had to; the caller wanted none
            delta = Delta(finish_reason=FinishReason.LENGTH, usage=Usage(len(prompt), 0))
        else:
            delta = self._delta(choice, params)
            delta.finish_reason = delta.finish_reason or FinishReason.STOP
            delta.usage = parse_usage(len(prompt), answer.get("usage"), len(delta.token_ids))
        delta.prompt_logprobs = scores
        yield delta

    async def _stream(
        self, backend: Backend, body: dict[str, Any], num_prompt: int, params: SamplingParams
    ) -> AsyncIterator[Delta]:
        client, url = self._client, backend.base_url
        if client is None or url is None:
            raise ModelNotLoaded(backend.down_reason or "the engine is not running")
        backend.in_flight += 1
        num_completion = 0
        final: Delta | None = None
        try:
            async with client.stream("POST", url + "/v1/completions", json=body) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise _http_error(resp)
                async for data in aiter_sse_data(resp):
                    if is_done(data):
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise EngineError(f"{backend.label}: {_error_message(chunk)}")
                    usage = chunk.get("usage")
                    if final is not None:
                        if isinstance(usage, dict):
                            final.usage = parse_usage(num_prompt, usage, num_completion)
                        continue
                    for choice in chunk.get("choices") or []:
                        delta = self._delta(choice, params)
                        num_completion += len(delta.token_ids)
                        if delta.finish_reason is not None:
                            delta.usage = parse_usage(num_prompt, usage, num_completion)
                            final = delta  # held until [DONE]: a usage chunk may still come
                        elif delta.text or delta.token_ids:
                            yield delta
        except httpx.TransportError as exc:
            reason = backend.down_reason or f"{type(exc).__name__}: {exc}"
            raise ModelNotLoaded(f"{backend.label} went away during the request ({reason})") from None
        except ValueError as exc:  # JSON that is not, or an answer that is not an event stream
            raise EngineError(f"{backend.label} sent an unreadable stream: {exc}") from None
        finally:
            backend.in_flight -= 1
        if final is None:
            raise ModelNotLoaded(
                f"{backend.label} ended the stream without finishing the sequence "
                f"({backend.down_reason or 'it may have restarted'})"
            )
        yield final

    def _delta(self, choice: dict[str, Any], params: SamplingParams) -> Delta:
        tok = self._require_tokenizer()
        text = choice.get("text") or ""
        ids = choice.get("token_ids")
        token_ids = [int(t) for t in ids] if isinstance(ids, list) else (tok.tokenize(text) if text else [])
        logprobs = None
        if params.logprobs is not None:
            logprobs = parse_logprobs(choice.get("logprobs"), params.logprobs, self._token_id)
        reason = finish_reason(choice.get("finish_reason"))
        stop_reason = choice.get("stop_reason")
        return Delta(
            text=text,
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason=reason,
            stop_reason=stop_reason if isinstance(stop_reason, str | int) else None,
        )

    def _token_id(self, token: str) -> int:
        if token.startswith("token_id:"):
            return int(token[9:])
        ids = self._require_tokenizer().tokenize(token)
        return ids[0] if len(ids) == 1 else -1


def _error_message(payload: Any) -> str:
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)
    if isinstance(payload, dict) and "detail" in payload:
        return str(payload["detail"])
    return str(err or payload)


def _http_error(resp: httpx.Response) -> Exception:
    try:
        message = _error_message(resp.json())
    except ValueError:
        message = resp.text[:500]
    status = resp.status_code
    where = f"the engine server answered {status}: {message}"
    if status in (400, 413, 422):
        return InvalidRequest(where)
    if status == 429:
        return QueueFull(where)
    if status == 503:
        return ModelNotLoaded(where)
    return EngineError(where)


def default_log_dir() -> Path:
    """Where supervised servers log without --engine-log-dir (created when the first one starts)."""
    import os
    import tempfile

    return Path(tempfile.gettempdir()) / f"llmhost-engines-{os.getpid()}"
