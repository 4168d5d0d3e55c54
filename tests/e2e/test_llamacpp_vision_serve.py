"""Images end to end on the default engine: `llmhost serve --model FOLDER` on the tiny Qwen2.5-VL as a
GGUF with its mmproj beside it (tests/models/vision_gguf.py; llama.cpp through libmtmd), through the
official `openai` SDK's chat completions and Responses API."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llama_cpp.mtmd_cpp")

from ..conftest import RunningServer, start_server, stop_server  # noqa: E402
from . import test_vision_serve as transformers_tests  # noqa: E402
from .test_vision_serve import ASK, answer, data_url, image_part, png, served_with_limits, user  # noqa: E402

# The transformers module's fixtures and engine-agnostic tests, run against this module's `vl_server`
# (its `client` fixture resolves to it): images read and counted, streamed as whole, concurrent images
# as each alone, a file as its data URL, every bad image a 400 naming the part, the Anthropic and
# simple faces.
client = transformers_tests.client
media_dir = transformers_tests.media_dir
test_a_data_url_image_is_read_and_changes_the_answer = (
    transformers_tests.test_a_data_url_image_is_read_and_changes_the_answer
)
test_streamed_equals_whole = transformers_tests.test_streamed_equals_whole
test_two_images_at_once_answer_as_each_alone = transformers_tests.test_two_images_at_once_answer_as_each_alone
test_a_file_under_the_allowed_folder_reads_as_its_data_url = (
    transformers_tests.test_a_file_under_the_allowed_folder_reads_as_its_data_url
)
test_bad_images_are_400s_naming_the_part = transformers_tests.test_bad_images_are_400s_naming_the_part
test_an_image_in_an_assistant_message_is_refused = (
    transformers_tests.test_an_image_in_an_assistant_message_is_refused
)
test_the_anthropic_and_simple_faces_take_images_too = (
    transformers_tests.test_the_anthropic_and_simple_faces_take_images_too
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def vl_server(tmp_path_factory, vision_gguf_dir: Path, media_dir: Path):
    srv = start_server(
        tmp_path_factory.mktemp("vision-gguf"),
        "--model",
        str(vision_gguf_dir),  # the model and its projector, found beside it
        "--threads",
        "1",
        "--max-model-len",
        "1024",
        *served_with_limits(media_dir),
        timeout_s=300,
    )
    yield srv
    stop_server(srv)


def test_the_default_engine_says_it_takes_images(vl_server: RunningServer):
    [card] = httpx.get(f"{vl_server.url}/v1/models").json()["data"]
    assert card["input_modalities"] == ["text", "image"]
    info = httpx.get(f"{vl_server.url}/api/v1/model/info").json()
    assert info["accepts_images"] is True and info["engine"] == "llama.cpp"


def test_a_repeated_image_is_served_from_the_prefix_cache(client):
    """Keyed by the picture: the same one reuses its cells, another only the text before it."""
    first = answer(client, user(image_part(data_url(png(7)))))
    again = answer(client, user(image_part(data_url(png(7)))))
    other = answer(client, user(image_part(data_url(png(8)))))
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage.prompt_tokens_details.cached_tokens > 20  # the image's 20 tokens and what precedes
    assert other.usage.prompt_tokens_details.cached_tokens < first.usage.prompt_tokens - 20


def test_a_picture_too_narrow_for_the_model_is_a_400(vl_server: RunningServer, client):
    messages = user(image_part(data_url(png(3, (2100, 10)))))
    r = httpx.post(f"{vl_server.url}/v1/chat/completions", json={"model": "tiny-vl", "messages": messages})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "messages[0].content[0]" and "aspect ratio" in error["message"]
    assert answer(client, [{"role": "user", "content": ASK}], max_tokens=2).choices[0].message.content


def test_the_responses_api_takes_input_images(client):
    """The same picture and question as a chat message: the same prompt, the same greedy answer; a next
    turn by previous_response_id reads the first turn's image again (and finds it cached)."""
    expected = answer(client, user(image_part(data_url(png(6))))).choices[0].message.content
    image = {"type": "input_image", "image_url": data_url(png(6)), "detail": "auto"}
    first = client.responses.create(
        model="tiny-vl",
        input=[{"role": "user", "content": [image, {"type": "input_text", "text": ASK}]}],
        max_output_tokens=12,
        temperature=0,
    )
    assert first.status in ("completed", "incomplete") and first.output_text == expected
    second = client.responses.create(
        model="tiny-vl",
        input="And its colours?",
        previous_response_id=first.id,
        max_output_tokens=4,
        temperature=0,
    )
    assert second.usage.input_tokens > first.usage.input_tokens
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 1
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model="tiny-vl",
            input=[{"role": "user", "content": [{"type": "input_image", "image_url": "data:,x"}]}],
        )
    assert refused.value.body["param"] == "input[0].content[0]"
