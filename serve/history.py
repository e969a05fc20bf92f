"""The browser's copy of a user's conversations (kept in ``gr.BrowserState``, the page's local storage).

    {"schema": 1, "current": "<conversation id>" | None,
     "conversations": [<ChatState.snapshot()>, …]}        (newest first)

The server never trusts it: :meth:`codi2.chat_state.SessionManager.resume` checks a snapshot like an upload.
Local storage holds a few MB per site, so the copy is kept under :data:`MAX_STORE_CHARS`: the media inside the
oldest conversations go first (those conversations then restore their media only while the server still has
them), then the oldest conversations.
"""
from __future__ import annotations

import json
import time
from typing import Any, Optional

MAX_CONVERSATIONS = 20
MAX_STORE_CHARS = 3_000_000  # JSON characters (local storage: ~5 M characters per site, after encryption)


def empty_store() -> dict:
    return {"schema": 1, "current": None, "conversations": []}


def clean_store(store: Any) -> dict:
    """A usable store from whatever the browser sent (anything malformed is dropped)."""
    if not isinstance(store, dict) or store.get("schema") != 1 or not isinstance(store.get("conversations"), list):
        return empty_store()
    convs = [c for c in store["conversations"] if isinstance(c, dict) and isinstance(c.get("id"), str)]
    current = store.get("current") if isinstance(store.get("current"), str) else None
    return {"schema": 1, "current": current, "conversations": convs[:MAX_CONVERSATIONS]}


def find(store: dict, conversation_id: Optional[str]) -> Optional[dict]:
    return next((c for c in store["conversations"] if c.get("id") == conversation_id), None)


def put(store: dict, snapshot: dict, max_chars: int = MAX_STORE_CHARS) -> dict:
    """The store with ``snapshot`` first (replacing the copy with its id), kept under ``max_chars``."""
    convs = [snapshot] + [c for c in store["conversations"] if c.get("id") != snapshot.get("id")]
    convs = convs[:MAX_CONVERSATIONS]
    out = {"schema": 1, "current": snapshot.get("id"), "conversations": convs}
    for conv in reversed(convs[1:]):  # oldest first: drop their inline media
        if len(json.dumps(out)) <= max_chars:
            return out
        for m in conv.get("media") or []:
            if isinstance(m, dict):
                m["data"] = None
    while len(json.dumps(out)) > max_chars and len(convs) > 1:
        convs.pop()
    if len(json.dumps(out)) > max_chars:  # the current one alone is too big: keep its text
        for m in snapshot.get("media") or []:
            m["data"] = None
    return out


def remove(store: dict, conversation_id: str) -> dict:
    convs = [c for c in store["conversations"] if c.get("id") != conversation_id]
    current = None if store.get("current") == conversation_id else store.get("current")
    return {"schema": 1, "current": current, "conversations": convs}


def choices(store: dict) -> list[tuple[str, str]]:
    """(label, id) for a list of past conversations: the title and when it was last used."""
    out = []
    for c in store["conversations"]:
        when = c.get("updated")
        stamp = time.strftime("%d %b %H:%M", time.localtime(when)) if isinstance(when, (int, float)) else ""
        title = str(c.get("title") or "Untitled")
        out.append((f"{title[:40]}{'…' if len(title) > 40 else ''} · {stamp}".strip(" ·"), c["id"]))
    return out
