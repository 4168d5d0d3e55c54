"""The bytes behind an image URL a client sent: `data:` URLs, local files under the one folder the
operator allowed, and `http(s)` URLs only when the operator turned fetching on.

Every refusal is an `InvalidRequest` naming the request part (`messages[1].content[0]`), and every
source is capped at `max_bytes` before it is read whole: a data URL by its length, a file by its
size, a download as it streams.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from llmhost.errors import InvalidRequest

REMOTE_SCHEMES = ("http", "https")


async def read_image_bytes(
    url: str,
    param: str,
    *,
    max_bytes: int,
    local_root: Path | None,
    allow_remote: bool,
    fetch_timeout_s: float,
) -> bytes:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":  # off the event loop: base64 of megabytes takes tens of milliseconds
        return await asyncio.to_thread(_data_url_bytes, url, param, max_bytes)
    if scheme == "file":
        return await asyncio.to_thread(_local_file_bytes, url, param, max_bytes, local_root)
    if scheme in REMOTE_SCHEMES:
        if not allow_remote:
            raise InvalidRequest(
                "image URLs on the network are not fetched by this server (start it with "
                "--allow-remote-images to allow it); send the image inline as a base64 data: URL",
                param=param,
            )
        return await _fetch(url, param, max_bytes, fetch_timeout_s)
    raise InvalidRequest(
        "an image URL must be a base64 'data:' URL, a 'file://' URL (with --allowed-local-media-path) "
        "or an http(s) URL (with --allow-remote-images)",
        param=param,
    )


def _too_large(param: str, max_bytes: int) -> InvalidRequest:
    return InvalidRequest(f"the image is larger than {max_bytes / 2**20:g} MiB (--max-image-mb)", param=param)


def _data_url_bytes(url: str, param: str, max_bytes: int) -> bytes:
    """`data:[<media type>][;base64],<data>`; only base64 data, as OpenAI and vLLM accept."""
    header, sep, payload = url.partition(",")
    if not sep:
        raise InvalidRequest("the data: URL has no ',' before its data", param=param)
    fields = header[len("data:") :].split(";")
    media_type = fields[0].strip().lower()
    if "base64" not in (f.strip().lower() for f in fields[1:]):
        raise InvalidRequest("a data: URL image must be base64 ('data:image/png;base64,...')", param=param)
    if media_type and not media_type.startswith("image/"):
        raise InvalidRequest(f"the data: URL's media type is '{media_type}', not an image", param=param)
    payload = "".join(payload.split())  # line breaks some encoders insert
    if len(payload) // 4 * 3 > max_bytes + 2:  # refused before the decoded copy is made
        raise _too_large(param, max_bytes)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("the data: URL's data is not valid base64", param=param) from None


def _local_file_bytes(url: str, param: str, max_bytes: int, local_root: Path | None) -> bytes:
    if local_root is None:
        raise InvalidRequest(
            "file:// image URLs are not allowed by this server (--allowed-local-media-path names the "
            "folder they may come from)",
            param=param,
        )
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise InvalidRequest("a file:// image URL must name a file on this machine", param=param)
    # Resolved (symbolic links and '..' followed) before the check, so no path leads out of the folder.
    path = Path(unquote(parts.path)).resolve()
    root = local_root.resolve()
    if not path.is_relative_to(root):
        raise InvalidRequest(
            f"the image file is outside the folder this server reads images from ({root})", param=param
        )
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise InvalidRequest("the image path is not a file", param=param)
        if size > max_bytes:
            raise _too_large(param, max_bytes)
        return path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"the image file cannot be read: {exc.strerror or exc}", param=param) from None


async def _fetch(url: str, param: str, max_bytes: int, timeout_s: float) -> bytes:
    try:
        async with (
            asyncio.timeout(timeout_s),  # the whole download, not each read: a slow drip ends too
            httpx.AsyncClient(timeout=timeout_s, follow_redirects=True, max_redirects=3) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise InvalidRequest(f"fetching the image answered HTTP {response.status_code}", param=param)
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise _too_large(param, max_bytes)
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data.extend(chunk)
                if len(data) > max_bytes:
                    raise _too_large(param, max_bytes)
            return bytes(data)
    except TimeoutError:
        raise InvalidRequest(f"fetching the image took longer than {timeout_s:g} s", param=param) from None
    except httpx.HTTPError as exc:
        raise InvalidRequest(f"the image could not be fetched: {type(exc).__name__}", param=param) from None
