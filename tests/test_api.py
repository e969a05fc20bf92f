"""The OpenAI-compatible API (serve/api.py), driven by the official ``openai`` SDK against the bundled mini
model, whose replies are judged by the bundle's own world judges (as tests/test_bundled_mini.py does).

One server per module (uvicorn in a thread, loopback, an API key); the diffusion steps are lowered per
request through the documented ``codi2`` extension to keep each test to a few seconds.
"""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "checkpoints" / "codi2-mini"
KEY = "test-key-123"
FAST = {"codi2": {"steps": 10}}

pytestmark = [pytest.mark.skipif(not (BUNDLE / "config.yaml").is_file(), reason="checkpoints/codi2-mini not built"),
              pytest.mark.usefixtures("one_thread")]

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def mini():
    from codi2.pipeline import CoDi2Pipeline

    return CoDi2Pipeline.from_pretrained(BUNDLE, device="cpu")


@pytest.fixture(scope="module")
def judges():
    from data_builders.world.judges import Judges

    return Judges.load(BUNDLE / "judges")


@pytest.fixture(scope="module")
def media_root(tmp_path_factory):
    return tmp_path_factory.mktemp("media-root")


@pytest.fixture(scope="module")
def server(mini, media_root, tmp_path_factory):
    from codi2.chat_state import ServeConfig
    from serve.api import ApiConfig, ApiServer, create_app

    app = create_app(mini, ServeConfig(), ApiConfig(api_key=KEY, media_root=str(media_root)),
                     workdir=tmp_path_factory.mktemp("api"))
    srv = ApiServer(app).start()
    yield app, srv
    srv.stop()


def client(srv, key: str = KEY):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0, timeout=120)


def data_url(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def render(shape: str, colour: str, size: str, position: str, seed: int = 3):
    from data_builders.world.world import WorldObject, render_image

    return render_image(WorldObject(shape, colour, size, position), seed)


def ask_about(img, text: str = "What is in this picture?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(img)}},
                                         {"type": "text", "text": text}]}]


def caption_attrs(text: str) -> dict:
    from data_builders.world.world import parse_caption

    return parse_caption(text)


def labels(scores: dict) -> dict:
    return {k: v[0] for k, v in scores.items()}


def content_parts(message) -> list[dict]:
    c = message.content
    return c if isinstance(c, list) else [{"type": "text", "text": c}]


def image_of(message):
    from PIL import Image

    urls = [p["image_url"]["url"] for p in content_parts(message) if p["type"] == "image_url"]
    assert len(urls) == 1, content_parts(message)
    head, data = urls[0].split(",", 1)
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


# ----------------------------------------------------------------------------- behaviour, judged
def test_image_in_text_out_names_the_pictures_attributes(server):
    _, srv = server
    c = client(srv)
    for obj in [("square", "blue", "large", "left"), ("triangle", "yellow", "small", "top")]:
        r = c.chat.completions.create(model="codi2-mini", messages=ask_about(render(*obj)), seed=0)
        text = r.choices[0].message.content
        assert isinstance(text, str) and r.choices[0].finish_reason == "stop"
        got = caption_attrs(text)
        assert {k: got.get(k) for k in ("shape", "colour", "size")} == dict(zip(("shape", "colour", "size"), obj[:3])), text
        assert r.usage.prompt_tokens > 65 and r.usage.completion_tokens > 3  # 65 image slots in the prompt
        assert r.model == "codi2-mini" and r.id.startswith("chatcmpl-")


