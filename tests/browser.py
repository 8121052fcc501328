"""A real browser for the tests: Debian's headless Chromium, driven over the DevTools protocol.

An HTTP client sees status codes; a person sees a page whose scripts, styles and images loaded (or
did not) and whose console stayed quiet (or did not). This module loads a page the way a person's
browser does and reports what went wrong: failed requests and console errors, plus screenshots.

It talks to Chromium through ``--remote-debugging-pipe`` (file descriptors 3 and 4, one JSON
message per NUL byte), so it needs nothing outside the standard library and no TCP port.

    with Browser() as browser:
        report = browser.goto("http://127.0.0.1:8080/users/login")
        assert report.ok, report.summary()
        browser.fill_and_submit({"#email": "a@b.c", "#password": "..."}, "#submit")
        browser.screenshot(Path("login.png"))
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

CHROMIUM = "/usr/bin/chromium"
# The flags every launch uses; the profile, pipe, first-run and sync flags are added to them.
BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class BrowserError(RuntimeError):
    """A browser step failed; the message is one line a test failure can show as is."""


@dataclass(frozen=True)
class FailedRequest:
    """A request that did not succeed: a network failure, or a response with status >= 400."""

    url: str
    reason: str  # "HTTP 404" or Chromium's error text, e.g. "net::ERR_CONNECTION_REFUSED"
    resource_type: str = ""


@dataclass(frozen=True)
class ConsoleError:
    """An error the page's console shows: console.error(), an uncaught exception, a log entry."""

    source: str  # "console", "exception" or "log:<Chromium's source>", e.g. "log:network"
    text: str
    url: str = ""


@dataclass
class PageReport:
    """What one navigation did, from the request for the page until the network went idle."""

    url: str
    status: int | None = None  # the main document's HTTP status (the last one, after redirects)
    failed_requests: list[FailedRequest] = field(default_factory=list)
    console_errors: list[ConsoleError] = field(default_factory=list)
    pending_requests: list[str] = field(default_factory=list)  # still open when waiting ended

    @property
    def ok(self) -> bool:
        """True when nothing failed and nothing was left hanging."""
        return not (self.failed_requests or self.console_errors or self.pending_requests)

    def summary(self) -> str:
        """Every problem on its own line, for an assertion message."""
        lines = [f"{self.url}: status {self.status}"]
        lines += [f"  failed request {f.reason}: {f.url}" for f in self.failed_requests]
        lines += [f"  console {c.source}: {c.text} ({c.url})" for c in self.console_errors]
        lines += [f"  still pending: {url}" for url in self.pending_requests]
        return "\n".join(lines)


