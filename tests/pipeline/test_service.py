"""The generation service in-process: the scripted engine for the logic (fit, admission, usage, drivers,
cancellation), the real embedded model for what preparation produces."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from llmhost.conversation.template import ChatTemplate
from llmhost.errors import ContextLengthExceeded, InvalidRequest, QueueFull
from llmhost.pipeline import (
    ChatInput,
    Fit,
    GenerationRequest,
    GenerationService,
    PreparedPrompt,
    TextInput,
    TokenInput,
)
from llmhost.pipeline.admission import Admission
from llmhost.pipeline.prompts import INLINE_MAX_CHARS
from llmhost.server.metrics import ServerMetrics
from llmhost.types import Delta, FinishReason, SamplingParams, Usage
from tests.scripted_engine import CHATML, Script, ScriptedEngine


def service_for(
    engine, *, capacity: int = 8, queued: int | None = 0, max_messages: int = 64
) -> GenerationService:
    info = engine.info()
    template = ChatTemplate.for_engine(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
    return GenerationService(
        engine,
        lambda: template,
        Admission(capacity, queued),
        ServerMetrics("test", engine.stats),
        max_messages=max_messages,
        timeout_s=None,
    )


async def scripted(**kwargs) -> tuple[ScriptedEngine, GenerationService]:
    engine = ScriptedEngine(**kwargs)
    await engine.start()
    return engine, service_for(engine)


def user(text: str) -> ChatInput:
    return ChatInput([{"role": "user", "content": text}])


async def test_one_chat_is_rendered_with_the_template_and_generated():
    engine, service = await scripted()
    engine.queue(["Hel", "lo"])
    generation = await service.start(GenerationRequest([user("hi")], [[SamplingParams(max_tokens=5)]]))
    [result] = await generation.collect()
    assert result.text == "Hello" and result.finish_reason == FinishReason.STOP
    assert engine.calls[0].prompt_text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert generation.prompt.text == engine.calls[0].prompt_text
    usage = generation.usage(prompt_per_sequence=False)
    assert usage == Usage(len(generation.prompt), 2)


async def test_prompt_tokens_are_counted_once_per_prompt_or_once_per_sequence():
    engine, service = await scripted()
    n = 3
    generation = await service.start(GenerationRequest([user("hi")], [[SamplingParams(max_tokens=4)] * n]))
    await generation.collect()
    num_prompt = len(generation.prompt)
    assert (
        generation.usage(prompt_per_sequence=False).prompt_tokens == num_prompt
    )  # chat: n choices, one prompt
    assert generation.usage(prompt_per_sequence=True).prompt_tokens == n * num_prompt  # completions
    assert generation.usage(prompt_per_sequence=True).completion_tokens == n  # "ok" is one piece each


async def test_the_prompt_and_max_tokens_must_fit_and_nothing_starts_otherwise():
    engine, service = await scripted(max_model_len=64)
    with pytest.raises(ContextLengthExceeded, match="maximum context length is 64 tokens") as caught:
        await service.start(GenerationRequest([user("x" * 40)], [[SamplingParams(max_tokens=30)]]))
    assert "for the completion" in caught.value.message and caught.value.param == "messages"
    assert not engine.calls and service.admission.num_in_flight == 0


async def test_a_batch_error_names_every_failing_index_as_the_client_numbered_them():
    engine, service = await scripted(max_model_len=64)
    prompts = [user("short"), user("x" * 80), user("y" * 90)]
    request = GenerationRequest(
        prompts,
        [[SamplingParams(max_tokens=4)]] * 3,
        param="items",
        batch_noun="item",
        batch_indices=[2, 5, 7],
    )
    with pytest.raises(ContextLengthExceeded) as caught:
        await service.start(request)
    message = caught.value.message
    assert "item(s) 5 (" in message and ", 7 (" in message and " 2 (" not in message
    assert caught.value.param == "items" and not engine.calls


async def test_clamp_cuts_max_tokens_to_the_room_left_and_refuses_only_a_prompt_without_room():
    engine, service = await scripted(max_model_len=128)
    short, long_ = user("a"), user("b" * 60)
    generation = await service.start(
        GenerationRequest([short, long_], [[SamplingParams(max_tokens=40)]] * 2, fit=Fit.CLAMP)
    )
    await generation.collect()
    rooms = [128 - len(p) for p in generation.prompts]
    assert [c.params.max_tokens for c in engine.calls] == [min(40, r) for r in rooms]
    assert engine.calls[1].params.max_tokens < 40
    with pytest.raises(ContextLengthExceeded):
        await service.start(
            GenerationRequest(
                [user("c" * 80)], [[SamplingParams(max_tokens=1)]], fit=Fit.CLAMP, batch_noun="prompt"
            )
        )


async def test_admission_is_all_or_nothing():
    engine, service = await scripted()
    service.admission.capacity = 3
    first = await service.start(GenerationRequest([user("a")], [[SamplingParams(max_tokens=2)]] * 1))
    with pytest.raises(QueueFull):
        await service.start(GenerationRequest([user("b")], [[SamplingParams(max_tokens=2)] * 3]))
    assert len(engine.calls) == 1 and service.admission.num_in_flight == 1
    await first.collect()
    assert service.admission.num_in_flight == 0


async def test_leaving_the_deltas_early_closes_every_sequence_and_frees_admission():
    engine, service = await scripted(piece_delay_s=0.01)
    engine.default = Script(["x"] * 50)
    generation = await service.start(GenerationRequest([user("a")], [[SamplingParams()] * 4]))
    seen = 0
    async for _index, _delta in generation.deltas():
        seen += 1
        if seen == 3:
            break
    await generation.aclose()
    await asyncio.sleep(0.05)
    assert service.admission.num_in_flight == 0 and engine.stats().num_running == 0


async def test_a_driver_runs_each_sequence_and_holds_its_slot_until_it_ends():
    engine, service = await scripted()
    started: list[tuple[int, str]] = []
    release = asyncio.Event()

    async def drive(prompt: PreparedPrompt, params: SamplingParams, sequence_id: str) -> AsyncIterator[Delta]:
        started.append((len(prompt), sequence_id))
        yield Delta(text="turn 1 ", token_ids=[1])
        await release.wait()
        yield Delta(
            text="done", token_ids=[2, 3], finish_reason=FinishReason.STOP, usage=Usage(len(prompt), 3)
        )

    generation = await service.start(
        GenerationRequest(
            [user("a")], [[SamplingParams()] * 2], fit=Fit.PROMPT, request_id="rq", driver=drive
        )
    )
    task = asyncio.create_task(generation.collect())
    await asyncio.sleep(0.01)
    assert service.admission.num_in_flight == 2  # held across the driver's turns
    release.set()
    results = await task
    assert [r.text for r in results] == ["turn 1 done"] * 2
    assert sorted(s for _, s in started) == ["rq-0", "rq-1"] and not engine.calls
    assert service.admission.num_in_flight == 0
    assert generation.usage(prompt_per_sequence=False).completion_tokens == 6  # the driver's own count


async def test_too_many_messages_are_refused_before_rendering():
    engine, service = await scripted()
    chat = ChatInput([{"role": "user", "content": "hi"}] * 65)
    with pytest.raises(InvalidRequest, match="--max-messages") as caught:
        await service.start(GenerationRequest([chat], [[SamplingParams()]]))
    assert caught.value.param == "messages" and not engine.calls


# -- the real embedded model ------------------------------------------------------------------------
async def test_real_chat_prompt_is_the_template_and_the_tokenizer(engine):
    service = service_for(engine)
    info = engine.info()
    template = ChatTemplate.for_engine(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
    messages = [{"role": "user", "content": "What is 2+2?"}]
    generation = await service.start(
        GenerationRequest([ChatInput(messages)], [[SamplingParams(max_tokens=4, temperature=0.0)]])
    )
    [result] = await generation.collect()
    text = template.render(messages, add_generation_prompt=True)
    assert generation.prompt.text == text and generation.prompt.token_ids == engine.tokenize(text)
    assert result.usage is not None and result.usage.completion_tokens == len(result.token_ids)


async def test_real_large_inputs_are_prepared_off_the_event_loop_with_the_same_tokens(engine):
    service = service_for(engine, max_messages=4096)
    long_text = "The quick brown fox jumps over the lazy dog. " * (INLINE_MAX_CHARS // 40)
    [small], [large] = [
        await service._preparer.prepare([TextInput(t)], param="prompt") for t in ("Hello there", long_text)
    ]
    assert small.token_ids == engine.tokenize("Hello there", add_special=True)
    assert large.token_ids == engine.tokenize(long_text, add_special=True)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticker = asyncio.create_task(tick())
    many = ChatInput([{"role": "user", "content": f"message {i}"} for i in range(2000)])
    [prepared] = await service._preparer.prepare([many], param="messages")
    ticker.cancel()
    assert len(prepared) > 2000 * 3
    assert ticks > 0  # the loop kept running while 2,000 messages were rendered and tokenized


async def test_real_text_that_cannot_fit_is_refused_without_tokenizing(engine):
    service = service_for(engine)
    info = engine.info()
    assert info.max_token_bytes is not None and info.max_token_bytes >= len("<|im_start|>")
    text = "a" * (info.max_model_len * info.max_token_bytes + 1)
    with pytest.raises(ContextLengthExceeded, match="at least"):
        await service.start(
            GenerationRequest([TextInput(text)], [[SamplingParams(max_tokens=1)]], param="prompt")
        )


async def test_real_token_ids_outside_the_vocabulary_are_a_400(engine):
    service = service_for(engine)
    with pytest.raises(InvalidRequest, match="outside the vocabulary"):
        await service.start(GenerationRequest([TokenInput([1, 10**9])], [[SamplingParams(max_tokens=1)]]))


async def test_prefill_closes_an_open_think_block_first():
    engine, service = await scripted(
        chat_template=CHATML + "{% if add_generation_prompt %}<think>\n{% endif %}"
    )
    chat = ChatInput([{"role": "user", "content": "q"}], prefill="<tool_call>")
    generation = await service.start(GenerationRequest([chat], [[SamplingParams(max_tokens=2)]]))
    await generation.collect()
    assert generation.prompt.opens_thinking
    assert engine.calls[0].prompt_text.endswith("<think>\n</think>\n\n<tool_call>")
    assert not generation.prompt.text.endswith("<tool_call>")  # the rendered conversation alone
