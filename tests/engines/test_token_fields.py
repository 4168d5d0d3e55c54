"""`logit_bias` and `min_tokens` in the engines that sample themselves, the llama.cpp and transformers
engines, on the real embedded model: a banned greedy token never comes, a +100 bias forces its token,
and an answer that would end at once runs to at least `min_tokens` tokens."""

from __future__ import annotations

import pytest

from llmhost.conversation.template import ChatTemplate
from llmhost.errors import InvalidRequest
from llmhost.types import FinishReason, SamplingParams

PROMPT = "The capital of France is"


@pytest.fixture(params=["llama.cpp", "transformers"])
def any_engine(request):
    if request.param == "transformers":
        pytest.importorskip("torch")
        pytest.importorskip("transformers")
        pytest.importorskip("gguf")
        return request.getfixturevalue("hf_engine")
    return request.getfixturevalue("engine")


@pytest.fixture(scope="module")
async def hf_engine(model_path):
    from llmhost.engines.transformers.engine import TransformersEngine

    eng = TransformersEngine(
        model_path,
        model_format="gguf",
        model_name="smol",
        max_model_len=512,
        max_num_seqs=4,
        dtype="float32",
        gpu="none",
    )
    await eng.start()
    yield eng
    await eng.close()


async def generate(engine, prompt: str, **params) -> tuple[list[int], object]:
    """The generated token ids and the last delta (its usage and finish reason)."""
    ids, last = [], None
    async for delta in engine.generate(engine.tokenize(prompt), SamplingParams(**params)):
        ids += delta.token_ids
        last = delta
    return ids, last


def answered(engine) -> str:
    """A chat prompt whose assistant turn is already complete: the model ends it at once."""
    info = engine.info()
    template = ChatTemplate(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
    asked = template.render([{"role": "user", "content": "Say hello."}], add_generation_prompt=True)
    return asked + "Hello! How can I help you today?"


async def test_a_banned_greedy_token_never_comes(any_engine):
    greedy, _ = await generate(any_engine, PROMPT, temperature=0.0, max_tokens=12)
    banned = greedy[0]
    ids, last = await generate(
        any_engine, PROMPT, temperature=0.0, max_tokens=12, logit_bias=((banned, -100.0),)
    )
    assert ids != greedy and banned not in ids
    assert last.usage.completion_tokens == len(ids)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
async def test_a_plus_100_bias_forces_its_token(any_engine, temperature):
    forced = any_engine.tokenize(" banana")[0]
    ids, last = await generate(
        any_engine, PROMPT, temperature=temperature, seed=7, max_tokens=6, logit_bias=((forced, 100.0),)
    )
    assert ids == [forced] * 6 and last.finish_reason == FinishReason.LENGTH


async def test_min_tokens_holds_off_an_immediate_end(any_engine):
    prompt = answered(any_engine)
    ends, last = await generate(any_engine, prompt, temperature=0.0, max_tokens=32)
    assert len(ends) == 1 and last.finish_reason == FinishReason.STOP  # the model ends at once
    eog = ends[0]
    ids, last = await generate(any_engine, prompt, temperature=0.0, max_tokens=32, min_tokens=6)
    assert last.usage.completion_tokens >= 6 and eog not in ids[:6]
    # With the end-of-generation token pushed up, it comes the moment it is allowed.
    ids, last = await generate(
        any_engine, prompt, temperature=0.0, max_tokens=32, min_tokens=4, logit_bias=((eog, 100.0),)
    )
    assert len(ids) == 5 and ids[-1] == eog and last.usage.completion_tokens == 5
    assert last.finish_reason == FinishReason.STOP


async def test_min_tokens_holds_off_stop_token_ids_too(any_engine):
    stop = any_engine.tokenize(" banana")[0]
    ids, last = await generate(
        any_engine,
        PROMPT,
        temperature=1.0,
        seed=3,
        max_tokens=16,
        min_tokens=3,
        stop_token_ids=(stop,),
        logit_bias=((stop, 100.0),),
    )
    assert ids[3] == stop and stop not in ids[:3] and len(ids) == 4 and last.stop_reason == stop


async def test_bias_on_a_token_outside_the_vocabulary_is_refused(any_engine):
    vocab_size = any_engine.info().vocab_size
    with pytest.raises(InvalidRequest) as err:
        any_engine.generate(any_engine.tokenize(PROMPT), SamplingParams(logit_bias=((vocab_size, 1.0),)))
    assert err.value.param == "logit_bias" and str(vocab_size) in err.value.message
