"""The Gradio chat, started in-process on a free loopback port with the tiny model and driven
through ``gradio_client`` exactly as the README shows.

The tiny model is random and never opens a media span by itself, so these tests use the app's
"Reply starts with" setting (API parameter ``prefix``, mapped to ``SamplingOptions.prefix``):
``prefix="Here <img>"`` forces the reply to start with that text and an image there.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from .conftest import make_audio, make_image  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_pipeline_dir, tmp_path_factory):
    from codi2.chat_state import ServeConfig
    from codi2.config import MediaLimits
    from codi2.pipeline import CoDi2Pipeline
    from serve.app import build_app

    pipe = CoDi2Pipeline.from_pretrained(tiny_pipeline_dir)
    cfg = ServeConfig(media=MediaLimits(max_file_bytes=2 * 2**20, max_image_pixels=256 * 256, max_audio_seconds=20.0,
                                        max_video_seconds=10.0))
    app = build_app(pipe, cfg, workdir=tmp_path_factory.mktemp("serve"))
    port = _free_port()
    app.launch("127.0.0.1", port, block=False, quiet=True)
    yield app, f"http://127.0.0.1:{port}/"
    app.close()


def _client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


def _send(client, text: str = "", files=(), **settings):
    from gradio_client import handle_file

    chat, box, refs = client.predict(message={"text": text, "files": [handle_file(str(f)) for f in files]},
                                     api_name="/chat", **settings)
    return _turns(chat)


def _turns(chat: list[dict]) -> list[dict]:
    """Consecutive messages of one role merged: the app sends one Gradio message per item."""
    out: list[dict] = []
    for m in chat:
        if out and out[-1]["role"] == m["role"]:
            out[-1]["content"] = out[-1]["content"] + m["content"]
        else:
            out.append({"role": m["role"], "content": list(m["content"])})
    return out


def _items(msg: dict) -> list[dict]:
    return msg["content"]


def _texts(msg: dict) -> str:
    return " ".join(c["text"] for c in _items(msg) if c.get("type") == "text")


def _files(msg: dict) -> list[str]:
    return [c["file"] if isinstance(c["file"], str) else c["file"]["path"] for c in _items(msg) if c.get("type") == "file"]


@pytest.fixture
def media_files(tmp_path):
    from codi2.media import save_audio, save_image

    img = save_image(make_image(1, 40), tmp_path / "square.png")
    aud = save_audio(make_audio(2, 0.5), tmp_path / "tone.wav")
    return img, aud


def test_three_turn_conversation_with_image_and_audio(server, media_files, tmp_path):
    app, url = server
    img, aud = media_files
    c = _client(url)
    # turn 1: an uploaded image in, an image out (streamed: progress shows while the decoder runs)
    from gradio_client import handle_file

    job = c.submit(message={"text": "Draw this in blue.", "files": [handle_file(str(img))]}, prefix="Here <img>",
                   seed=0, api_name="/chat")
    chat = _turns(job.result()[0])
    updates = job.outputs()
    assert len(updates) >= 3, "the reply should stream (several updates)"
    assert any(m.get("metadata") and "generating image" in (m["metadata"].get("title") or "")
               for out in updates for m in out[0]), "no diffusion progress indicator was streamed"
    assert [m["role"] for m in chat] == ["user", "assistant"]
    assert _files(chat[0])[0].endswith(".png") and "Draw this in blue." in _texts(chat[0])
    out = _files(chat[1])
    assert len(out) == 1 and out[0].endswith(".png") and Path(out[0]).stat().st_size > 0
    assert _texts(chat[1]).startswith("Here")
    # turn 2: an uploaded audio in, an audio out
    chat = _send(c, "What does this sound like? Play it higher.", [aud], prefix="Sure <aud>", seed=1)
    assert [m["role"] for m in chat] == ["user", "assistant"] * 2
    assert _files(chat[2])[0].endswith(".wav")
    assert [Path(f).suffix for f in _files(chat[3])] == [".wav"]
    # turn 3: refer back to the first image by its number (@1) and get an image and a sound in one reply
    chat = _send(c, "Now make @1 red.", prefix="Ok <img> and <aud>", seed=2)
    assert len(chat) == 6
    assert _files(chat[4]) and _files(chat[4])[0].endswith(".png")  # @1 attached again as an input
    assert sorted(Path(f).suffix for f in _files(chat[5])) == [".png", ".wav"]
    # the server-side session has the three turns in its context
    state = next(s for s in app.manager._sessions.values() if len(s.log) == 3)
    assert len(state.session.turns) == 3 and state.session.turns[2].user.media_parts[0].type == "image"
    # export: a training-manifest record with its media, in a zip
    zpath = c.predict(api_name="/export")
    with zipfile.ZipFile(zpath) as z:
        record = json.loads(z.read("manifest.jsonl").decode().strip())
        names = set(z.namelist())
    assert record["schema"] == 1 and record["source"] == "chat" and record["id"].startswith("chat-")
    from codi2.conversation import message_from_dict

    msgs = [message_from_dict(m, f"messages[{i}]") for i, m in enumerate(record["messages"])]
    assert [m.role for m in msgs] == ["user", "assistant"] * 3
    paths = [p.path for m in msgs for p in m.media_parts]
    assert len(paths) == 7 and all(p in names for p in paths)


def test_two_concurrent_clients_keep_separate_histories(server):
    app, url = server
    results: dict[str, list] = {}
    errors: list[BaseException] = []

    def talk(name: str) -> None:
        try:
            c = _client(url)
            _send(c, f"I am {name}.", seed=0)
            results[name] = _send(c, f"Still {name}.", seed=0)
        except BaseException as e:  # re-raised in the main thread below
            errors.append(e)

    threads = [threading.Thread(target=talk, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for name, other in (("alice", "bob"), ("bob", "alice")):
        chat = results[name]
        user_texts = [_texts(m) for m in chat if m["role"] == "user"]
        assert user_texts == [f"I am {name}.", f"Still {name}."]
        assert not any(other in _texts(m) for m in chat)


def _bad_files(d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words the error message must contain)."""
    import soundfile as sf
    from PIL import Image

    from codi2.media import save_audio

    corrupt = d / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    wav = save_audio(make_audio(3, 1.0), d / "full.wav")
    truncated = d / "truncated.wav"
    truncated.write_bytes(wav.read_bytes()[:len(wav.read_bytes()) // 2])
    fake = d / "movie.mp4"
    fake.write_text("this is just a text file pretending to be a video\n" * 4)
    big = d / "big.png"
    Image.new("RGB", (600, 600), (200, 30, 30)).save(big)  # 0.36 MP > the 256×256 limit of this server
    long = d / "ten-minutes.wav"
    sf.write(long, np.zeros(600 * 1000, dtype="uint8").astype("float32"), 1000, subtype="PCM_U8")  # 600 s, 600 KB
    return {"corrupt png": (corrupt, "corrupt.png"), "truncated wav": (truncated, "truncated.wav"),
            "text as mp4": (fake, "not a media file"), "oversized image": (big, "over the limit"),
            "10-minute audio": (long, "600.0 s")}


def test_bad_inputs_get_a_clear_message_and_the_next_request_succeeds(server, tmp_path):
    app, url = server
    c = _client(url)
    turns = 0
    for name, (path, words) in _bad_files(tmp_path).items():
        chat = _send(c, f"look at this ({name})", [path])
        reply = chat[-1]
        assert reply["role"] == "assistant" and _texts(reply).startswith("⚠️"), (name, chat[-1])
        assert words in _texts(reply), (name, _texts(reply))
        assert str(tmp_path) not in _texts(reply) and "/tmp/gradio" not in _texts(reply), "server paths leak"
        assert "📎 " + path.name in _texts(chat[-2])  # the refused message is shown with the file's name
        chat = _send(c, "Describe a red circle.", seed=0)
        turns += 1
        assert chat[-1]["role"] == "assistant" and not _texts(chat[-1]).startswith("⚠️"), (name, chat[-1])
    state = next(s for s in app.manager._sessions.values() if len(s.notices) == 5)
    assert len(state.log) == turns and len(state.session.turns) == turns


def test_limits_on_text_and_settings(server):
    app, url = server
    c = _client(url)
    chat = _send(c, "x" * (app.cfg.max_prompt_chars + 1))
    assert "over the limit of" in _texts(chat[-1])
    from gradio_client.exceptions import AppError

    chat = _send(c, "hello", max_new_tokens=10_000)  # the sliders' ranges are checked by codi2, naming the field
    assert f"max_new_tokens=10000 is out of range; allowed: 1..{app.cfg.max_new_tokens}" in _texts(chat[-1])
    with pytest.raises(AppError, match="not in the list of choices"):
        _send(c, "hello", scheduler="euler")
    chat = _send(c, "make @7 blue")
    assert "there is no media @7" in _texts(chat[-1])
    chat = _send(c, "hello", seed=0)
    assert not _texts(chat[-1]).startswith("⚠️")


def test_regenerate_undo_stop_clear(server):
    app, url = server
    c = _client(url)
    _send(c, "Draw a blue square.", prefix="Here <img>", seed=0)
    chat = _send(c, "And a sound.", prefix="Ok <aud>", seed=0)
    assert len(chat) == 4
    chat = _turns(c.predict(prefix="Again <aud>", seed=5, api_name="/regenerate")[0])
    assert len(chat) == 4 and _texts(chat[3]).startswith("Again") and _files(chat[3])[0].endswith(".wav")
    chat = _turns(c.predict(api_name="/undo")[0])
    assert len(chat) == 2
    # stop: a long diffusion is cancelled; the turn is rolled back and a note shown
    job = c.submit(message={"text": "A long video please.", "files": []}, prefix="Here <vid>", steps=100, seed=0,
                   api_name="/chat")
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            m.get("metadata") and "generating" in (m["metadata"].get("title") or "") for out in job.outputs()
            for m in out[0]):
        time.sleep(0.05)
    c.predict(api_name="/stop")
    chat = _turns(job.result()[0])
    assert _texts(chat[-1]).startswith("⚠️ Stopped"), chat[-1]
    state = next(s for s in app.manager._sessions.values() if s.notices and s.notices[-1].text == "Stopped.")
    assert len(state.session.turns) == 1 and len(state.log) == 1
    chat = _send(c, "Still there?", seed=0)
    assert len(state.session.turns) == 2 and not _texts(chat[-1]).startswith("⚠️")
    chat, _ = c.predict(api_name="/clear")
    assert chat == [] and state.session.turns == [] and state.media == []


def test_command_line(tmp_path, monkeypatch, capsys):
    import argparse

    import serve.app as app_mod

    assert app_mod.main(["--model", str(tmp_path / "missing")]) == 2
    assert "codi2 init configs/model/tiny.yaml --out DIR" in capsys.readouterr().err
    monkeypatch.setattr(app_mod, "DEFAULT_MODEL", tmp_path / "no-default")
    assert app_mod.main([]) == 0
    assert "Pass --model DIR" in capsys.readouterr().err
    assert app_mod.main(["--model", str(tmp_path), "--auth", "nocolon"]) == 2
    p = argparse.ArgumentParser()
    app_mod.register(p.add_subparsers(dest="cmd"))
    args = p.parse_args(["serve", "--model", "m", "--port", "9", "--set", "max_sessions=2"])
    assert args.func is app_mod.run and args.port == 9 and args.host == "127.0.0.1" and not args.share


def test_theme_survives_gradios_builtin_theme_comparison():
    """A blocking launch compares the theme with every built-in one; string fonts made that raise."""
    import gradio as gr

    from serve.app import app_theme

    theme = app_theme()
    for builtin in (gr.themes.Default(), gr.themes.Soft(), gr.themes.Base()):
        assert theme.to_dict() != builtin.to_dict()


# ----------------------------------------------------------------------------- issue 44
def test_64_fresh_clients_calling_clear_do_not_evict_a_recent_session(server, media_files):
    import uuid

    app, url = server
    img, _ = media_files
    c = _client(url)
    _send(c, "Remember this picture.", [img], seed=0)
    before = len(app.manager)
    stranger = _client(url)
    for _ in range(64):  # every call from a new session hash: a fresh client as the server sees it
        stranger.session_hash = uuid.uuid4().hex
        chat, _refs = stranger.predict(api_name="/clear")
        assert chat == []
    assert len(app.manager) == before  # /clear of an unknown session creates (and evicts) nothing
    chat = _send(c, "Now make @1 red.", seed=0)
    assert len(chat) == 4 and _files(chat[2]), chat[2]  # @1 resolved: the picture is attached again
    assert not _texts(chat[3]).startswith("⚠️"), chat[3]


def _raw_chat(url: str, **settings) -> str:
    """One /chat call over plain HTTP (gradio_client refuses to send NaN or inf); the last reply's text."""
    import uuid

    import httpx

    values = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 8, "seed": 0, "steps": 0, "guidance": 0.0,
              "scheduler": "default", "outputs": ["image"], "prefix": ""} | settings
    data = [{"text": "hello", "files": []}, []] + list(values.values())
    body = json.dumps({"data": data, "session_hash": uuid.uuid4().hex})  # NaN / Infinity as JavaScript writes them
    call = url + "gradio_api/call/chat"
    event = httpx.post(call, content=body, headers={"content-type": "application/json"}).json()["event_id"]
    last = ""
    with httpx.stream("GET", f"{call}/{event}", timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                last = line[5:]
    out = json.loads(last)
    assert isinstance(out, list), out  # an error event instead of the chat
    return out[0][-1]["content"][0]["text"]


def test_settings_messages_name_the_field_and_range(server):
    app, url = server
    c = _client(url)
    chat = _send(c, "hello", seed=2**70)
    assert f"seed={2**70} is out of range; allowed: -1..4294967295 (-1 = random)" in _texts(chat[-1])
    for field, value, words in (("steps", float("nan"), "steps=nan is not a finite number; allowed: 1..100"),
                                ("max_new_tokens", float("nan"), "max_new_tokens=nan is not a finite number"),
                                ("seed", float("inf"), "seed=inf is not a finite number; allowed: -1..4294967295"),
                                ("guidance", float("nan"), "guidance=nan is not a finite number; allowed: 0.0..30.0")):
        text = _raw_chat(url, **{field: value})
        assert words in text, (field, text)
    # the sliders' values reach the handler as sent (setting_slider), so ±inf is named with its field too
    for field, value in (("temperature", float("-inf")), ("top_p", float("inf")), ("guidance", float("inf"))):
        text = _raw_chat(url, **{field: value})
        assert f"{field}={value} is not a finite number; allowed:" in text, (field, text)


def test_the_model_card_is_in_the_page_config(server):
    import httpx

    app, url = server
    config = httpx.get(url + "config").json()
    card = next(x["props"]["value"] for x in config["components"]
                if x.get("props", {}).get("elem_id") == "codi2-model-card")
    assert card["name"] == app.title and card["summary"]
    assert any(card["summary"] in str(x.get("props", {}).get("value")) for x in config["components"]
               if x.get("props", {}).get("elem_id") == "codi2-about")


def test_the_mini_model_card_names_its_world():
    from codi2.model_card import load_model_card

    from .conftest import REPO

    card = load_model_card(REPO / "checkpoints" / "codi2-mini", "codi2-mini", ["image"], ["image"])
    assert card.name == "codi2-mini" and "coloured shapes" in card.summary
    assert "circle" in card.trained_on and "Pictures" in card.can_make
    assert "Draw a large red circle on the left." in card.examples
    assert (REPO / "checkpoints" / "codi2-mini" / "MODEL_CARD.md").stat().st_size < 2048
    from data_builders.world.model_card import card_text

    assert (REPO / "checkpoints" / "codi2-mini" / "MODEL_CARD.md").read_text() == card_text("codi2-mini")


def test_a_session_ending_deletes_its_uploads_and_gradios_copies(server, media_files):
    from gradio.processing_utils import hash_file

    app, url = server
    img, _ = media_files
    c = _client(url)
    _send(c, "Draw this in blue.", [img], prefix="Here <img>", seed=0)
    state = app.manager.find(c.session_hash)
    cache = Path(app.blocks.GRADIO_CACHE)
    copies = [cache / hash_file(f) / f.name for f in state.workdir.iterdir()]
    uploads = [Path(f) for f in state.owned_files]
    assert len(copies) == 2 and all(p.exists() for p in copies)  # the upload's and the reply's served copies
    assert uploads and all(p.exists() and p.is_relative_to(cache) for p in uploads)
    app.manager.drop(c.session_hash)
    assert not any(p.exists() for p in copies + uploads) and not state.workdir.exists()


def test_start_up_sweeps_what_a_killed_server_left(tmp_path):
    import serve.app as app_mod

    root = tmp_path / "codi2-serve-7860"
    for f in (root / "gradio" / "abc" / "upload.png", root / "sessions" / "0123" / "00001-out-image.png"):
        f.parent.mkdir(parents=True)
        f.write_bytes(b"left over")
    saved = os.environ.pop("GRADIO_TEMP_DIR", None)
    try:
        cache, sessions = app_mod.server_folders(7860, root)
        assert os.environ["GRADIO_TEMP_DIR"] == str(cache) == str(root / "gradio")
        assert list(cache.iterdir()) == [] and list(sessions.iterdir()) == []
    finally:
        os.environ.pop("GRADIO_TEMP_DIR", None)
        if saved is not None:
            os.environ["GRADIO_TEMP_DIR"] = saved


def test_the_browser_copy_stays_under_its_budget():
    from serve import history

    def snap(i: int, kb: int) -> dict:
        return {"schema": 1, "id": f"{i:032x}", "title": f"chat {i}", "updated": 1.0e9 + i, "turns": [],
                "media": [{"number": 1, "kind": "image", "file": "a.png", "data": "x" * kb * 1024}]}

    store = history.clean_store({"schema": 2})
    assert store == history.empty_store() and history.clean_store("junk") == history.empty_store()
    for i in range(30):
        store = history.put(store, snap(i, 200), max_chars=1_000_000)
    assert len(json.dumps(store)) <= 1_000_000 and store["current"] == f"{29:032x}"
    convs = store["conversations"]
    assert len(convs) == history.MAX_CONVERSATIONS and convs[0]["media"][0]["data"]  # the newest keeps its media
    assert convs[-1]["media"][0]["data"] is None  # the oldest restore their media only while the server has them
    assert [label for label, _ in history.choices(store)][0].startswith("chat 29")
    store = history.remove(store, f"{29:032x}")
    assert store["current"] is None and history.find(store, f"{29:032x}") is None
