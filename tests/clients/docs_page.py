#!/usr/bin/env python3
"""The /docs page in a real browser (Debian's headless chromium, driven over the DevTools protocol).

    python docs_page.py BASE_URL [--screenshot OUT.png] [--chromium PATH]

Opens BASE_URL/docs, waits until the page lists the routes of /openapi.json, then uses the page's own "Try it out"
on POST /api/embed (Swagger UI) with a small body and waits for the 200 response with vectors. Prints one JSON
line {"ok", "detail", "routes_missing", "status", "dims"}; exit status 1 when a step failed. With --screenshot, a
PNG of the page after the call.
"""
import argparse
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings

from websockets.sync.client import connect

warnings.filterwarnings("ignore", category=DeprecationWarning)  # websockets: connect() outside `with`
BODY = {"model": "potion-base-8M", "input": ["Hello from the docs page"]}


class Browser:
    def __init__(self, chromium, width=1280, height=1600):
        self.profile = tempfile.mkdtemp(prefix="deposium-chromium-")
        self.proc = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 30
        port = None
        while port is None:
            line = self.proc.stderr.readline()
            if not line and (self.proc.poll() is not None or time.time() > deadline):
                raise RuntimeError(f"chromium did not start (exit {self.proc.poll()})")
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self.ids = itertools.count(1)

    def call(self, method, **params):
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"script failed: {r['exceptionDetails'].get('exception', r['exceptionDetails'])}")
        return r["result"].get("value")

    def wait(self, expr, what, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = self.js(expr)
            if v:
                return v
            time.sleep(0.2)
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}")

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


# Swagger UI's "Try it out" on POST /api/embed: expand the operation, edit the body (React reads the native input
# event), execute, and wait for the live response.
TRY_IT = r"""
(async (body) => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const until = async (f, what, ms = 20000) => {
    for (const t0 = Date.now(); Date.now() - t0 < ms; await sleep(100)) { const v = f(); if (v) return v; }
    throw new Error('timed out waiting for ' + what);
  };
  const op = await until(() => [...document.querySelectorAll('.opblock.opblock-post')].find((b) =>
    (b.querySelector('.opblock-summary-path')?.getAttribute('data-path') ??
     b.querySelector('.opblock-summary-path')?.textContent.trim()) === '/api/embed'), 'POST /api/embed');
  op.scrollIntoView();
  if (!op.classList.contains('is-open')) (op.querySelector('.opblock-summary-control') ?? op.querySelector('.opblock-summary')).click();
  (await until(() => op.querySelector('.try-out__btn'), 'the Try it out button')).click();
  const area = await until(() => op.querySelector('textarea.body-param__text'), 'the body editor');
  Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set.call(area, body);
  area.dispatchEvent(new Event('input', { bubbles: true }));
  area.dispatchEvent(new Event('change', { bubbles: true }));
  await sleep(200);
  (await until(() => op.querySelector('.execute'), 'the Execute button')).click();
  const status = await until(() => op.querySelector('.live-responses-table tr.response .response-col_status'), 'the response');
  const text = await until(() => op.querySelector('.live-responses-table .response-col_description pre, ' +
    '.live-responses-table .microlight')?.textContent, 'the response body');
  op.scrollIntoView();
  return { status: status.textContent.trim(), body: text };
})
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base")
    ap.add_argument("--screenshot")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    a = ap.parse_args()
    base = a.base.rstrip("/")
    with urllib.request.urlopen(base + "/openapi.json", timeout=30) as r:
        spec = json.load(r)
    routes = sorted(spec["paths"])
    out = {"ok": False, "routes": len(routes)}
    b = Browser(a.chromium)
    try:
        b.call("Page.enable")
        b.call("Page.navigate", url=base + "/docs")
        b.wait("document.readyState === 'complete'", "the page to load")
        # A route is listed when its path is shown on the page (once the spec has been fetched and rendered).
        b.wait(
            "(() => { const t = document.body.innerText.replace(/\\u200b/g, ''); const ps = %s;"
            " return ps.every((p) => t.includes(p)); })()"
            % json.dumps(routes),
            "every route of /openapi.json on the page",
        )
        text = b.js("document.body.innerText").replace("\u200b", "")
        missing = [p for p in routes if p not in text]
        out["routes_missing"] = missing
        r = b.js(f"({TRY_IT})({json.dumps(json.dumps(BODY))})")
        out["status"] = r["status"]
        vecs = json.loads(r["body"])["embeddings"]
        out["dims"] = [len(v) for v in vecs]
        out["ok"] = r["status"] == "200" and len(vecs) == 1 and len(vecs[0]) > 0 and not missing
        out["detail"] = f"{len(routes)} routes listed; Try it out POST /api/embed -> {r['status']}, {out['dims']} dims"
        if a.screenshot:
            shot = b.call("Page.captureScreenshot", format="png")
            with open(a.screenshot, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
    except Exception as e:
        out["detail"] = f"{type(e).__name__}: {e}"
        try:
            out["page_text"] = b.js("document.body.innerText")[:1500]
        except Exception:
            pass
    finally:
        b.close()
    print(json.dumps(out), flush=True)
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
