"""The playground page (`d2v/server/playground/`): its files and flags over HTTP (an app with a dummy
engine), and the page itself in a real headless browser (Debian's chromium driven by Playwright)
against a real `d2v serve` of the demo models (the session's, shared with test_demo_models.py):
dropped digit PNGs, an uploaded spoken digit WAV, a recording from the (fake) microphone, a transcript,
the similarity matrix of typed sentences, the API's 413 and 415 messages; and against a second server
with an API key and a small body limit: the key asked for and sent as a Bearer header, and the 413 of
a file over the limit.

Without chromium or Playwright the browser tests skip, except where $CI is set (CI runs
scripts/setup.sh, which installs both): there they fail. With $D2V_PLAYGROUND_SCREENSHOTS=DIR the
browser tests also write the README's screenshots (DIR/playground-*.png)."""

import asyncio
import base64
import os
import re
import shutil
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import httpx
import numpy as np
import pytest
from dummy import DummyBackend, DummyDecoder
from harness import Server
from media import audio_bytes, image_bytes, photo, spoken
from PIL import Image
from realdata import speak

import d2v
from d2v.server.app import create_app
from d2v.server.config import ServeConfig
from d2v.server.engine import Engine
from d2v.server.playground import asset_names

ROOT = Path(d2v.__file__).resolve().parents[1]
PAYLOAD_LIMIT = 400_000
KEY = "playground-key-42"


# ---- over HTTP, no browser -------------------------------------------------------------------------


def get(cfg: ServeConfig, *paths: str, headers: dict[str, str] | None = None) -> list[httpx.Response]:
    """GET each path from an app over a dummy engine (httpx's ASGI transport)."""
    app = create_app(cfg, Engine(cfg, [DummyBackend(labels=["a", "b"])], decoders={"dummy": DummyDecoder()}))

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost",
                                     headers=headers) as client, app.router.lifespan_context(app):
            return [await client.get(p) for p in paths]

    return asyncio.run(main())


def test_the_page_and_its_files_are_served_with_their_media_types():
    page, alias, script, style, missing = get(ServeConfig(), "/", "/playground", "/playground/playground.js",
                                              "/playground/playground.css", "/playground/secret.txt")
    assert page.status_code == alias.status_code == 200 and page.content == alias.content
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    for r in (page, script, style):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'self'" in r.headers["content-security-policy"]
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    # every file the page loads is one the server has: nothing comes from elsewhere (no CDN)
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert loaded and all(u.startswith(("/playground/", "/docs", "data:")) for u in loaded), loaded
    assert not re.search(r"https?://", script.text + style.text)


def test_no_playground_and_the_api_key_default():
    off, = get(ServeConfig(playground=False), "/")
    assert off.status_code == 404
    page, script, models = get(ServeConfig(api_key="k"), "/", "/playground/playground.js", "/models")
    assert page.status_code == script.status_code == models.status_code == 401  # off by default with a key
    page, script, models = get(ServeConfig(api_key="k", playground=True), "/", "/playground/playground.js", "/models")
    ok, = get(ServeConfig(api_key="k", playground=True), "/models", headers={"Authorization": "Bearer k"})
    assert page.status_code == script.status_code == 200  # the page is open...
    assert models.status_code == 401 and ok.status_code == 200  # ...its API calls are not


def test_the_page_is_not_in_the_api_document():
    spec = create_app(ServeConfig()).openapi()
    assert not any(p == "/" or p.startswith("/playground") for p in spec["paths"])


def test_the_flags_and_the_default():
    from d2v.cli import build_parser
    from d2v.configuration import config_from_args

    parser = build_parser()
    cfgs = [config_from_args(ServeConfig, parser.parse_args(["serve", *a]))
            for a in ([], ["--playground"], ["--no-playground"], ["--api-key", "k"], ["--api-key", "k", "--playground"])]
    assert [c.playground for c in cfgs] == [None, True, False, None, True]
    assert [c.playground_on() for c in cfgs] == [True, True, False, False, True]


