"""The web chat and dashboard in a real browser: Debian's headless Chromium, driven by
Playwright (its Python package, pointed at the system browser: nothing is downloaded), against
a real `hyperllama serve` with the real model. Every request the pages make is watched: one to
any other origin fails the test (the UI must work with no network), and so does any script
error or Content-Security-Policy violation. Screenshots go to $HYPERLLAMA_SCREENSHOTS
(default target/ui-screenshots), which CI keeps as artifacts; docs/screenshots/ holds copies."""

import json
import os
import pathlib
import re
import shutil
import socket
import tempfile
import threading
import time

import ollama
import pytest
import requests

from conftest import ROOT, model_path, start_server, stop
# A server with API keys and the test model (shared with the clients' key tests).
from test_keys_and_ops import KEY, keyed  # noqa: F401 (a fixture)

from playwright import sync_api as playwright_api

SHOTS = pathlib.Path(os.environ.get("HYPERLLAMA_SCREENSHOTS", ROOT / "target" / "ui-screenshots"))
FIXTURES = ROOT / "tests" / "fixtures" / "webui"
TIMEOUT_MS = 120_000


def chromium_path():
    exe = os.environ.get("HYPERLLAMA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    assert os.path.exists(exe), "Chromium missing: scripts/browser-deps.sh installs Debian's chromium"
    return exe


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=chromium_path(), headless=True,
            # Debian's Chromium as root needs --no-sandbox; the rest keep it off the network.
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


class Watched:
    """A page whose requests to other origins, script errors and CSP reports are collected."""

    def __init__(self, browser, base, **context_args):
        self.base = base
        self.context = browser.new_context(accept_downloads=True, **context_args)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.foreign = []
        self.errors = []
        # A 401 while the page asks for a key is expected; a test may expect more.
        self.expected = ["status of 401"]
        origin = base.rstrip("/")

        def route(r):
            if r.request.url.startswith(origin + "/") or r.request.url.startswith(("blob:", "data:")):
                r.continue_()
            else:
                self.foreign.append(r.request.url)
                r.abort()

        self.context.route("**/*", route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

        def console(msg):
            if msg.type == "error" and not any(e in msg.text for e in self.expected):
                self.errors.append(f"console: {msg.text}")

        self.page.on("console", console)

    def check(self):
        assert not self.foreign, f"the UI reached outside the server: {self.foreign}"
        assert not self.errors, f"errors in the page: {self.errors}"

    def close(self):
        self.context.close()


@pytest.fixture()
def watched(browser, server):
    w = Watched(browser, server)
    yield w
    try:
        w.check()
    finally:
        w.close()


def open_chat(w, model="smol:latest"):
    page = w.page
    page.goto(w.base + "/")  # a browser at / lands on the UI
    assert page.url.endswith("/ui/")
    page.wait_for_selector("#model[data-loaded]")
    page.select_option("#model", model)
    return page


def settings(page, **values):
    if not page.is_visible("#temperature"):
        page.click("#settings summary")
    for k, v in values.items():
        page.fill(f"#{k}", str(v))
        page.dispatch_event(f"#{k}", "change")


def record_partials(page):
    """Collects the streaming answer's text each time it changes, while it streams."""
    page.evaluate("""() => {
        window.__partials = [];
        new MutationObserver(() => {
            const li = document.querySelector('#messages li[data-streaming]');
            if (li) window.__partials.push(li.querySelector('.content').textContent);
        }).observe(document.getElementById('messages'), { childList: true, subtree: true, characterData: true });
    }""")


def wait_answer(page):
    page.wait_for_selector("#messages li[data-streaming]", state="detached")
    page.wait_for_selector("#stop", state="hidden")


def stored(page):
    return page.evaluate("() => JSON.parse(localStorage.getItem('hyperllama.conversations'))")


def current(page):
    """The conversation the page shows, from the browser's storage."""
    cid = page.get_attribute("#conversations li.current", "data-id")
    return next(c for c in stored(page) if c["id"] == cid)


def scheduler(base, model="smol:latest"):
    for m in requests.get(f"{base}/api/ps", timeout=10).json()["models"]:
        if m["name"] == model:
            return m["scheduler"]
    return None


def until(what, check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = check()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_chat_streams_the_greedy_answer_and_keeps_it_across_a_reload(watched, server):
    page = open_chat(watched)
    settings(page, temperature=0, num_predict=80, seed=7)
    record_partials(page)
    prompt = "Write a Python function that returns the square of a number."
    page.fill("#prompt", prompt)
    page.press("#prompt", "Enter")
    page.wait_for_selector("#stop", state="visible")
    wait_answer(page)
    conv = current(page)
    answer = conv["messages"][-1]
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]
    assert answer["content"].strip(), answer
    # Tokens were on the page before the answer ended: several growing prefixes of it.
    partials = [p for p in page.evaluate("window.__partials") if p]
    assert len(set(partials)) >= 2, partials
    assert all(len(p) <= len(answer["content"]) for p in partials)
    # The same request through the API gives the same greedy answer.
    api = ollama.Client(host=server).chat(
        model="smol:latest", messages=[{"role": "user", "content": prompt}],
        options={"temperature": 0, "num_predict": 80, "seed": 7})
    assert answer["content"] == api.message.content
    stats = page.inner_text("#messages li.assistant .stats")
    assert re.search(r"\d+ tokens .* tok/s .* TTFT", stats), stats
    assert answer["stats"]["eval_count"] == api.eval_count
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.click("#settings summary")  # folded, for the picture
    page.screenshot(path=str(SHOTS / "chat.png"))
    page.click("#settings summary")
    # The conversation survives a reload: listed, with its messages and settings.
    page.reload()
    page.wait_for_selector("#model[data-loaded]")
    assert prompt[:20] in page.inner_text("#conversations")
    assert page.inner_text("#messages li.user .content") == prompt
    assert current(page)["messages"][-1]["content"] == answer["content"]
    assert page.input_value("#temperature") == "0"
    # Export: JSON that holds the conversation, and Markdown.
    with page.expect_download() as d:
        page.click("#export-json")
    exported = json.loads(pathlib.Path(d.value.path()).read_text())
    assert exported["format"] == "hyperllama.conversation"
    assert exported["messages"][1]["content"] == answer["content"]
    with page.expect_download() as d:
        page.click("#export-md")
    md = pathlib.Path(d.value.path()).read_text()
    assert "## User" in md and prompt in md and "## Assistant" in md


def test_edit_and_regenerate_continue_from_the_edited_turn(watched):
    page = open_chat(watched)
    page.click("#new-chat")
    settings(page, temperature=0, num_predict=12, seed=1)
    page.fill("#prompt", "Name a color.")
    page.press("#prompt", "Enter")
    wait_answer(page)
    page.click("#messages li.user .edit")
    page.fill("#messages li.user .edit-area", "Name a fruit.")
    page.click("#messages li.user button.primary")
    wait_answer(page)
    conv = current(page)
    assert [m["content"] for m in conv["messages"] if m["role"] == "user"] == ["Name a fruit."]
    assert len(conv["messages"]) == 2
    first = conv["messages"][1]["content"]
    page.click("#messages li.assistant .regenerate")
    wait_answer(page)
    conv = current(page)
    assert len(conv["messages"]) == 2, "regenerate replaces the answer"
    assert conv["messages"][1]["content"] == first, "greedy: the same answer again"
    # Rename, then delete (which asks once more).
    page.click("#conversations li.current button[aria-label^='Rename']")
    page.fill("#conversations input.rename", "Fruit talk")
    page.press("#conversations input.rename", "Enter")
    assert current(page)["title"] == "Fruit talk"
    n = len(stored(page))
    page.click("#conversations li.current button[aria-label^='Delete']")
    page.click("#conversations li button:has-text('Delete?')")
    until("the conversation to go", lambda: len(stored(page)) == n - 1, 10)


def test_stop_aborts_the_request_and_the_server_frees_the_sequence(watched, server):
    page = open_chat(watched)
    page.click("#new-chat")
    settings(page, temperature=0.8, num_predict=1500, seed=3)
    before = scheduler(server) or {"requests_cancelled": 0}
    page.fill("#prompt", "Count from 1 to 1000, one number per line.")
    page.press("#prompt", "Enter")
    page.wait_for_function(
        "() => { const li = document.querySelector('#messages li[data-streaming] .content'); "
        "return li && li.textContent.length > 10; }")
    until("the request to hold a sequence", lambda: (scheduler(server) or {}).get("active", 0) >= 1, 10)
    page.click("#stop")
    wait_answer(page)
    assert page.is_visible("#messages li.assistant .badge:has-text('stopped')")
    assert current(page)["messages"][-1].get("stopped") is True
    s = until("the sequence to be freed",
              lambda: (lambda s: s if s and s["active"] == 0 and s["waiting"] == 0 else None)(scheduler(server)), 15)
    assert s["requests_cancelled"] > before["requests_cancelled"], s


def test_model_output_is_shown_as_text_never_run(watched):
    page = open_chat(watched)
    page.set_input_files("#import-file", str(FIXTURES / "xss-conversation.json"))
    page.wait_for_selector("#messages li.assistant")
    assert current(page)["title"] == "XSS fixture"
    text = page.inner_text("#messages")
    assert "<img src=x onerror=" in text and "<script>" in text
    assert page.evaluate("window.__xss === undefined"), "a script from model output ran"
    for selector in ["img", "script", "iframe", "svg", "[onerror]", "a[href^='javascript']", "style"]:
        assert page.query_selector(f"#messages {selector}") is None, selector
    # Markdown still renders: a code block with a copy button, a safe link, emphasis.
    assert page.query_selector("#messages .code-block pre code") is not None
    assert page.get_attribute("#messages a", "href") == "https://example.com/docs"
    assert page.get_attribute("#messages a", "rel") == "noopener noreferrer nofollow"
    assert page.query_selector("#messages strong") is not None
    # A user message with markup is text too, and it reaches the model unchanged.
    page.fill("#prompt", '<img src=x onerror="window.__xss=3"> hello')
    settings(page, num_predict=4)
    page.press("#prompt", "Enter")
    wait_answer(page)
    assert page.locator("#messages li.user .content").last.inner_text() == '<img src=x onerror="window.__xss=3"> hello'
    assert page.evaluate("window.__xss === undefined")
    # An import that is not a conversation is refused with a message, and nothing is lost.
    n = len(stored(page))
    bad = pathlib.Path(tempfile.mkdtemp()) / "bad.json"
    bad.write_text('{"hello": 1}')
    page.set_input_files("#import-file", str(bad))
    page.wait_for_selector("#banner:has-text('Cannot import')")
    assert len(stored(page)) == n


MARKDOWN_CASES = {
    "heading": "# Title\n\nSome *em*, **strong**, ~~gone~~ and `code <b>`.",
    "lists": "- a\n- b\n  - c\n\n3. x\n4. y",
    "fence": "```js\nlet a = '<b>x</b>';\n```\nafter",
    "unclosed": "Here:\n```py\nprint(1)",
    "links": "[x](javascript:alert(1)) [y](https://a.example/c) see http://b.example/d.",
    "words": "snake_case_name and 2 * 3 * 4 stay as written",
    "table": "| a | b |\n|---|:-:|\n| 1 | 2 |",
    "math": "Inline $x^2$ and\n\n$$\n\\int f\n$$",
    "quote": "> quoted *text*",
    "html": "<b>bold</b> <img src=x onerror=alert(1)>",
    "breaks": "line one\nline two",
}


def test_markdown_renderer_builds_the_expected_elements(watched, server):
    page = watched.page
    page.goto(server + "/ui/")
    out = page.evaluate("""async (cases) => {
        const { render } = await import('/ui/markdown.js');
        const result = {};
        for (const [name, text] of Object.entries(cases)) {
            const div = document.createElement('div');
            div.append(render(text));
            result[name] = { html: div.innerHTML, text: div.textContent };
        }
        return result;
    }""", MARKDOWN_CASES)
    h = {k: v["html"] for k, v in out.items()}
    assert h["heading"].startswith("<h3>Title</h3><p>Some <em>em</em>, <strong>strong</strong>, <del>gone</del>")
    assert "<code>code &lt;b&gt;</code>" in h["heading"]
    assert h["lists"] == "<ul><li>a</li><li><p>b</p><ul><li>c</li></ul></li></ul><ol start=\"3\"><li>x</li><li>y</li></ol>"
    assert '<code data-lang="js">let a = \'&lt;b&gt;x&lt;/b&gt;\';</code>' in h["fence"] and h["fence"].endswith("<p>after</p>")
    assert "<code data-lang=\"py\">print(1)</code>" in h["unclosed"], "an open fence while streaming is code"
    assert h["links"].count("<a ") == 2, h["links"]
    assert 'href="https://a.example/c"' in h["links"] and 'href="http://b.example/d"' in h["links"]
    assert 'href="javascript' not in h["links"] and "[x](javascript:alert(1))" in out["links"]["text"]
    assert "<em>" not in h["words"] and out["words"]["text"] == MARKDOWN_CASES["words"]
    assert "<th>a</th><th>b</th>" in h["table"] and "<td>1</td><td>2</td>" in h["table"]
    assert '<span class="math">x^2</span>' in h["math"] and '<div class="math block">\\int f</div>' in h["math"]
    assert h["quote"] == "<blockquote><p>quoted <em>text</em></p></blockquote>"
    assert h["html"] == "<p>&lt;b&gt;bold&lt;/b&gt; &lt;img src=x onerror=alert(1)&gt;</p>"
    assert h["breaks"] == "<p>line one<br>line two</p>"


def test_reasoning_is_shown_collapsible_apart_from_the_answer(watched, think_model):
    page = open_chat(watched, f"{think_model}:latest")
    page.click("#new-chat")
    settings(page, temperature=0, num_predict=24)
    page.wait_for_function("() => !document.getElementById('think').disabled")
    page.check("#think")
    page.dispatch_event("#think", "change")
    page.fill("#prompt", "Is 7 a prime number?")
    page.press("#prompt", "Enter")
    wait_answer(page)
    msg = current(page)["messages"][-1]
    assert msg.get("thinking"), msg
    assert page.query_selector("#messages li.assistant details.thinking summary") is not None
    assert msg["thinking"].strip()[:10] in page.text_content("#messages li.assistant details.thinking")
    assert "<think>" not in msg["content"]


def test_pull_a_model_by_name_with_progress(watched):
    page = open_chat(watched)
    page.evaluate("""() => {
        window.__progress = [];
        new MutationObserver(() => window.__progress.push(document.getElementById('pull-progress').getAttribute('value')))
          .observe(document.getElementById('pull-progress'), { attributes: true });
    }""")
    page.click("details.pull summary")
    page.fill("#pull-name", "hf.co/smol/SmolLM2-GGUF:Q4_1")
    page.click("#pull-form button[type=submit]")
    page.wait_for_selector("#pull-status:has-text('Pulled')")
    assert any(v not in (None, "0") for v in page.evaluate("window.__progress")), "the bar moved"
    options = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert any("SmolLM2-GGUF" in o for o in options), options
    assert "SmolLM2-GGUF" in page.input_value("#model")
    # A name the hub does not have: a clear error, the picker unchanged.
    watched.expected.append("status of 404")
    page.fill("#pull-name", "hf.co/nobody/nothing")
    page.click("#pull-form button[type=submit]")
    page.wait_for_selector("#pull-status.error")
    assert "failed" in page.inner_text("#pull-status")


def dashboard_wait(page, predicate, what):
    """Waits for `predicate` on the dashboard; on a timeout, says what the page showed."""
    try:
        page.wait_for_function(predicate, timeout=60_000)
    except playwright_api.TimeoutError:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "dashboard-failed.png"), full_page=True)
        shown = page.evaluate("""() => ({
            banner: document.getElementById('banner').textContent,
            polled: document.body.dataset.polled,
            tiles: document.querySelector('.tiles').innerText,
            loaded: document.getElementById('loaded').innerText,
        })""")
        raise AssertionError(f"the dashboard never showed {what}: {shown}") from None


