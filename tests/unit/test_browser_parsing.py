"""The browser helper's bookkeeping, without a browser: how the DevTools pipe is framed, how events
become a page report, when the network counts as idle, and the exact Chromium command line."""

from __future__ import annotations

import json
from pathlib import Path

from browser import (
    BASE_FLAGS,
    FailedRequest,
    MessageBuffer,
    PageReport,
    Recorder,
    chromium_command,
    click_script,
    exception_text,
    fill_script,
    profile_environment,
    remote_object_text,
)

MAIN = "frame-main"


def request(rid: str, url: str, kind: str = "Script") -> dict[str, object]:
    return {"requestId": rid, "request": {"url": url}, "type": kind, "frameId": MAIN}


def response(rid: str, url: str, status: int, kind: str = "Script", frame: str = MAIN) -> dict:
    return {
        "requestId": rid,
        "type": kind,
        "frameId": frame,
        "response": {"url": url, "status": status},
    }


def test_messages_split_on_nul_even_across_reads() -> None:
    buffer = MessageBuffer()
    first = json.dumps({"id": 1, "result": {}}).encode()
    second = json.dumps({"method": "Page.loadEventFired", "params": {}}).encode()
    data = first + b"\0" + second + b"\0"
    assert buffer.feed(data[:10]) == []
    assert buffer.feed(data[10 : len(first) + 3]) == [{"id": 1, "result": {}}]
    assert buffer.feed(data[len(first) + 3 :]) == [{"method": "Page.loadEventFired", "params": {}}]
    assert buffer.feed(b"") == []


def test_a_clean_page_reports_ok_with_the_document_status() -> None:
    rec = Recorder(main_frame_id=MAIN)
    rec.reset("http://app/users/login", now=0.0)
    rec.feed("Network.requestWillBeSent", request("1", "http://app/users/login", "Document"), 0.1)
    rec.feed(
        "Network.responseReceived", response("1", "http://app/users/login", 200, "Document"), 0.2
    )
    rec.feed("Network.loadingFinished", {"requestId": "1"}, 0.3)
    assert rec.report.status == 200
    assert rec.report.ok
    assert rec.idle_for(0.8) == 0.5


def test_status_400_and_network_failures_are_failed_requests() -> None:
    rec = Recorder(main_frame_id=MAIN)
    rec.reset("http://app/", now=0.0)
    rec.feed("Network.requestWillBeSent", request("2", "http://app/js/missing.js"), 0.0)
    rec.feed("Network.responseReceived", response("2", "http://app/js/missing.js", 404), 0.1)
    rec.feed("Network.loadingFinished", {"requestId": "2"}, 0.1)
    rec.feed(
        "Network.requestWillBeSent", request("3", "http://cdn.example/x.css", "Stylesheet"), 0.0
    )
    failure = {"requestId": "3", "errorText": "net::ERR_NAME_NOT_RESOLVED", "type": "Stylesheet"}
    rec.feed("Network.loadingFailed", failure, 0.2)
    assert rec.report.failed_requests == [
        FailedRequest("http://app/js/missing.js", "HTTP 404", "Script"),
        FailedRequest("http://cdn.example/x.css", "net::ERR_NAME_NOT_RESOLVED", "Stylesheet"),
    ]
    assert not rec.report.ok
    assert "HTTP 404: http://app/js/missing.js" in rec.report.summary()


def test_a_subframe_document_does_not_set_the_page_status() -> None:
    rec = Recorder(main_frame_id=MAIN)
    rec.reset("http://app/", now=0.0)
    rec.feed("Network.responseReceived", response("1", "http://app/", 200, "Document"), 0.0)
    rec.feed(
        "Network.responseReceived", response("9", "http://x/", 500, "Document", "frame-2"), 0.0
    )
    assert rec.report.status == 200


def test_canceled_requests_say_so() -> None:
    rec = Recorder()
    rec.reset("http://app/", now=0.0)
    rec.feed("Network.requestWillBeSent", request("4", "http://app/poll"), 0.0)
    rec.feed(
        "Network.loadingFailed",
        {"requestId": "4", "errorText": "net::ERR_ABORTED", "canceled": True},
        0.1,
    )
    assert rec.report.failed_requests[0].reason == "net::ERR_ABORTED (canceled)"