def test_the_files_are_package_data():
    """A wheel or an installed copy ships every file the page is made of."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = globs["d2v.server.playground"]
    directory = ROOT / "d2v" / "server" / "playground"
    assert sorted(p.name for p in directory.iterdir() if p.suffix != ".py" and p.is_file()) == sorted(asset_names())
    assert all(any(fnmatch(name, p) for p in patterns) for name in asset_names())


# ---- in a real browser -------------------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI runs scripts/setup.sh, which installs it)")
    pytest.skip(reason)


def chromium_path() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
    if found is None:
        _unavailable("Debian's chromium is not installed (apt-get install chromium; scripts/setup.sh does)")
    return found


@pytest.fixture(scope="module")
def microphone(tmp_path_factory) -> Path:
    """What the fake microphone hears: "six", then a second of silence (chromium loops the file)."""
    wav = np.concatenate([speak("six"), np.zeros(16000, np.float32)])
    path = tmp_path_factory.mktemp("microphone") / "six.wav"
    path.write_bytes(audio_bytes(wav, 16000))
    return path


@pytest.fixture(scope="module")
def browser(microphone):
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def keyed() -> Server:
    """`d2v serve` of the digits model with an API key, the playground on, and a small body limit (400 kB:
    a photo is too large)."""
    s = Server(["--model", str(ROOT / "models" / "digits-image"), "--api-key", KEY, "--playground",
                "--max-payload-bytes", str(PAYLOAD_LIMIT), "--no-warmup"])
    yield s
    s.stop()


@pytest.fixture
def demo(demo_server) -> Server:
    """`d2v serve` with no arguments (the demo models), the session's (tests/server/conftest.py)."""
    return demo_server


@pytest.fixture
def page(browser):
    """A fresh page; the test fails if the page's script threw or logged an error."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" and "status of 4" not in m.text else None)
    yield p
    context.close()
    assert errors == []


def screenshot(page, name: str) -> None:
    directory = os.environ.get("D2V_PLAYGROUND_SCREENSHOTS")
    if directory:
        page.screenshot(path=str(Path(directory) / f"playground-{name}.png"), full_page=True)


def digit_png(i: int) -> bytes:
    """scikit-learn digit `i` as the 8x8 grey PNG of `d2v data`'s digits."""
    from sklearn.datasets import load_digits

    pixels = np.round(load_digits().images[i] * 255.0 / 16.0).astype(np.uint8)
    return image_bytes(Image.fromarray(pixels, "L"))


def open_model(page, url: str, model: str) -> None:
    page.goto(url + "/")
    page.click(f".model[data-model='{model}']")
    page.wait_for_selector(f".model[data-model='{model}'][aria-checked='true']")


def drop(page, files: list[tuple[str, bytes, str]]) -> None:
    """Drop files on the drop zone, as a user dragging them from a file manager."""
    data = page.evaluate_handle("""files => {
        const transfer = new DataTransfer();
        for (const [name, b64, type] of files) {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            transfer.items.add(new File([bytes], name, {type}));
        }
        return transfer;
    }""", [[n, base64.b64encode(b).decode(), t] for n, b, t in files])
    page.dispatch_event("#drop", "drop", {"dataTransfer": data})


def run(page) -> None:
    page.click("#run")
    page.wait_for_selector("body[data-state='done']")


def top_labels(page) -> list[str]:
    return page.eval_on_selector_all(".classification", "cards => cards.map(c => c.querySelector('.prediction')"
                                     ".dataset.label)")


def similarity(page) -> np.ndarray:
    cells = page.eval_on_selector_all("td[data-sim]", "cells => cells.map(c => [+c.dataset.row, +c.dataset.col, "
                                      "+c.dataset.sim])")
    n = round(len(cells) ** 0.5)
    m = np.zeros((n, n))
    for i, j, v in cells:
        m[int(i), int(j)] = v
    return m


def test_dropped_digits_show_their_classes_and_similarities(page, demo):
    open_model(page, demo.url, "digits-image")
    drop(page, [(f"digit-{d}.png", digit_png(d), "image/png") for d in (0, 3, 4)])
    assert page.locator("#input-list li").count() == 3
    run(page)
    assert top_labels(page) == ["0", "3", "4"]
    scores = page.eval_on_selector_all(".classification:first-child .prediction", "p => p.map(x => +x.dataset.score)")
    assert len(scores) == 5 and scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    assert similarity(page).shape == (3, 3)
    timings = page.locator("#timings tr[data-route='/classify'] td").all_inner_texts()
    assert timings[1] == "200" and all(t.endswith(" ms") for t in timings[2:]), timings  # the server's headers
    screenshot(page, "image")