def test_dashboard_shows_the_loaded_model_and_live_throughput(watched, server):
    page = watched.page
    page.goto(server + "/ui/dashboard")
    page.wait_for_selector("body[data-polled]")
    # A little traffic, three clients at once, while the page polls.
    failures = []

    def client(i):
        try:
            c = ollama.Client(host=server)
            for j in range(2):
                r = c.generate(model="smol:latest", prompt=f"Tell me fact {j} about llamas, client {i}.",
                               options={"num_predict": 32, "temperature": 0})
                assert r.eval_count > 0, r
        except Exception as e:  # noqa: BLE001 (reported below: a thread's exception is lost otherwise)
            failures.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    row = page.wait_for_selector("#loaded tr[data-model='smol:latest']")
    assert row.query_selector("td:nth-child(2)").inner_text().strip(), "the engine is named"
    assert re.search(r"\d+ / \d+", row.inner_text())
    dashboard_wait(page, "() => Number(document.getElementById('tile-tps').dataset.value) > 0", "tok/s above 0")
    assert float(page.inner_text("#tile-tps")) > 0
    assert int(page.inner_text("#tile-total")) >= 32
    dashboard_wait(page, "() => document.getElementById('tile-ttft').textContent.includes('ms') "
                   "|| document.getElementById('tile-ttft').textContent.includes(' s')", "a TTFT")
    dashboard_wait(page, "() => Number(document.body.dataset.polled) >= 4", "four polls")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)
    # Unload from the dashboard: the model leaves /api/ps.
    page.click("#loaded tr[data-model='smol:latest'] button")
    until("the model to unload", lambda: scheduler(server) is None, 20)
    page.wait_for_selector("#loaded tr[data-model='smol:latest']", state="detached")


