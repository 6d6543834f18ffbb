"""Browser tests' tools: Debian's chromium driven by playwright-core (tests/browser/drive.mjs)
on pages served from 127.0.0.1, with Segment's analytics.js from tests/browser/node_modules."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BROWSER = ROOT / "tests" / "browser"
STANDALONE = BROWSER / "node_modules/@segment/analytics-next/dist/umd/standalone.js"


def install() -> None:
    """chromium (apt) and the npm packages, when missing: the Makefile's browser-deps."""
    done = subprocess.run(
        ["make", "--no-print-directory", "browser-deps"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"make browser-deps failed:\n{done.stdout}\n{done.stderr}"


def readme_snippet(name: str) -> str:
    """The code block of the README marked ``<!-- readme-snippet: NAME -->``."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(rf"<!-- readme-snippet: {name} -->\n```\w+\n(.*?)```", readme, re.S)
    assert found, f"README has no snippet {name}"
    return found.group(1)


def as_pasted(snippet: str, write_key: str, ingest: str) -> str:
    """A README snippet with the placeholders a site owner fills in filled in."""
    return snippet.replace("wk_…", write_key).replace("localhost:8001", ingest)


class Site:
    """A web site on 127.0.0.1 serving a folder: the test pages and the bundled SDK."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        shutil.copytree(BROWSER / "page", folder / "page")
        shutil.copytree(BROWSER / "dist", folder / "dist")
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_snippet_page(self, path: str, html: str) -> str:
        """A page with the README's snippet, and the SDK's browser file where it loads it."""
        page = self.folder / path
        page.mkdir(parents=True)
        (page / "index.html").write_text(f"<!doctype html><html><head>{html}</head></html>")
        shutil.copy(STANDALONE, self.folder / "analytics.min.js")
        return f"{self.url}/{path}/"

    def add_bundle_page(self, path: str, module: str) -> str:
        """A page whose script is ``module`` bundled with the SDK, as a site's build would."""
        page = self.folder / path
        page.mkdir(parents=True)
        (page / "site.js").write_text(module)
        node(["build.mjs", str(page / "site.js"), str(page / "bundle.js")])
        html = '<!doctype html><html><head><script src="bundle.js"></script></head></html>'
        (page / "index.html").write_text(html)
        return f"{self.url}/{path}/"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def node(args: list[str]) -> str:
    done = subprocess.run(["node", *args], cwd=BROWSER, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"node {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def drive(**spec: Any) -> dict[str, Any]:
    """Run one scenario of drive.mjs in a fresh headless chromium; what it saw, as JSON."""
    done = subprocess.run(
        ["node", "drive.mjs", json.dumps(spec)],
        cwd=BROWSER,
        capture_output=True,
        text=True,
        timeout=240,
    )
    try:
        out: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"drive.mjs printed no result:\n{done.stdout}\n{done.stderr}"
        ) from None
    assert out.get("error") is None, f"{spec['scenario']}: {out['error']}\n{out['consoleErrors']}"
    return out