def test_an_uploaded_spoken_digit_and_a_recording_are_classified(page, demo):
    open_model(page, demo.url, "spoken-digits-audio")
    page.set_input_files("#file-picker", files=[{"name": "three.wav", "mimeType": "audio/wav",
                                                 "buffer": spoken("three")}])
    page.click("#record")  # the fake microphone says "six" and is silent for a second, over and over
    page.wait_for_selector("#record.recording")
    page.wait_for_timeout(2500)
    page.click("#record")
    page.wait_for_selector("#input-list li:nth-child(2)")
    assert "recording-1.wav" in page.locator("#input-list li").all_inner_texts()[1]
    run(page)
    assert page.locator("#errors .error").all_inner_texts() == []
    labels = top_labels(page)
    assert labels[0] == "three" and len(labels) == 2  # the recording, a WAV the page wrote, was decoded
    print("the recording of 'six' was classified as", labels[1])
    screenshot(page, "audio")


def test_a_speech_recognizer_shows_its_transcript(page, demo):
    open_model(page, demo.url, "spoken-commands-ctc")
    page.set_input_files("#file-picker", files=[{"name": "stop.wav", "mimeType": "audio/wav", "buffer": spoken("stop")}])
    run(page)
    assert page.locator(".transcription .transcript").all_inner_texts() == ["STOP"]
    assert page.locator(".classification").count() == 0  # a recognizer has no /classify


SENTENCES = ["the dog barked at the cat in the garden", "a dog was barking at a cat in the garden",
             "the bank raised its interest rates"]


def test_typed_sentences_show_a_similarity_matrix_with_the_similar_pair_highest(page, demo):
    open_model(page, demo.url, "wordnet-text")
    page.fill("#texts", "\n".join(SENTENCES))
    run(page)
    m = similarity(page)
    off = m - np.eye(3) * 10
    assert np.unravel_index(off.argmax(), m.shape) in ((0, 1), (1, 0))
    assert page.locator(".neighbours li[data-index='0']").get_attribute("data-nearest") == "1"
    # the page's cosines are those of the API's embeddings
    r = httpx.post(demo.url + "/embed", json={"model": "wordnet-text", "inputs": SENTENCES})
    x = np.array([d["embedding"] for d in r.json()["data"]])
    np.testing.assert_allclose(m, x @ x.T, atol=1e-6)
    screenshot(page, "text")


def test_errors_show_the_api_message(page, demo):
    open_model(page, demo.url, "digits-image")
    huge = image_bytes(Image.new("1", (6400, 6400)))  # 41 megapixels in a 5 kB file
    drop(page, [("huge.png", huge, "image/png")])
    run(page)
    error = page.locator("#errors .error").first
    assert error.get_attribute("data-status") == "413" and error.get_attribute("data-type") == "input_too_large"
    assert "40960000 pixels" in error.inner_text() and "40000000" in error.inner_text(), error.inner_text()
    assert page.locator("#results").is_hidden()
    page.click("#clear")
    drop(page, [("three.wav", spoken("three"), "audio/wav")])
    run(page)
    error = page.locator("#errors .error").first
    assert error.get_attribute("data-status") == "415"
    assert "media type 'audio/wav' is not image" in error.inner_text()


def test_with_an_api_key_the_page_asks_for_it_and_sends_it_as_a_bearer_header(page, keyed):
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
    page.goto(keyed.url + "/")
    page.wait_for_selector("#key-panel:not([hidden])")
    page.fill("#api-key", "wrong")
    page.click("#key-form button")
    page.wait_for_selector("#key-hint:has-text('refused')")
    page.fill("#api-key", KEY)
    page.click("#key-form button")
    page.wait_for_selector(".model[data-model='digits-image'][aria-checked='true']")
    drop(page, [("digit-0.png", digit_png(0), "image/png")])
    run(page)
    assert top_labels(page) == ["0"]
    assert all(KEY not in url for url, _ in sent)  # never in a URL
    api_calls = [auth for url, auth in sent if url.endswith(("/classify", "/embed"))]
    assert api_calls and all(a == f"Bearer {KEY}" for a in api_calls)
    # a file over the server's body limit: the API's 413 message
    page.click("#clear")
    big = image_bytes(photo(0, None))
    assert len(big) > PAYLOAD_LIMIT
    drop(page, [("china.png", big, "image/png")])
    run(page)
    error = page.locator("#errors .error").first
    assert error.get_attribute("data-status") == "413" and error.get_attribute("data-type") == "payload_too_large"
    assert re.search(rf"the body of \d+ bytes exceeds the limit of {PAYLOAD_LIMIT}", error.inner_text())
