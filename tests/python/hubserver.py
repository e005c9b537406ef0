"""A minimal stand-in for the Hugging Face hub on 127.0.0.1: the API listing
(`/api/models/<repo>/revision/<rev>?blobs=true`, with LFS sha256) and `resolve/<rev>/<file>`
with HTTP ranges, serving one real GGUF under `smol/SmolLM2-GGUF`."""

import hashlib
import http.server
import json
import threading


def start(gguf_path: str, delay: float = 0.0):
    """Serves the hub; with `delay`, file bodies trickle out (256 KiB, then `delay` seconds)."""
    data = open(gguf_path, "rb").read()
    sha = hashlib.sha256(data).hexdigest()
    files = ["SmolLM2-135M-Instruct.Q4_1.gguf"]

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            path = self.path.split("?")[0]
            if path == "/api/models/smol/SmolLM2-GGUF/revision/main":
                body = json.dumps({"id": "smol/SmolLM2-GGUF", "sha": "a" * 40, "siblings": [
                    {"rfilename": f, "size": len(data), "lfs": {"sha256": sha, "size": len(data)}} for f in files
                ] + [{"rfilename": "README.md", "size": 3}]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if path.startswith("/smol/SmolLM2-GGUF/resolve/") and path.endswith(files[0]):
                rng = self.headers.get("range", "bytes=0-").split("=")[1]
                start, _, end = rng.partition("-")
                start = int(start)
                end = int(end) + 1 if end else len(data)
                chunk = data[start:end]
                self.send_response(206)
                self.send_header("content-length", str(len(chunk)))
                self.send_header("content-range", f"bytes {start}-{end - 1}/{len(data)}")
                self.end_headers()
                if delay <= 0:
                    self.wfile.write(chunk)
                    return
                import time
                for i in range(0, len(chunk), 256 << 10):
                    try:
                        self.wfile.write(chunk[i:i + (256 << 10)])
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    time.sleep(delay)
                return
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server
