#!/usr/bin/env python3
"""Stands in for the pre-signed S3 URL CloudFormation hands a custom resource: accepts the
PUT of a custom-resource response, prints its body as one JSON line, answers 200.
Usage: cfn_response_sink.py PORT (listens on 127.0.0.1)."""
import http.server
import sys


class Sink(http.server.BaseHTTPRequestHandler):
    def do_PUT(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        print(body.decode("utf-8", "replace"), flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
