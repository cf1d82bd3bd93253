"""The demo's example backend: answers every request with a small JSON document describing it."""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        shown = {k: v for k, v in self.headers.items() if k.lower().startswith("x-") or k.lower() == "authorization"}
        doc: dict[str, object] = {"message": "hello from the example backend", "method": self.command,
                                  "path": self.path, "received_headers": shown, "body_bytes": len(body)}
        if self.path.startswith("/customers"):  # personal data for the PII-masking example
            doc["customers"] = [{"name": "Ada", "email": "ada@example.com", "card": "4111 1111 1111 1111"},
                                {"name": "Bob", "email": "bob@example.org", "card": "5500-0000-0000-0004"}]
        out = json.dumps(doc, indent=1).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), _Handler).serve_forever()


if __name__ == "__main__":
    main()
