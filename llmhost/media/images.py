"""Images in a conversation: the limits the operator set, and decoding each image a client sent.

Faces translate their wire format's image blocks into `ImagePart`s (the URL and the request part it
came from); the pipeline loads them with `load_images` before anything is rendered, so every problem
is a 400 naming the part (`messages[1].content[0]`, in `param` and at the start of the message, since
the Anthropic and simple chat error shapes have no `param`): too many images, a source the server does not
read (`sources.py`), too many bytes, too many pixels (checked from the header, before the pixels are
decoded: a small file can unpack into gigabytes), or bytes that are not a PNG, JPEG or WebP image.
Resizing to what the model reads is the engine's work (its image processor's pixel budget).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmhost.errors import InvalidRequest
from llmhost.media.sources import read_image_bytes

if TYPE_CHECKING:
    from PIL.Image import Image

FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}  # Pillow's format name -> how users spell it


@dataclass(frozen=True)
class ImagePart:
    """An image a client put in a message: its URL (`data:`, `file://`, `http(s)://`) and the request
    part it came from, which errors name."""

    url: str
    param: str


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 10 * 2**20
    max_pixels: int = 40_000_000
    max_per_prompt: int = 8
    local_root: Path | None = None  # file:// URLs are read from under this folder only; None: never
    allow_remote: bool = False
    fetch_timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Any) -> ImageLimits:
        root = settings.allowed_local_media_path
        return cls(
            max_bytes=int(settings.max_image_mb * 2**20),
            max_pixels=settings.max_image_pixels,
            max_per_prompt=settings.max_images_per_prompt,
            local_root=Path(root) if root else None,
            allow_remote=settings.allow_remote_images,
            fetch_timeout_s=settings.image_fetch_timeout,
        )


def image_error(part: ImagePart, message: str) -> InvalidRequest:
    """A 400 about one image: its part in `param` and in the message."""
    return InvalidRequest(f"{part.param}: {message}", param=part.param)


def check_image_count(parts: Sequence[ImagePart], limits: ImageLimits) -> None:
    if len(parts) > limits.max_per_prompt:
        raise image_error(
            parts[limits.max_per_prompt],
            f"{len(parts)} images in one conversation; this server accepts at most "
            f"{limits.max_per_prompt} (--max-images-per-prompt)",
        )


async def load_images(parts: Sequence[ImagePart], limits: ImageLimits) -> list[Image]:
    """Every image of one conversation, decoded to RGB, in order; the first bad one is a 400."""
    check_image_count(parts, limits)
    images = []
    for part in parts:  # one at a time: at most one undecoded image is held per request
        try:
            data = await read_image_bytes(
                part.url,
                part.param,
                max_bytes=limits.max_bytes,
                local_root=limits.local_root,
                allow_remote=limits.allow_remote,
                fetch_timeout_s=limits.fetch_timeout_s,
            )
            images.append(await asyncio.to_thread(decode_image, data, part.param, limits.max_pixels))
        except InvalidRequest as exc:
            raise image_error(part, exc.message) from None
    return images


def decode_image(data: bytes, param: str, max_pixels: int) -> Image:
    """PNG, JPEG or WebP bytes as an RGB image, its size checked before its pixels are decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except Image.DecompressionBombError:  # Pillow's own ceiling, far above the default --max-image-pixels
        raise InvalidRequest(
            f"the image has more pixels than this server decodes (--max-image-pixels {max_pixels:,})",
            param=param,
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InvalidRequest(
            "the image is not a PNG, JPEG or WebP image (or it is damaged)", param=param
        ) from None
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidRequest(
            f"the image is {width}x{height} pixels, more than the {max_pixels:,} this server decodes "
            "(--max-image-pixels)",
            param=param,
        )
    try:
        image.load()
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise InvalidRequest(f"the {FORMATS[image.format or 'PNG']} image is damaged", param=param) from None
