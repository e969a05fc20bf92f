"""Helpers shared by test modules: manifest records and a small manifest on disk."""
from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import make_audio, make_image, make_video


def text_msg(role: str, text: str) -> dict:
    return {"role": role, "content": [{"type": "text", "text": text}]}


def record(rid: str, *messages: dict, **extra) -> dict:
    return {"schema": 1, "id": rid, "source": "test", "messages": list(messages), **extra}


def build_manifest(d: Path, broken: bool = True) -> Path:
    """A manifest with all four phases + multi (and, with ``broken``, one record per error kind)."""
    from codi2.media import save_audio, save_image, save_video

    media = d / "media"
    media.mkdir(parents=True, exist_ok=True)
    save_image(make_image(1), media / "in.png")
    save_image(make_image(2), media / "out.png")
    save_image(make_image(3), media / "out2.png")
    save_audio(make_audio(1, 0.5), media / "out.wav")
    save_video(make_video(1, 4), media / "out.mp4")
    (media / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 8)
    img_in = {"type": "image", "path": "media/in.png"}
    lines = [
        record("t-plain", text_msg("user", "hello"), text_msg("assistant", "hi there")),
        record("t-caption", {"role": "user", "content": [img_in, {"type": "text", "text": "what is it?"}]},
             text_msg("assistant", "a red circle"), meta={"task": "caption"}, license="CC0"),
        record("t-system", text_msg("system", "be brief"), text_msg("user", "hi"), text_msg("assistant", "hello"),
             text_msg("user", "again"), text_msg("assistant", "hello again")),
        record("i-gen", text_msg("user", "draw a circle"),
             {"role": "assistant", "content": [{"type": "text", "text": "here:"},
                                               {"type": "image", "path": "media/out.png", "caption": "a circle"}]}),
        record("a-gen", {"role": "user", "content": [img_in, {"type": "text", "text": "how does it sound?"}]},
             {"role": "assistant", "content": [{"type": "audio", "path": "media/out.wav", "caption": "a low hum"}]}),
        record("v-gen", text_msg("user", "show it moving"),
             {"role": "assistant", "content": [{"type": "video", "path": "media/out.mp4", "caption": "it moves left"}]}),
        record("m-joint", text_msg("user", "picture and sound"),
             {"role": "assistant", "content": [{"type": "image", "path": "media/out2.png"},
                                               {"type": "audio", "path": "media/out.wav", "caption": "a low hum"}]}),
    ]
    text = [json.dumps(x) for x in lines]
    if broken:
        text += [
            json.dumps(record("b-missing", {"role": "user", "content": [{"type": "image", "path": "media/nope.png"}]},
                            text_msg("assistant", "x"))),
            '{"schema": 1, "id": "broken-json", ',  # line 9
            json.dumps(record("b-roles", text_msg("user", "a"), text_msg("user", "b"), text_msg("assistant", "c"))),
            json.dumps(record("b-caption", text_msg("user", "a sound"),
                            {"role": "assistant", "content": [{"type": "audio", "path": "media/out.wav"}]})),
            json.dumps(record("b-corrupt", {"role": "user", "content": [{"type": "image", "path": "media/corrupt.png"}]},
                            text_msg("assistant", "x"))),
            json.dumps(record("t-plain", text_msg("user", "dup"), text_msg("assistant", "dup"))),
        ]
    path = d / "data.jsonl"
    path.write_text("\n".join(text[:9] + [""] + text[9:]) + "\n" if broken else "\n".join(text) + "\n")
    return path