def test_phone_width_keeps_the_conversations_one_tap_away(browser, server):
    w = Watched(browser, server, viewport={"width": 390, "height": 800}, is_mobile=True, has_touch=True)
    try:
        page = open_chat(w)
        assert page.evaluate("document.getElementById('sidebar').getBoundingClientRect().right <= 0"), \
            "the conversation list starts folded away"
        page.click("#toggle-sidebar")
        page.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().left >= 0")
        assert page.get_attribute("#toggle-sidebar", "aria-expanded") == "true"
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, f"the page scrolls sideways at phone width: {width}px"
        w.check()
    finally:
        w.close()


def test_with_keys_the_page_asks_and_a_wrong_key_is_a_clear_error(browser, keyed):
    w = Watched(browser, keyed)
    try:
        page = w.page
        page.goto(keyed + "/ui/")
        page.wait_for_selector("#key-dialog[open]")
        page.fill("#key-input", "sk-wrong-key-00000000000")
        page.press("#key-input", "Enter")
        page.wait_for_selector("#key-error:has-text('invalid API key')")
        assert page.is_visible("#key-dialog[open]")
        page.fill("#key-input", KEY)
        page.press("#key-input", "Enter")
        page.wait_for_selector("#model[data-loaded]")
        assert "smol:latest" in page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
        assert not page.is_visible("#key-dialog")
        # The key is kept for the browser session only.
        assert page.evaluate("sessionStorage.getItem('hyperllama.apiKey')") == KEY
        assert KEY not in json.dumps(page.evaluate("Object.assign({}, localStorage)"))
        settings(page, num_predict=4)
        page.fill("#prompt", "Hi")
        page.press("#prompt", "Enter")
        wait_answer(page)
        assert current(page)["messages"][-1]["content"]
        # The dashboard uses the same session key.
        page.goto(keyed + "/ui/dashboard")
        page.wait_for_selector("body[data-polled]")
        assert not page.is_visible("#key-dialog")
        w.check()
    finally:
        w.close()