class MessageBuffer:
    """Splits the pipe's byte stream into messages: Chromium ends each JSON message with NUL."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._pending += data
        *complete, self._pending = self._pending.split(b"\0")
        return [json.loads(chunk) for chunk in complete if chunk.strip()]


def remote_object_text(obj: Mapping[str, Any]) -> str:
    """How DevTools shows one console argument: the value of a primitive, else its description."""
    if "value" in obj:
        value = obj["value"]
        return value if isinstance(value, str) else json.dumps(value)
    if "unserializableValue" in obj:
        return str(obj["unserializableValue"])
    return str(obj.get("description") or obj.get("className") or obj.get("type", ""))


def exception_text(details: Mapping[str, Any]) -> str:
    """An uncaught exception as one line: "Uncaught TypeError: x is undefined"."""
    text = str(details.get("text", "Uncaught"))
    description = str(details.get("exception", {}).get("description", "")).split("\n", 1)[0]
    return f"{text} {description}".strip() if description and description not in text else text


class Recorder:
    """Turns DevTools events into a PageReport and knows when the network is idle.

    Pure bookkeeping (no I/O), fed one event at a time with the time it arrived."""

    def __init__(self, main_frame_id: str = "") -> None:
        self.main_frame_id = main_frame_id
        self.reset("", 0.0)

    def reset(self, url: str, now: float) -> None:
        self.report = PageReport(url=url)
        self._urls: dict[str, tuple[str, str]] = {}  # requestId -> (url, resource type)
        self._inflight: set[str] = set()
        self._last_change = now

    def idle_for(self, now: float) -> float:
        """Seconds without any open request (0 while one is open)."""
        return 0.0 if self._inflight else now - self._last_change

    def pending(self) -> list[str]:
        return sorted(self._urls[rid][0] for rid in self._inflight if rid in self._urls)

    def feed(self, method: str, params: Mapping[str, Any], now: float) -> None:
        handler = self._handlers.get(method)
        if handler is not None:
            handler(self, params, now)

    def _request(self, params: Mapping[str, Any], now: float) -> None:
        rid = str(params["requestId"])
        self._urls[rid] = (str(params["request"]["url"]), str(params.get("type", "")))
        self._inflight.add(rid)
        self._last_change = now

    def _response(self, params: Mapping[str, Any], now: float) -> None:
        response = params["response"]
        status = int(response.get("status", 0))
        if params.get("type") == "Document" and params.get("frameId") == self.main_frame_id:
            self.report.status = status
        if status >= 400:
            self.report.failed_requests.append(
                FailedRequest(str(response["url"]), f"HTTP {status}", str(params.get("type", "")))
            )

    def _finished(self, params: Mapping[str, Any], now: float) -> None:
        self._inflight.discard(str(params["requestId"]))
        self._last_change = now

    def _failed(self, params: Mapping[str, Any], now: float) -> None:
        rid = str(params["requestId"])
        self._finished(params, now)
        url, kind = self._urls.get(rid, ("", str(params.get("type", ""))))
        reason = str(params.get("blockedReason") or params.get("errorText") or "failed")
        if params.get("canceled"):
            reason += " (canceled)"
        self.report.failed_requests.append(FailedRequest(url, reason, kind))

    def _console(self, params: Mapping[str, Any], now: float) -> None:
        if params.get("type") != "error":
            return
        text = " ".join(remote_object_text(arg) for arg in params.get("args", []))
        frames = params.get("stackTrace", {}).get("callFrames", [])
        url = str(frames[0].get("url", "")) if frames else ""
        self.report.console_errors.append(ConsoleError("console", text, url))

    def _exception(self, params: Mapping[str, Any], now: float) -> None:
        details = params.get("exceptionDetails", {})
        url = str(details.get("url", ""))
        self.report.console_errors.append(ConsoleError("exception", exception_text(details), url))

    def _log(self, params: Mapping[str, Any], now: float) -> None:
        entry = params.get("entry", {})
        if entry.get("level") == "error":
            source = f"log:{entry.get('source', 'other')}"
            self.report.console_errors.append(
                ConsoleError(source, str(entry.get("text", "")), str(entry.get("url", "")))
            )

    _handlers: ClassVar[dict[str, Callable[[Recorder, Mapping[str, Any], float], None]]] = {
        "Network.requestWillBeSent": _request,
        "Network.responseReceived": _response,
        "Network.loadingFinished": _finished,
        "Network.loadingFailed": _failed,
        "Runtime.consoleAPICalled": _console,
        "Runtime.exceptionThrown": _exception,
        "Log.entryAdded": _log,
    }


def chromium_command(chromium: str, profile: Path) -> list[str]:
    """The exact command line: the base flags, a fresh profile, the DevTools pipe."""
    return [
        chromium,
        *BASE_FLAGS,
        f"--user-data-dir={profile}",
        "--remote-debugging-pipe",
        "--no-first-run",
        "--disable-sync",
        "about:blank",
    ]


def profile_environment(profile: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for Chromium: HOME and the XDG folders inside the profile, so crash
    reports and caches land where close() removes them instead of in the user's home."""
    env = dict(os.environ if base is None else base)
    env.update(
        HOME=str(profile),
        XDG_CONFIG_HOME=str(profile / ".config"),
        XDG_CACHE_HOME=str(profile / ".cache"),
    )
    return env


