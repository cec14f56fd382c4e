"""Open a page in headless Chromium and report what a reader would see go wrong.

A tiny client of the Chrome DevTools Protocol over one websocket: it loads the page, collects
console errors, uncaught exceptions and browser log errors, the URL of every request, the
state of every ``<img>`` once the page has loaded and the text it shows, and takes a
full-page screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import websocket

CHROMIUM = shutil.which("chromium")

#: After load, wait for every image to decode (or fail), then list their states.
_IMAGES = """
Promise.all(Array.from(document.images, i => i.decode().catch(() => null))).then(() =>
  Array.from(document.images, i => ({src: i.src.slice(0, 60), complete: i.complete,
                                     width: i.naturalWidth, height: i.naturalHeight})))
"""


@dataclass
class PageCheck:
    """What loading one page showed."""

    errors: list[str]  # console errors, uncaught exceptions, browser log errors
    images: list[dict]  # src (first 60 characters), complete, width, height
    requests: list[str]  # every URL the page asked for
    screenshot: bytes  # full page, PNG
    text: str = ""  # what the page shows as text (document.body.innerText)

    def problems(self) -> list[str]:
        """Console errors, images that did not load, and requests that left the page's file."""
        found = [f"error: {e}" for e in self.errors]
        found += [
            f"image not loaded: {image['src']}"
            for image in self.images
            if not (image["complete"] and image["width"] > 0)
        ]
        found += [
            f"fetched: {url}" for url in self.requests if not url.startswith(("file:", "data:"))
        ]
        return found


def check_page(path: Path, *, width: int = 1280, timeout: float = 60) -> PageCheck:
    """Load the local file ``path`` in headless Chromium and check it."""
    with _chromium(timeout) as session:
        session.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
        session.call("Page.navigate", url=path.resolve().as_uri())
        session.wait_for("Page.loadEventFired")
        images = session.call(
            "Runtime.evaluate", expression=_IMAGES, awaitPromise=True, returnByValue=True
        )["result"]["value"]
        size = session.call("Page.getLayoutMetrics")["cssContentSize"]
        shot = session.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )
        text = session.call(
            "Runtime.evaluate", expression="document.body.innerText", returnByValue=True
        )["result"]["value"]
        return PageCheck(
            session.errors(), images, session.requests(), base64.b64decode(shot["data"]), text
        )


class _Session:
    """Commands and events on one page target's websocket."""

    def __init__(self, url: str, timeout: float) -> None:
        self.socket = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        self.events: list[dict] = []
        self.next_id = 0
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str) -> dict:
        seen = [e for e in self.events if e.get("method") == method]
        while not seen:
            message = json.loads(self.socket.recv())
            self.events.append(message)
            if message.get("method") == method:
                return message
        return seen[0]

    def _params(self, method: str) -> list[dict]:
        return [e["params"] for e in self.events if e.get("method") == method]

    def errors(self) -> list[str]:
        found = [
            " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            for p in self._params("Runtime.consoleAPICalled")
            if p["type"] in ("error", "assert")
        ]
        found += [
            p["exceptionDetails"].get("exception", {}).get("description", "")
            or p["exceptionDetails"]["text"]
            for p in self._params("Runtime.exceptionThrown")
        ]
        found += [
            f"{p['entry']['text']} ({p['entry'].get('url', '')})"
            for p in self._params("Log.entryAdded")
            if p["entry"]["level"] == "error"
        ]
        return found

    def requests(self) -> list[str]:
        return [p["request"]["url"] for p in self._params("Network.requestWillBeSent")]


@contextmanager
def _chromium(timeout: float):
    """A headless Chromium of our own (its own process group and profile), and a session on
    its first page; both ended on exit."""
    with tempfile.TemporaryDirectory(prefix="recall-chromium-") as profile:
        process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            port = _devtools_port(Path(profile) / "DevToolsActivePort", process, timeout)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            session = _Session(pages[0]["webSocketDebuggerUrl"], timeout)
            try:
                yield session
            finally:
                session.socket.close()
        finally:
            _end(process)


def _end(process: subprocess.Popen) -> None:
    """Stop our Chromium and its helper processes: its own process group, by id."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _devtools_port(file: Path, process: subprocess.Popen, timeout: float) -> int:
    """The port Chromium chose, from the file it writes into its profile once listening."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with status {process.returncode}")
        if file.exists() and file.read_text().strip():
            return int(file.read_text().split()[0])
        time.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port")