def test_video_and_audio_inputs(server, tmp_path):
    from codi2.media import save_audio, save_video
    from data_builders.world.world import WorldObject, render_sound, render_video

    _, srv = server
    c = client(srv)
    clip = save_video(render_video(WorldObject("square", "green", "large"), "up", 1), tmp_path / "clip.mp4")
    url = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
    r = c.chat.completions.create(model="codi2-mini", seed=0, messages=[{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "Describe this video."}]}])
    got = caption_attrs(r.choices[0].message.content)
    assert (got.get("colour"), got.get("direction")) == ("green", "up"), r.choices[0].message.content
    wav = save_audio(render_sound(WorldObject("circle", "blue", "large"), 1), tmp_path / "tone.wav")
    r = c.chat.completions.create(model="codi2-mini", seed=0, messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav.read_bytes()).decode(), "format": "wav"}},
        {"type": "text", "text": "What makes this sound?"}]}])
    got = caption_attrs(r.choices[0].message.content)
    assert (got.get("shape"), got.get("colour")) == ("circle", "blue"), r.choices[0].message.content
    # a picture sent as a video is refused, naming the part
    with pytest.raises(openai.BadRequestError, match="expected a video") as e:
        c.chat.completions.create(model="codi2-mini", messages=[{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": data_url(render("circle", "red", "large", "left"))}},
            {"type": "text", "text": "Describe this video."}]}])
    assert e.value.param == "messages[0].content[0].video_url.url"


def test_text_to_picture_and_picture_edit(server, judges):
    _, srv = server
    c = client(srv)
    r = c.chat.completions.create(model="codi2-mini", seed=0, extra_body=FAST,
                                  messages=[{"role": "user", "content": "Draw a small red circle at the top."}])
    msg = r.choices[0].message
    text = content_parts(msg)[0]["text"]
    assert "[image 1]" in text  # a text-only client still sees where the picture is
    pic = image_of(msg)
    assert labels(judges.score_image(pic)) == {"shape": "circle", "colour": "red", "size": "small", "position": "top"}
    listing = msg.model_extra["codi2"]["media"]
    assert [(m["type"], m["index"], m["placeholder"]) for m in listing] == [("image", 1, "[image 1]")]
    assert base64.b64decode(listing[0]["data"]).startswith(b"\x89PNG")
    # the picture back in, with an instruction: the colour changes, the rest stays
    sq = render("square", "blue", "large", "left")
    r = c.chat.completions.create(model="codi2-mini", seed=0, extra_body=FAST,
                                  messages=ask_about(sq, "Make it green."))
    assert labels(judges.score_image(image_of(r.choices[0].message))) == {
        "shape": "square", "colour": "green", "size": "large", "position": "left"}
    # a client that takes text only: content is a plain string, the picture is in the codi2 field
    r = c.chat.completions.create(model="codi2-mini", seed=0, extra_body={"codi2": {"steps": 10, "media_parts": False}},
                                  messages=[{"role": "user", "content": "Draw a small red circle at the top."}])
    assert r.choices[0].message.content == text


def test_modalities_text_audio_returns_a_judged_wav(server, judges, tmp_path):
    from codi2.media import load_audio

    _, srv = server
    r = client(srv).chat.completions.create(
        model="codi2-mini", seed=0, modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"},
        extra_body=FAST, messages=[{"role": "user", "content": "Play the sound of a large green star."}])
    msg = r.choices[0].message
    assert msg.audio is not None and msg.audio.transcript == msg.content and "[audio 1]" in msg.content
    wav = tmp_path / "reply.wav"
    wav.write_bytes(base64.b64decode(msg.audio.data))
    assert wav.read_bytes()[:4] == b"RIFF"
    assert labels(judges.score_audio(load_audio(wav))) == {"shape": "star", "colour": "green", "size": "large"}
    # modalities=["text"]: no media at all, even when asked for a sound
    r = client(srv).chat.completions.create(model="codi2-mini", seed=0, modalities=["text"], extra_body=FAST,
                                            messages=[{"role": "user", "content": "Play the sound of a large green star."}])
    assert r.choices[0].message.audio is None and "codi2" not in (r.choices[0].message.model_extra or {})