def test_no_webui_serves_no_pages():
    home = tempfile.mkdtemp(prefix="hyperllama-nowebui-")
    proc, base = start_server(home, "--no-webui")
    try:
        assert requests.get(f"{base}/ui/", timeout=10).status_code == 404
        r = requests.get(f"{base}/", headers={"accept": "text/html"}, timeout=10)
        assert r.status_code == 200 and r.text == "HyperLlama is running"
    finally:
        stop(proc)


def test_a_fleet_front_door_lists_the_nodes_models_and_health(browser):
    """A front door over a live HyperLlama node and a node that is down: the picker offers the
    live node's model, the chat answers through it, and the dashboard shows both nodes."""
    node_home = tempfile.mkdtemp(prefix="hyperllama-webui-node-")
    node, node_url = start_server(node_home, "--ctx-size", "1024", "--parallel", "1")
    front = None
    try:
        c = ollama.Client(host=node_url)
        c.create(model="smol-b", files={"m.gguf": c.create_blob(str(model_path()))})
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
        front_home = tempfile.mkdtemp(prefix="hyperllama-webui-front-")
        front, base = start_server(front_home, "--openai-url", f"{node_url},{dead}")
        w = Watched(browser, base)
        try:
            page = open_chat(w, "smol-b:latest")
            label = page.eval_on_selector("#model option[value='smol-b:latest']", "o => o.textContent")
            assert f"on {node_url}/v1" in label, label
            settings(page, temperature=0, num_predict=8)
            page.fill("#prompt", "Say hello.")
            page.press("#prompt", "Enter")
            wait_answer(page)
            msg = current(page)["messages"][-1]
            assert msg["content"] and not msg.get("error"), msg
            page.goto(base + "/ui/dashboard")
            page.wait_for_selector("#fleet-section:not([hidden])")
            rows = page.eval_on_selector_all("#fleet tbody tr", "rs => rs.map(r => r.innerText)")
            assert len(rows) == 2, rows
            live = next(r for r in rows if node_url in r)
            down = next(r for r in rows if dead in r)
            assert "healthy" in live and "smol-b:latest" in live, live
            assert "down" in down, down
            w.check()
        finally:
            w.close()
    finally:
        if front is not None:
            stop(front)
        stop(node)


def test_dark_theme_follows_the_system(browser, server):
    w = Watched(browser, server, color_scheme="dark")
    try:
        page = open_chat(w)
        bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
        channels = [int(x) for x in re.findall(r"\d+", bg)[:3]]
        assert sum(channels) < 3 * 80, f"dark system theme, light page: {bg}"
        w.check()
    finally:
        w.close()
