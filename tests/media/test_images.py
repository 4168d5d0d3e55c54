"""Loading the images clients send (llmhost/media): every source and every limit, each refusal an
`InvalidRequest` naming the request part. Remote URLs are fetched from a real HTTP server on loopback."""

from __future__ import annotations

import base64
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from llmhost.errors import InvalidRequest
from llmhost.media import ImageLimits, ImagePart, load_images

PARAM = "messages[1].content[0]"


def encoded(fmt: str = "PNG", size: tuple[int, int] = (32, 24), color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


async def load(url: str, **limits) -> Image.Image:
    [image] = await load_images([ImagePart(url, PARAM)], ImageLimits(**limits))
    return image


async def refused(url: str, **limits) -> str:
    with pytest.raises(InvalidRequest) as info:
        await load(url, **limits)
    assert info.value.param == PARAM
    return info.value.message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
async def test_data_urls_of_each_format_decode_to_rgb(fmt):
    image = await load(data_url(encoded(fmt), f"image/{fmt.lower()}"))
    assert image.mode == "RGB" and image.size == (32, 24)
    assert image.getpixel((5, 5))[0] > 200  # red


async def test_rgba_and_line_broken_base64_are_read():
    out = io.BytesIO()
    Image.new("RGBA", (8, 8), (0, 0, 255, 128)).save(out, format="PNG")
    b64 = base64.encodebytes(out.getvalue()).decode()  # with line breaks, as some encoders write it
    assert (await load(f"data:image/png;base64,{b64}")).mode == "RGB"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("data:image/png;base64", "no ','"),
        ("data:image/png,rawbytes", "must be base64"),
        ("data:text/plain;base64,aGVsbG8=", "not an image"),
        ("data:image/png;base64,@@@@", "not valid base64"),
        (data_url(b"hello, this is text"), "not a PNG, JPEG or WebP"),
        (data_url(encoded("GIF"), "image/gif"), "not a PNG, JPEG or WebP"),
        (data_url(encoded("PNG", (64, 64))[:60]), "damaged"),
        ("ftp://example.com/cat.png", "must be a base64 'data:' URL"),
        ("cat.png", "must be a base64 'data:' URL"),
    ],
)
async def test_bad_data_is_refused_naming_the_part(url, says):
    assert says in await refused(url)


async def test_byte_and_pixel_limits():
    big = encoded("PNG", (2000, 1000))  # compresses to a few KiB: the pixel limit must catch it
    assert "more than the 1,000,000" in await refused(data_url(big), max_pixels=1_000_000)
    assert (await load(data_url(big), max_pixels=2_000_000)).size == (2000, 1000)
    noisy = Image.effect_noise((64, 64), 64).convert("RGB")
    out = io.BytesIO()
    noisy.save(out, format="PNG")
    assert len(out.getvalue()) > 4096
    assert "larger than 0.00390625 MiB" in await refused(data_url(out.getvalue()), max_bytes=4096)


async def test_too_many_images_names_the_first_one_over():
    parts = [ImagePart(data_url(encoded()), f"messages[0].content[{i}]") for i in range(3)]
    assert len(await load_images(parts, ImageLimits(max_per_prompt=3))) == 3
    with pytest.raises(InvalidRequest) as info:
        await load_images(parts, ImageLimits(max_per_prompt=2))
    assert info.value.param == "messages[0].content[2]" and "--max-images-per-prompt" in info.value.message


async def test_local_files_only_under_the_allowed_folder(tmp_path: Path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "cat.png").write_bytes(encoded())
    (outside / "secret.png").write_bytes(encoded())
    (allowed / "link.png").symlink_to(outside / "secret.png")
    url = (allowed / "cat.png").as_uri()
    assert "not allowed by this server" in await refused(url)
    assert (await load(url, local_root=allowed)).size == (32, 24)
    for escape in [
        (outside / "secret.png").as_uri(),
        f"file://{allowed}/../outside/secret.png",
        "file:///etc/passwd",
    ]:
        assert "outside the folder" in await refused(escape, local_root=allowed)
    assert "outside the folder" in await refused((allowed / "link.png").as_uri(), local_root=allowed)
    assert "cannot be read" in await refused((allowed / "missing.png").as_uri(), local_root=allowed)
    assert "not a file" in await refused(allowed.as_uri(), local_root=allowed)
    assert "must name a file on this machine" in await refused("file://otherhost/x.png", local_root=allowed)
    assert "larger than" in await refused(url, local_root=allowed, max_bytes=10)


class _Images(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/cat.png":
            body = encoded()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/chunked.png":  # no content-length: the cap applies while it streams
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"\x89PNG" + b"\0" * 100_000)
        else:
            self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_remote_urls_only_when_allowed(image_server: str):
    url = f"{image_server}/cat.png"
    assert "--allow-remote-images" in await refused(url)
    assert (await load(url, allow_remote=True)).size == (32, 24)
    assert "HTTP 404" in await refused(f"{image_server}/missing.png", allow_remote=True)
    assert "larger than" in await refused(url, allow_remote=True, max_bytes=20)
    assert "larger than" in await refused(f"{image_server}/chunked.png", allow_remote=True, max_bytes=50_000)
    assert "could not be fetched" in await refused("http://127.0.0.1:9/x.png", allow_remote=True)
