"""The procedural mini world (docs/design.md#the-mini-world): objects, renders, captions, task manifests and attribute judges.

``world``  objects, ``render_image`` / ``render_sound`` / ``render_video``, captions and ``parse_caption``
``build``  tasks -> manifest conversations: ``build_world``, ``main``, ``register`` (``codi2 build-data world``)
``judges`` small torch attribute classifiers that score generated media (import it explicitly: it needs torch)
"""
from .build import TASKS, build_world, main, register
from .world import (
    ATTRIBUTES,
    COLOURS,
    DIRECTIONS,
    MODALITY_ATTRS,
    POSITIONS,
    SHAPES,
    SIZES,
    WorldObject,
    audio_caption,
    image_caption,
    parse_caption,
    random_object,
    render_image,
    render_sound,
    render_video,
    video_caption,
)

__all__ = [
    "ATTRIBUTES", "COLOURS", "DIRECTIONS", "MODALITY_ATTRS", "POSITIONS", "SHAPES", "SIZES", "TASKS",
    "WorldObject", "audio_caption", "build_world", "image_caption", "main", "parse_caption", "random_object",
    "register", "render_image", "render_sound", "render_video", "video_caption",
]
