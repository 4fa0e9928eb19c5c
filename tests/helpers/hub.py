"""The Hugging Face hub where it cannot be reached: its local cache laid out on disk, and its HTTP
protocol served from 127.0.0.1 (the endpoints transformers and huggingface_hub call to resolve and
download a model's files), each over real checkpoint folders saved under real hub ids."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_cache(cache: Path, repo_id: str, folder: Path, commit: str = COMMIT) -> Path:
    """Put `folder`'s files into an HF hub cache (HF_HUB_CACHE) as repo `repo_id` at `commit`."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in folder.iterdir():
        if file.is_file():
            shutil.copy2(file, snapshot / file.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


class HubServer:
    """A hub on 127.0.0.1 serving `repos` ({repo id: folder}); `requests` records what was asked."""

    def __init__(self, repos: dict[str, Path]):
        self.repos = {k: Path(v) for k, v in repos.items()}
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub._serve(self, body=False)

            def do_GET(self):
                hub._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _repo(self, parts: list[str]) -> tuple[str | None, list[str]]:
        for n in (2, 1):
            repo_id = "/".join(parts[:n])
            if repo_id in self.repos:
                return repo_id, parts[n:]
        return None, parts

    def _serve(self, handler, body: bool) -> None:
        path = unquote(handler.path.split("?")[0]).strip("/")
        self.requests.append(f"{handler.command} /{path}")
        parts = path.split("/")
        if parts[:2] == ["api", "models"]:
            return self._api(handler, parts[2:], body)
        repo_id, rest = self._repo(parts)
        if repo_id is None:
            return self._send(handler, 404, b"", {"X-Error-Code": "RepoNotFound"}, body)
        if len(rest) < 3 or rest[0] != "resolve":
            return self._send(handler, 404, b"", {"X-Error-Code": "EntryNotFound"}, body)
        file = self.repos[repo_id] / "/".join(rest[2:])
        if not file.is_file():
            return self._send(handler, 404, b"", {"X-Error-Code": "EntryNotFound"}, body)
        data = file.read_bytes()
        etag = hashlib.sha256(data).hexdigest()
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}
        self._send(handler, 200, data, headers, body)

    def _api(self, handler, parts: list[str], body: bool) -> None:
        repo_id, rest = self._repo(parts)
        if repo_id is None:
            return self._send(handler, 404, b"{}", {"X-Error-Code": "RepoNotFound"}, body)
        files = sorted(p.name for p in self.repos[repo_id].iterdir() if p.is_file())
        if rest[:1] == ["tree"]:  # a folder listing: only the root exists
            if len(rest) > 2:
                return self._send(handler, 404, b"{}", {"X-Error-Code": "EntryNotFound"}, body)
            payload = [
                {"type": "file", "path": f, "size": (self.repos[repo_id] / f).stat().st_size} for f in files
            ]
        else:
            payload = {"id": repo_id, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}
        self._send(handler, 200, json.dumps(payload).encode(), {"Content-Type": "application/json"}, body)

    @staticmethod
    def _send(handler, status: int, data: bytes, headers: dict, body: bool) -> None:
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)