def test_console_errors_come_from_console_exceptions_and_the_log() -> None:
    rec = Recorder()
    rec.reset("http://app/", now=0.0)
    console = {
        "type": "error",
        "args": [{"type": "string", "value": "boom"}, {"type": "number", "value": 3}],
        "stackTrace": {"callFrames": [{"url": "http://app/js/a.js"}]},
    }
    rec.feed("Runtime.consoleAPICalled", console, 0.0)
    rec.feed("Runtime.consoleAPICalled", {"type": "log", "args": [{"value": "fine"}]}, 0.0)
    exception = {
        "exceptionDetails": {
            "text": "Uncaught",
            "url": "http://app/js/b.js",
            "exception": {"description": "TypeError: x is undefined\n    at b.js:1:1"},
        }
    }
    rec.feed("Runtime.exceptionThrown", exception, 0.0)
    log_error = {
        "entry": {
            "level": "error",
            "source": "network",
            "text": "Failed to load",
            "url": "http://app/x.png",
        }
    }
    rec.feed("Log.entryAdded", log_error, 0.0)
    rec.feed("Log.entryAdded", {"entry": {"level": "warning", "text": "meh"}}, 0.0)
    texts = [(c.source, c.text, c.url) for c in rec.report.console_errors]
    assert texts == [
        ("console", "boom 3", "http://app/js/a.js"),
        ("exception", "Uncaught TypeError: x is undefined", "http://app/js/b.js"),
        ("log:network", "Failed to load", "http://app/x.png"),
    ]


def test_network_is_idle_only_without_open_requests() -> None:
    rec = Recorder()
    rec.reset("http://app/", now=0.0)
    rec.feed("Network.requestWillBeSent", request("5", "http://app/slow"), 1.0)
    assert rec.idle_for(5.0) == 0.0
    assert rec.pending() == ["http://app/slow"]
    rec.feed("Network.loadingFinished", {"requestId": "5"}, 6.0)
    assert rec.idle_for(6.25) == 0.25
    assert rec.pending() == []


def test_a_redirect_keeps_one_open_request() -> None:
    rec = Recorder()
    rec.reset("http://app/", now=0.0)
    rec.feed("Network.requestWillBeSent", request("6", "http://app/"), 0.0)
    redirected = request("6", "http://app/users/login", "Document")
    redirected["redirectResponse"] = {"status": 302}
    rec.feed("Network.requestWillBeSent", redirected, 0.1)
    assert rec.pending() == ["http://app/users/login"]
    assert rec.report.failed_requests == []


def test_remote_objects_render_like_devtools() -> None:
    assert remote_object_text({"type": "string", "value": "text"}) == "text"
    assert remote_object_text({"type": "object", "value": {"a": 1}}) == '{"a": 1}'
    assert remote_object_text({"type": "number", "unserializableValue": "NaN"}) == "NaN"
    assert remote_object_text({"type": "object", "description": "Error: x"}) == "Error: x"
    assert exception_text({"text": "Uncaught SyntaxError: bad"}) == "Uncaught SyntaxError: bad"


def test_the_command_line_is_exactly_the_documented_flags() -> None:
    cmd = chromium_command("/usr/bin/chromium", Path("/tmp/p"))
    assert cmd[0] == "/usr/bin/chromium"
    assert (
        tuple(cmd[1:6])
        == BASE_FLAGS
        == (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
        )
    )
    assert cmd[6:] == [
        "--user-data-dir=/tmp/p",
        "--remote-debugging-pipe",
        "--no-first-run",
        "--disable-sync",
        "about:blank",
    ]


def test_form_scripts_quote_selectors_and_values_as_json() -> None:
    script = fill_script({"#email": 'a"b@c.d', "input[name='pw']": "x\\y"})
    assert json.dumps({"#email": 'a"b@c.d', "input[name='pw']": "x\\y"}) in script
    assert json.dumps("button[type='submit']") in click_script("button[type='submit']")


def test_an_empty_report_is_ok_and_pending_requests_are_not() -> None:
    assert PageReport(url="u").ok
    assert not PageReport(url="u", pending_requests=["http://app/long-poll"]).ok


def test_chromium_keeps_its_home_and_caches_inside_the_profile() -> None:
    env = profile_environment(Path("/tmp/p"), {"HOME": "/root", "PATH": "/usr/bin"})
    assert env == {
        "HOME": "/tmp/p",
        "PATH": "/usr/bin",
        "XDG_CONFIG_HOME": "/tmp/p/.config",
        "XDG_CACHE_HOME": "/tmp/p/.cache",
    }
