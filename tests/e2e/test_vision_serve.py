"""Images end to end: `llmhost serve --engine transformers` on the tiny Qwen2.5-VL
(tests/models/vision_model.py), through the official `openai` and `anthropic` SDKs and the simple API;
every bad image a 400 naming the part; the text-only default engine refusing images; and seed 000's
chain, a broken vision model falling back to its text model."""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
from pathlib import Path

import anthropic
import httpx
import numpy as np
import openai
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from ..conftest import RunningServer, start_server, stop_server  # noqa: E402

pytestmark = pytest.mark.e2e

ENGINE = ["--engine", "transformers", "--gpu", "none", "--dtype", "float32", "--threads", "1"]
ASK = "What is in this picture?"


def png(seed: int, size: tuple[int, int] = (150, 100)) -> bytes:
    """A noisy picture (a flat one gives every patch the same features), the same for the same seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def user(*parts: dict, text: str = ASK) -> list[dict]:
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    (folder / "cat.png").write_bytes(png(1))
    return folder


def served_with_limits(media_dir: Path) -> list[str]:
    """The name, batch and image limits the bad-image tests expect (tests/e2e/test_llamacpp_vision_serve.py
    serves with them too)."""
    return [
        *("--max-num-seqs", "4", "--served-model-name", "tiny-vl"),
        *("--allowed-local-media-path", str(media_dir), "--max-images-per-prompt", "2"),
        *("--max-image-mb", "0.25", "--max-image-pixels", "1000000"),
    ]


@pytest.fixture(scope="module")
def vl_server(tmp_path_factory, vision_model_path: Path, media_dir: Path):
    srv = start_server(
        tmp_path_factory.mktemp("vision"),
        "--model",
        str(vision_model_path),
        *ENGINE,
        "--max-model-len",
        "1024",
        *served_with_limits(media_dir),
        timeout_s=300,
    )
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def client(vl_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{vl_server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def answer(client: openai.OpenAI, messages: list[dict], **kwargs) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(
        model="tiny-vl", messages=messages, **{"max_tokens": 12, "temperature": 0, **kwargs}
    )


def test_the_server_says_it_takes_images(vl_server):
    [card] = httpx.get(f"{vl_server.url}/v1/models").json()["data"]
    assert card["input_modalities"] == ["text", "image"]
    info = httpx.get(f"{vl_server.url}/api/v1/model/info").json()
    assert info["accepts_images"] is True and info["engine"] == "transformers"


def test_a_data_url_image_is_read_and_changes_the_answer(client):
    cat = answer(client, user(image_part(data_url(png(1)))))
    dog = answer(client, user(image_part(data_url(png(2)))))
    plain = answer(client, [{"role": "user", "content": ASK}])
    assert (
        len(
            {cat.choices[0].message.content, dog.choices[0].message.content, plain.choices[0].message.content}
        )
        == 3
    )
    # The image's tokens count in the prompt: 150x100 becomes 112x140 pixels, 4x5 tokens.
    assert cat.usage.prompt_tokens == dog.usage.prompt_tokens > plain.usage.prompt_tokens + 20
    again = answer(client, user(image_part(data_url(png(1)))))
    assert again.choices[0].message.content == cat.choices[0].message.content


def test_streamed_equals_whole(client):
    messages = user(image_part(data_url(png(3))))
    whole = answer(client, messages).choices[0].message.content
    chunks = answer(client, messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole


def test_two_images_at_once_answer_as_each_alone(vl_server, client):
    requests = [user(image_part(data_url(png(4)))), user(image_part(data_url(png(5, (90, 200)))))]
    alone = [answer(client, m, max_tokens=24).choices[0].message.content for m in requests]
    aclient = openai.AsyncOpenAI(base_url=f"{vl_server.url}/v1", api_key="unused", max_retries=0, timeout=120)

    async def both() -> list[str]:
        replies = await asyncio.gather(
            *(
                aclient.chat.completions.create(model="tiny-vl", messages=m, max_tokens=24, temperature=0)
                for m in requests
            )
        )
        return [r.choices[0].message.content for r in replies]

    assert asyncio.run(both()) == alone  # tests/engines/test_transformers_vision.py: one batch, step by step


def test_a_file_under_the_allowed_folder_reads_as_its_data_url(client, media_dir):
    by_file = answer(client, user(image_part((media_dir / "cat.png").as_uri())))
    inline = answer(client, user(image_part(data_url(png(1)))))
    assert by_file.choices[0].message.content == inline.choices[0].message.content


def _too_many_pixels() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1200, 1000), "white").save(out, format="PNG")  # a few KiB, 1.2 million pixels
    return out.getvalue()


def _too_many_bytes() -> bytes:
    data = png(9, (400, 400))  # noise does not compress: about 480 KB
    assert len(data) > 0.25 * 2**20
    return data


BAD = {
    "not an image": (user(image_part(data_url(b"%PDF-1.4 not a picture"))), "not a PNG, JPEG or WebP"),
    "too many bytes": (user(image_part(data_url(_too_many_bytes()))), "--max-image-mb"),
    "too many pixels": (user(image_part(data_url(_too_many_pixels()))), "--max-image-pixels"),
    "a path outside the folder": (user(image_part("file:///etc/hostname")), "outside the folder"),
    "a remote URL": (user(image_part("https://example.com/cat.png")), "--allow-remote-images"),
    "too many images": (
        user(*(image_part(data_url(png(i))) for i in range(3))),
        "--max-images-per-prompt",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_images_are_400s_naming_the_part(vl_server, case):
    messages, says = BAD[case]
    messages = [{"role": "system", "content": "You judge pictures."}, *messages]
    r = httpx.post(
        f"{vl_server.url}/v1/chat/completions", json={"model": "tiny-vl", "messages": messages}, timeout=60
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    expected_part = 2 if case == "too many images" else 0  # the first image over the limit
    assert error["param"] == f"messages[1].content[{expected_part}]", error
    assert says in error["message"] and error["type"] == "invalid_request_error"


def test_an_image_in_an_assistant_message_is_refused(vl_server):
    messages = [
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": [image_part(data_url(png(1)))]},
        {"role": "user", "content": ASK},
    ]
    r = httpx.post(f"{vl_server.url}/v1/chat/completions", json={"messages": messages}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[1].content[0]"


def test_the_anthropic_and_simple_faces_take_images_too(vl_server, client):
    expected = answer(client, user(image_part(data_url(png(1))))).choices[0].message.content
    sdk = anthropic.Anthropic(base_url=vl_server.url, api_key="unused", max_retries=0)
    image = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png(1)).decode()}
    message = sdk.messages.create(
        model="tiny-vl",
        max_tokens=12,
        messages=[
            {"role": "user", "content": [{"type": "image", "source": image}, {"type": "text", "text": ASK}]}
        ],
        extra_body={"temperature": 0},
    )
    assert message.content[0].text == expected
    simple = httpx.post(
        f"{vl_server.url}/api/v1/chat",
        json={"message": ASK, "images": [data_url(png(1))], "max_new_tokens": 12, "temperature": 0},
        timeout=60,
    ).json()
    assert simple == {"response": expected, "success": True, "error": None}
    bad = httpx.post(f"{vl_server.url}/api/v1/chat", json={"message": ASK, "images": ["data:,x"]}, timeout=60)
    assert bad.status_code == 400 and bad.json()["success"] is False and "images[0]" in bad.text


def test_the_text_only_default_engine_refuses_an_image(server):
    """The embedded SmolLM2 on llama.cpp: a 400 naming the part, never an answer that ignored it."""
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "smol", "messages": user(image_part(data_url(png(1))))},
        timeout=60,
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "messages[0].content[0]" and "cannot take images" in error["message"]
    [card] = [c for c in httpx.get(f"{server.url}/v1/models").json()["data"] if c["id"] == "smol"]
    assert card["input_modalities"] == ["text"]


def test_seed_000_chain_falls_back_from_a_broken_vision_model_to_text(
    tmp_path, vision_model_path: Path, text_model_path: Path
):
    """Seed 000: Qwen2.5-VL first, Qwen2.5 (text) when it does not load; the chain says why."""
    broken = tmp_path / "Qwen2.5-VL-3B-Instruct"
    shutil.copytree(vision_model_path, broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 64)  # truncated weights
    srv = start_server(
        tmp_path,
        "--model",
        str(broken),
        "--fallback-model",
        str(text_model_path),
        *ENGINE,
        "--max-model-len",
        "512",
        timeout_s=300,
    )
    try:
        info = httpx.get(f"{srv.url}/api/v1/model/info").json()
        assert info["chosen_model"] == str(text_model_path) and info["accepts_images"] is False
        [failure] = info["fallback_failures"]
        assert failure["model"] == str(broken) and "ModelLoadError" in failure["error"]
        assert info["model_name"] == "Qwen2.5-VL-3B-Instruct"  # clients keep the name they know
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0, timeout=120)
        text = answer(client, [{"role": "user", "content": ASK}])
        assert text.choices[0].finish_reason in ("stop", "length")
        with pytest.raises(openai.BadRequestError, match="cannot take images"):
            answer(client, user(image_part(data_url(png(1)))))
    finally:
        stop_server(srv)