def test_streaming_chunks_arrive_early_and_join_to_the_plain_reply(server):
    _, srv = server
    c = client(srv)
    kw = dict(model="codi2-mini", seed=7, temperature=0.9, extra_body={"codi2": {"steps": 20}},
              messages=[{"role": "user", "content": "Show me a large purple star on the right."}])
    plain = c.chat.completions.create(**kw).choices[0].message
    t0 = time.monotonic()
    seen = []  # (time, kind, value)
    for chunk in c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        now = time.monotonic() - t0
        if not chunk.choices:
            seen.append((now, "usage", chunk.usage))
            continue
        ch = chunk.choices[0]
        extra = ch.delta.model_extra or {}
        if ch.delta.content:
            seen.append((now, "text", ch.delta.content))
        if "codi2" in extra:
            seen.append((now, "media", extra["codi2"]["media"][0]))
        if ch.finish_reason:
            seen.append((now, "finish", ch.finish_reason))
    kinds = [k for _, k, _ in seen]
    assert kinds.count("text") >= 3 and kinds[-2:] == ["finish", "usage"], kinds
    first_text = next(t for t, k, _ in seen if k == "text")
    media_t, _, media = next(x for x in seen if x[1] == "media")
    assert first_text < media_t < seen[-1][0]  # the words came while the picture was still being made
    streamed = "".join(v for _, k, v in seen if k == "text")
    assert streamed == content_parts(plain)[0]["text"]
    assert media["data"] == content_parts(plain)[1]["image_url"]["url"].split(",", 1)[1]  # the same picture
    assert seen[-1][2].completion_tokens > 0


def test_stop_and_max_tokens_are_honoured(server):
    _, srv = server
    c = client(srv)
    msgs = ask_about(render("square", "blue", "large", "left"))
    full = c.chat.completions.create(model="codi2-mini", seed=0, messages=msgs).choices[0].message.content
    assert "blue" in full
    r = c.chat.completions.create(model="codi2-mini", seed=0, messages=msgs, stop=["blue"])
    assert r.choices[0].message.content == full[:full.index("blue")].rstrip()
    assert r.choices[0].finish_reason == "stop"
    streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="codi2-mini", seed=0, messages=msgs, stop="blue", stream=True) if ch.choices)
    assert streamed == r.choices[0].message.content
    r = c.chat.completions.create(model="codi2-mini", seed=0, messages=msgs, max_completion_tokens=3)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    assert len(r.choices[0].message.content) < len(full)


def test_images_generate_and_edit_return_judged_pngs(server, judges):
    from PIL import Image

    _, srv = server
    c = client(srv)
    r = c.images.generate(model="codi2-mini", prompt="Draw a small orange triangle on the left.", n=2, size="64x64",
                          extra_body={"seed": 0, "steps": 10})
    assert len(r.data) == 2
    pics = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in r.data]
    assert [p.format for p in pics] == ["PNG", "PNG"] and pics[0].size == (64, 64)
    for p in pics:
        assert labels(judges.score_image(p.convert("RGB"))) == {
            "shape": "triangle", "colour": "orange", "size": "small", "position": "left"}
    assert pics[0].tobytes() != pics[1].tobytes()  # seeds 0 and 1
    buf = io.BytesIO()
    render("circle", "green", "large", "bottom").save(buf, format="PNG")
    r = c.images.edit(model="codi2-mini", image=("circle.png", buf.getvalue(), "image/png"), prompt="Make it purple.",
                      extra_body={"seed": 0, "steps": 10})
    edited = Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json)))
    assert edited.format == "PNG"
    assert labels(judges.score_image(edited.convert("RGB"))) == {
        "shape": "circle", "colour": "purple", "size": "large", "position": "bottom"}
    with pytest.raises(openai.BadRequestError, match="64x64") as e:
        c.images.generate(model="codi2-mini", prompt="a red circle", size="1024x1024")
    assert e.value.param == "size"


def test_file_urls_work_under_the_media_root_only(server, media_root):
    _, srv = server
    path = media_root / "sub dir" / "pic.png"
    path.parent.mkdir()
    render("star", "red", "large", "center").save(path)
    r = client(srv).chat.completions.create(model="codi2-mini", seed=0, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": path.as_uri()}}, {"type": "text", "text": "What is in this picture?"}]}])
    got = caption_attrs(r.choices[0].message.content)
    assert (got.get("shape"), got.get("colour")) == ("star", "red")
    escape = media_root / "link"
    escape.symlink_to("/etc/passwd")
    for url in ("file:///etc/passwd", f"file://{media_root}/../../etc/passwd", escape.as_uri()):
        with pytest.raises(openai.BadRequestError, match="outside the media root") as e:
            client(srv).chat.completions.create(model="codi2-mini", messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "hi"}]}])
        assert e.value.param == "messages[0].content[0].image_url.url"


