"""The settings of images in conversations (a vision model on an engine that reads images; docs/api.md
#images). Part of `Settings` (config.py): each is a flag, an environment variable and a YAML key."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator


class MediaSettings(BaseModel):
    max_images_per_prompt: int = Field(
        8,
        ge=0,
        le=256,
        description="Most images one conversation may carry (vLLM's --limit-mm-per-prompt); more is a 400.",
    )
    max_image_mb: float = Field(
        10.0,
        gt=0,
        le=1024,
        description="Largest image in MiB (encoded: the PNG/JPEG/WebP file); more is a 400.",
    )
    max_image_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Largest image in pixels (width x height) that is decoded; more is a 400 (read from the "
        "header first: a small file can unpack into gigabytes). Images are then resized to the model's own "
        "pixel budget.",
    )
    max_image_tokens: int | None = Field(
        None,
        ge=1,
        description="Most tokens one image may become: larger images are scaled down to fit (lowers the "
        "model's own budget, e.g. Qwen2.5-VL's 16384). Default: the model's image processor decides.",
    )
    mmproj: str | None = Field(
        None,
        description="The vision projector of a GGUF vision model, for the llama.cpp engine (llama-server's "
        "--mmproj), e.g. mmproj-Qwen2.5-VL-3B-Instruct-f16.gguf. Default: an mmproj*.gguf beside the model "
        "file, when there is one; 'none' serves the model for text only.",
    )
    allowed_local_media_path: str | None = Field(
        None,
        description="Folder that `file://` image URLs may be read from (as vLLM's flag of the same name); "
        "paths outside it are refused. Default: no local files.",
    )
    allow_remote_images: bool = Field(
        False,
        description="Fetch `http(s)://` image URLs (the server then makes requests to addresses clients "
        "name). Off by default: send images inline as base64 `data:` URLs.",
    )
    image_fetch_timeout: float = Field(
        10.0, gt=0, le=600, description="Seconds fetching one remote image may take (--allow-remote-images)."
    )

    @field_validator("allowed_local_media_path")
    @classmethod
    def _media_folder_exists(cls, value: str | None) -> str | None:
        # Checked now: a typo would otherwise show only as every file:// image being refused.
        if value is not None and not Path(value).is_dir():
            raise ValueError(f"{value} is not a folder")
        return value
