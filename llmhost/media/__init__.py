"""Images a client sends with a conversation: where they may come from, how large they may be, and
turning them into decoded pictures for an engine that reads images (see `images.py`)."""

from llmhost.media.images import ImageLimits, ImagePart, image_error, load_images

__all__ = ["ImageLimits", "ImagePart", "image_error", "load_images"]