# ----------------------------------------------------------------------------- refusals
def _wav(seconds: float) -> str:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(8000 * seconds), dtype="float32"), 8000, format="WAV", subtype="PCM_U8")
    return base64.b64encode(buf.getvalue()).decode()


BAD = {
    "corrupt image": (dict(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(
            b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20).decode()}}, {"type": "text", "text": "hi"}]}]),
        400, "messages[0].content[0].image_url.url", "messages[0].content[0].image_url.url"),
    "oversized audio": (dict(messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": _wav(45.0), "format": "wav"}},
        {"type": "text", "text": "What makes this sound?"}]}]),
        400, "messages[0].content[0].input_audio.data", "45.0 s long, over the limit of 30 s"),
    "file outside the root": (dict(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}, {"type": "text", "text": "hi"}]}]),
        400, "messages[0].content[0].image_url.url", "outside the media root"),
    "unknown model": (dict(model="gpt-4o"), 404, "model", "'gpt-4o' does not exist"),
    "invalid temperature": (dict(temperature=3.5), 400, "temperature", "allowed: 0..2"),
    "n above 1": (dict(n=2), 400, "n", "only one choice"),
    "long message": (dict(messages=[{"role": "user", "content": "x" * 2001}]), 400, "messages[0].content",
                     "over the limit of 2000"),
    "missing API key": (dict(), 401, None, "missing API key"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server, case):
    app, srv = server
    body, status, param, words = BAD[case]
    kw = {"model": "codi2-mini", "messages": [{"role": "user", "content": "hi"}], **body}
    if case == "missing API key":  # the SDK insists on some key; send none at all
        import httpx

        r = httpx.post(srv.url + "/v1/chat/completions", json=kw, timeout=30)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        err = r.json()["error"]
        with pytest.raises(openai.AuthenticationError):
            client(srv, key="wrong").chat.completions.create(**kw)
    else:
        with pytest.raises(openai.APIStatusError) as e:
            client(srv).chat.completions.create(**kw)
        assert e.value.status_code == status
        err = e.value.body
    assert set(err) == {"message", "type", "param", "code"}, err
    assert err["param"] == param and words in err["message"], err
    assert "/tmp" not in err["message"] and str(REPO) not in err["message"], "a server path leaked"
    assert app.state.engine.in_flight == 0
    r = client(srv).chat.completions.create(model="codi2-mini", seed=0,
                                            messages=ask_about(render("circle", "blue", "small", "center")))
    assert caption_attrs(r.choices[0].message.content).get("colour") == "blue"


def test_unknown_fields_are_ignored_and_models_are_listed(server):
    _, srv = server
    c = client(srv)
    r = c.chat.completions.create(model="codi2-mini", seed=0, messages=ask_about(render("square", "red", "large", "top")),
                                  user="someone", presence_penalty=0.0, extra_body={"some_future_field": {"x": 1}})
    assert "red" in r.choices[0].message.content
    models = c.models.list().data
    assert [m.id for m in models] == ["codi2-mini"]
    assert models[0].model_extra["codi2"]["output_modalities"] == ["text", "image", "audio", "video"]
    assert c.models.retrieve("codi2-mini").id == "codi2-mini"