class Browser:
    """One headless Chromium with one page. Use it as a context manager: leaving the block always
    kills Chromium (and every process it started) and removes its profile."""

    def __init__(
        self,
        chromium: str = CHROMIUM,
        width: int = 1280,
        height: int = 900,
        timeout: float = 30.0,
    ) -> None:
        self.chromium = chromium
        self.width = width
        self.height = height
        self.timeout = timeout
        self.profile: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._to_browser = -1
        self._from_browser = -1
        self._buffer = MessageBuffer()
        self._next_id = 0
        self._responses: dict[int, dict[str, Any]] = {}
        self._session = ""
        self._loads = 0
        self.recorder = Recorder()

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Browser:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if not os.access(self.chromium, os.X_OK):
            raise BrowserError(f"no Chromium at {self.chromium} (apt-get install chromium)")
        self.profile = Path(tempfile.mkdtemp(prefix="browser-profile-"))
        cmd_read, self._to_browser = os.pipe()
        self._from_browser, reply_write = os.pipe()

        def map_pipe_fds() -> None:
            # In the child, before exec: Chromium reads commands on fd 3 and answers on fd 4.
            # Copies above 10 first, so neither dup2 can overwrite the other pipe's end.
            high_read = fcntl.fcntl(cmd_read, fcntl.F_DUPFD_CLOEXEC, 10)
            high_write = fcntl.fcntl(reply_write, fcntl.F_DUPFD_CLOEXEC, 10)
            os.dup2(high_read, 3)  # dup2 leaves 3 and 4 inheritable; everything else closes
            os.dup2(high_write, 4)  # on exec (Python opens its descriptors non-inheritable)

        log = open(self.profile / "chromium.log", "wb")  # noqa: SIM115 (the child keeps it)
        try:
            self._proc = subprocess.Popen(
                chromium_command(self.chromium, self.profile),
                stdin=subprocess.DEVNULL,
                env=profile_environment(self.profile),
                stdout=log,
                stderr=log,
                close_fds=False,  # pass_fds would close 3 and 4 after preexec_fn made them
                preexec_fn=map_pipe_fds,
                start_new_session=True,  # its own process group, so close() can end it whole
            )
        finally:
            log.close()
            os.close(cmd_read)
            os.close(reply_write)
        self._attach()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(BrowserError, OSError):
                self._command("Browser.close", session=False, timeout=3)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # renderers and helpers outlive a clean exit
            proc.wait()
            wait_group_gone(proc.pid, timeout=5)
        for fd in (self._to_browser, self._from_browser):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._to_browser = self._from_browser = -1
        if self.profile is not None:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None

    def _attach(self) -> None:
        targets = self._command("Target.getTargets", session=False)["targetInfos"]
        pages = [t["targetId"] for t in targets if t.get("type") == "page"]
        if pages:
            target = pages[0]
        else:
            created = self._command("Target.createTarget", {"url": "about:blank"}, session=False)
            target = created["targetId"]
        attached = self._command(
            "Target.attachToTarget", {"targetId": target, "flatten": True}, session=False
        )
        self._session = attached["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self._command(f"{domain}.enable")
        self._command(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        frame_tree = self._command("Page.getFrameTree")["frameTree"]
        self.recorder = Recorder(main_frame_id=frame_tree["frame"]["id"])

    # -- protocol ----------------------------------------------------------------------------

    def _command(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        session: bool = True,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one DevTools command and wait for its answer, recording events meanwhile."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._to_browser, data) :]
        except OSError as exc:
            raise BrowserError(f"Chromium is gone ({method}: {exc})") from exc
        wanted = self._next_id
        self._pump_until(lambda: wanted in self._responses, timeout or self.timeout, method)
        answer = self._responses.pop(wanted)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error'].get('message', answer['error'])}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def _pump_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"timed out after {timeout:g}s waiting for {what}")
            self._read(min(left, 0.1))

    def _read(self, wait: float) -> None:
        ready, _, _ = select.select([self._from_browser], [], [], wait)
        if not ready:
            return
        chunk = os.read(self._from_browser, 1 << 20)
        if not chunk:
            raise BrowserError(f"Chromium exited{self._log_tail()}")
        for message in self._buffer.feed(chunk):
            if "id" in message:
                self._responses[int(message["id"])] = message
            elif message.get("sessionId") == self._session:
                self._event(str(message.get("method", "")), message.get("params", {}))

    def _event(self, method: str, params: Mapping[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self._loads += 1
        self.recorder.feed(method, params, time.monotonic())

    def _log_tail(self) -> str:
        if self.profile is None or not (self.profile / "chromium.log").exists():
            return ""
        lines = (self.profile / "chromium.log").read_text(errors="replace").strip().splitlines()
        return f": {lines[-1]}" if lines else ""

    def _wait_settled(self, loads_before: int | None, timeout: float, idle: float) -> PageReport:
        """Wait for the next load event (when one is expected), then for network idle."""
        deadline = time.monotonic() + timeout
        if loads_before is not None:
            self._pump_until(lambda: self._loads > loads_before, timeout, "the page's load event")
        while self.recorder.idle_for(time.monotonic()) < idle and time.monotonic() < deadline:
            self._read(0.05)
        report = self.recorder.report
        report.pending_requests = self.recorder.pending()
        return report

    # -- what tests use ----------------------------------------------------------------------

    def goto(self, url: str, timeout: float | None = None, idle: float = 0.5) -> PageReport:
        """Load url; return once it fired its load event and no request was open for `idle`
        seconds. The report holds every failed request and console error seen meanwhile."""
        self.recorder.reset(url, time.monotonic())
        loads = self._loads
        result = self._command("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"could not load {url}: {result['errorText']}")
        return self._wait_settled(loads, timeout or self.timeout, idle)

    def evaluate(self, expression: str) -> Any:
        """Run JavaScript in the page (promises awaited) and return its JSON value."""
        result = self._command(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"JavaScript failed: {exception_text(result['exceptionDetails'])}")
        return result.get("result", {}).get("value")

    def fill_and_submit(
        self,
        fields: Mapping[str, str],
        submit: str,
        navigates: bool = True,
        timeout: float | None = None,
        idle: float = 0.5,
    ) -> PageReport:
        """Type values into the fields (CSS selector -> value) and click the submit element, as a
        person would: the page's own handlers run. Waits for the page that follows when
        `navigates`, else only for network idle (an AJAX form)."""
        self.evaluate(fill_script(fields))
        self.recorder.reset(self.evaluate("location.href") or "", time.monotonic())
        loads = self._loads
        self.evaluate(click_script(submit))
        report = self._wait_settled(loads if navigates else None, timeout or self.timeout, idle)
        report.url = self.evaluate("location.href") or report.url
        return report

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        """Save what the page shows as a PNG (the viewport, or the whole page)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self._command("Page.getLayoutMetrics")["cssContentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {
                "x": 0,
                "y": 0,
                "scale": 1,
                "width": size["width"],
                "height": size["height"],
            }
        data = base64.b64decode(self._command("Page.captureScreenshot", params)["data"])
        if not data.startswith(PNG_SIGNATURE):
            raise BrowserError("Chromium returned a screenshot that is not a PNG")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Wait until no process of the group is left (init reaps the killed helpers a moment
    after their parent is gone); False when some are still there at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        time.sleep(0.05)
    return False


def fill_script(fields: Mapping[str, str]) -> str:
    """JavaScript that sets each field's value and fires the events a typing person would."""
    return (
        "(() => { const fields = " + json.dumps(dict(fields)) + ";\n"
        "for (const [selector, value] of Object.entries(fields)) {\n"
        "  const el = document.querySelector(selector);\n"
        "  if (!el) throw new Error('no element matches ' + selector);\n"
        "  el.focus(); el.value = value;\n"
        "  el.dispatchEvent(new Event('input', {bubbles: true}));\n"
        "  el.dispatchEvent(new Event('change', {bubbles: true}));\n"
        "} return true; })()"
    )


def click_script(selector: str) -> str:
    """JavaScript that clicks one element; it fails when nothing matches."""
    return (
        "(() => { const el = document.querySelector(" + json.dumps(selector) + ");\n"
        "if (!el) throw new Error('no element matches ' + " + json.dumps(selector) + ");\n"
        "el.click(); return true; })()"
    )
