"""A loopback HTTP server of in-memory files, shared by the download, sources and full-mode tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Files:
    """Serves `self.files` (path -> bytes) on 127.0.0.1; paths under /private/ want the Authorization header
    to equal `self.authorization` exactly, and every header sent there is kept in `self.seen`."""

    def __init__(self, authorization: str = ""):
        self.files: dict[str, bytes] = {}
        self.authorization = authorization
        self.seen: list[str | None] = []
        files = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.startswith("/private/"):
                    files.seen.append(self.headers.get("Authorization"))
                    if self.headers.get("Authorization") != files.authorization:
                        self.send_error(401)
                        return
                body = files.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@contextmanager
def serving(authorization: str = "") -> Iterator[Files]:
    """A running `Files` server, shut down and closed afterwards."""
    s = Files(authorization)
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()