# ----------------------------------------------------------------------------- concurrency
def test_four_clients_at_once_each_get_their_own_reply(server):
    _, srv = server
    objs = [("circle", "red", "large", "left"), ("square", "green", "small", "top"),
            ("triangle", "blue", "large", "right"), ("star", "yellow", "small", "bottom")]
    results: dict[int, str] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(objs))

    def ask(i: int) -> None:
        try:
            c = client(srv)
            barrier.wait()
            r = c.chat.completions.create(model="codi2-mini", seed=0, messages=ask_about(render(*objs[i])))
            results[i] = r.choices[0].message.content
        except BaseException as e:  # re-raised below
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(objs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for i, obj in enumerate(objs):
        got = caption_attrs(results[i])
        assert (got.get("shape"), got.get("colour")) == obj[:2], (obj, results[i])


def test_one_lock_a_bounded_queue_and_cancel_on_disconnect(mini, tmp_path):
    """Generation waits for the shared model lock; a full queue answers 429; a client that goes away cancels."""
    import httpx

    from codi2.chat_state import ServeConfig
    from serve.api import ApiServer, create_app

    lock = threading.Lock()  # as the Gradio app's SessionManager.model_lock
    app = create_app(mini, ServeConfig(max_queue_size=1), model_lock=lock, workdir=tmp_path)
    engine = app.state.engine
    srv = ApiServer(app).start()
    try:
        c = client(srv)
        msgs = ask_about(render("circle", "orange", "large", "center"))
        out: dict = {}
        lock.acquire()  # another front end is generating
        threads = [threading.Thread(target=lambda k=k: out.__setitem__(k, c.chat.completions.create(
            model="codi2-mini", seed=0, messages=msgs))) for k in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while engine.in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.in_flight == 2  # one would generate, one waits: the queue (max_queue_size=1) is full
        with pytest.raises(openai.RateLimitError, match="max_queue_size=1") as e:
            c.chat.completions.create(model="codi2-mini", messages=msgs)
        assert e.value.code == "queue_full"
        time.sleep(0.3)
        assert not out, "a turn ran while another front end held the model lock"
        lock.release()
        for t in threads:
            t.join(timeout=60)
        assert [caption_attrs(out[k].choices[0].message.content).get("colour") for k in range(2)] == ["orange"] * 2
        # a streaming client that disconnects during the diffusion cancels its turn
        before = engine.cancelled_turns
        with httpx.stream("POST", srv.url + "/v1/chat/completions", timeout=60, json={
                "model": "codi2-mini", "seed": 0, "stream": True, "codi2": {"steps": 100},
                "messages": [{"role": "user", "content": "Draw a large red square on the left."}]}) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    break  # the first words: the picture is not made yet; hang up
        deadline = time.monotonic() + 30
        while (engine.in_flight or lock.locked()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.cancelled_turns == before + 1 and engine.in_flight == 0 and not lock.locked()
    finally:
        if lock.locked():
            lock.release()
        srv.stop()


# ----------------------------------------------------------------------------- history and the command line
def test_a_replayed_history_is_the_context_the_model_wrote(mini):
    """A reply sent back as history (text with its placeholder) encodes to the same tokens as the turn that made it."""
    from codi2.chat_state import ServeConfig
    from codi2.conversation import Message, Part
    from codi2.generation import SamplingOptions
    from serve.openai_format import MediaReader, parse_messages

    user = Message("user", [Part.from_text("Draw a small red circle at the top.")])
    session = mini.session()
    reply = session.send(user, SamplingOptions(seed=0, steps=4))
    assert [p.type for p in reply.content] == ["text", "image"]
    sent_back = [{"role": "user", "content": "Draw a small red circle at the top."},
                 {"role": "assistant", "content": [{"type": "text", "text": f"{reply.content[0].text} [image 1]"},
                                                   {"type": "image_url", "image_url": {"url": "data:,"}}]},
                 {"role": "user", "content": "Thanks."}]
    history, new = parse_messages(sent_back, MediaReader(ServeConfig(), Path("."), None, ["image"]), ServeConfig(),
                                  ["image", "audio", "video"])
    b = mini.model.builder
    assert b.encode(history).ids == b.encode(session.history).ids
    assert new.text == "Thanks."


def test_command_line(tmp_path, capsys):
    import argparse

    import serve.api as api_mod
    import serve.app as app_mod

    assert api_mod.main(["--model", str(tmp_path / "missing")]) == 2
    assert "codi2 init" in capsys.readouterr().err
    p = argparse.ArgumentParser()
    app_mod.register(p.add_subparsers(dest="cmd"))
    args = p.parse_args(["serve", "--api", "--api-key", "k", "--media-root", str(tmp_path)])
    assert args.api and args.func is app_mod.run and args.host == "127.0.0.1"
    cfg = api_mod.api_config(args)
    assert cfg.api_key == "k" and cfg.media_root == str(tmp_path) and cfg.media_parts


def test_api_and_chat_on_one_port_share_the_model_lock(mini, tmp_path):
    import httpx

    from codi2.chat_state import ServeConfig
    from serve.api import ApiServer
    from serve.app import create_app_with_chat

    app, chat = create_app_with_chat(mini, ServeConfig(), workdir=tmp_path)
    assert app.state.engine.model_lock is chat.manager.model_lock
    srv = ApiServer(app).start()
    try:
        assert "codi2" in httpx.get(srv.url + "/", timeout=30).text  # the Gradio page
        assert httpx.get(srv.url + "/v1/models", timeout=30).json()["data"][0]["id"] == "codi2-mini"
    finally:
        srv.stop()
        chat.manager.close()


def test_reply_text_pieces_join_to_the_text_whatever_the_stop_sequences():
    import random

    from serve.openai_format import ReplyText

    r = ReplyText(["STOP"])
    pieces = [r.add(d) for d in (" Here", " you go:", " ", "ST", "OP and more")] + [r.finish()]
    assert pieces[:2] == ["Here", " you go:"] and "".join(pieces) == r.text == "Here you go:" and r.stopped
    r = ReplyText()
    pieces = [r.add("Sure: "), r.media("image", 1), r.add("and"), r.media("audio", 1), r.add("  "), r.finish()]
    assert "".join(pieces) == r.text == "Sure: [image 1] and [audio 1]"
    rng = random.Random(0)
    for _ in range(2000):  # streamed pieces always join to the final text, which never holds a stop sequence
        stops = rng.sample(["ab", "b ", "  x", "[im", "c"], rng.randint(0, 2))
        r = ReplyText(stops)
        pieces = [r.media("image", 1) if rng.random() < 0.2 else r.add("".join(rng.choice("ab c x") for _ in range(
            rng.randint(0, 4)))) for _ in range(rng.randint(0, 8))] + [r.finish()]
        assert "".join(pieces) == r.text == r.text.strip()
        assert not any(s in r.text for s in stops), (stops, r.text)


def test_messages_are_merged_checked_and_trimmed(tmp_path):
    from codi2.chat_state import ServeConfig
    from serve.openai_format import ApiError, MediaReader, parse_messages

    cfg = ServeConfig(max_turns=2)
    reader = MediaReader(cfg, tmp_path, None, ["image", "audio", "video"])
    outs = ["image", "audio", "video"]
    msgs = [{"role": "system", "content": "be brief"}, {"role": "assistant", "content": "Hello!"}]
    for k in range(3):
        msgs += [{"role": "user", "content": f"q{k}"}, {"role": "user", "content": [{"type": "text", "text": "more"}]},
                 {"role": "assistant", "content": f"a{k} [audio 1] and [video 1] done", "audio": {"id": "x"}}]
    msgs.append({"role": "user", "content": "last"})
    history, user = parse_messages(msgs, reader, cfg, outs)
    assert [m.role for m in history] == ["user", "assistant"] * 2  # max_turns=2; the greeting and system dropped
    assert [p.text for p in history[0].content] == ["q1", "more"]
    assert [p.type for p in history[1].content] == ["text", "audio", "text", "video", "text"]  # audio id: no extra span
    assert user.text == "last"
    history, _ = parse_messages(msgs, reader, cfg, ["image"])  # a model without audio/video out: the text stays text
    assert [p.type for p in history[1].content] == ["text"] and "[audio 1]" in history[1].content[0].text
    for bad, words in [([{"role": "tool", "content": "x"}], "not supported"), ([], "non-empty list"),
                       (msgs[:-1], "last message must be a user message"),
                       ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}],
                        "fetches nothing")]:
        with pytest.raises(ApiError, match=words):
            parse_messages(bad, reader, cfg, outs)
