#!/usr/bin/env python3
"""A callback receiver for the end-to-end tests: listens on 127.0.0.1 (an ephemeral port, written
to PORT_FILE once bound), answers every POST with 200 and appends each request to LOG as one JSON
line: path, headers (lowercased) and the body (text). Exits when its parent test kills it.

Usage: callback-receiver.py PORT_FILE LOG
"""
import http.server
import json
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (the stdlib's name)
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode("utf-8", "replace")
        entry = {
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
        }
        with open(sys.argv[2], "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
