"""A tiny local stand-in for the Hugging Face Hub API, enough for huggingface_hub 2.x's
`create_repo` + `upload_folder` (every file uploaded inline as a "regular" file, no LFS/xet).

    hub = FakeHub(tmp_path / "hub", token="hf_test")   # starts uvicorn on 127.0.0.1 in a thread
    env["HF_ENDPOINT"] = hub.url                         # set before huggingface_hub is imported
    hub.files("me/model")                                # {path: bytes} of the last commits
    hub.requests                                         # (method, path) of every request seen
    hub.stop()
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

SHA = "0" * 40


class FakeHub:
    def __init__(self, root: Path, token: str):
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        self.root, self.token = Path(root), token
        self.root.mkdir(parents=True, exist_ok=True)
        self.repos: dict[str, dict[str, Any]] = {}
        self.commits: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.cards: list[dict[str, Any]] = []      # model card metadata the client sent for validation
        self.card_errors: list[str] = []

        def authorized(request: Request) -> bool:
            return request.headers.get("authorization") == f"Bearer {self.token}"

        def denied() -> JSONResponse:
            return JSONResponse({"error": "Invalid credentials in Authorization header"}, status_code=401)

        async def create(request: Request) -> JSONResponse:
            self.requests.append(("POST", request.url.path))
            if not authorized(request):
                return denied()
            body = await request.json()
            repo_id = f"{body.get('organization')}/{body['name']}"
            if repo_id in self.repos:
                return JSONResponse({"error": "You already created this model repo"}, status_code=409)
            self.repos[repo_id] = {"private": body.get("visibility") == "private", "type": body.get("type")}
            return JSONResponse({"url": f"{self.url}/{repo_id}", "name": repo_id})

        async def info(request: Request) -> JSONResponse:
            self.requests.append(("GET", request.url.path))
            if not authorized(request):
                return denied()
            repo_id = f"{request.path_params['owner']}/{request.path_params['name']}"
            if repo_id not in self.repos:
                return JSONResponse({"error": "Repository not found"}, status_code=404,
                                    headers={"X-Error-Code": "RepoNotFound"})
            return JSONResponse({"id": repo_id, "sha": SHA, "private": self.repos[repo_id]["private"], "siblings": []})

        async def preupload(request: Request) -> JSONResponse:
            self.requests.append(("POST", request.url.path))
            if not authorized(request):
                return denied()
            body = await request.json()
            return JSONResponse({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                           for f in body["files"]]})

        async def commit(request: Request) -> JSONResponse:
            self.requests.append(("POST", request.url.path))
            if not authorized(request):
                return denied()
            repo_id = f"{request.path_params['owner']}/{request.path_params['name']}"
            if repo_id not in self.repos:
                return JSONResponse({"error": "Repository not found"}, status_code=404)
            lines = [json.loads(x) for x in (await request.body()).decode().splitlines() if x.strip()]
            header = next(x["value"] for x in lines if x["key"] == "header")
            files = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"}
            for path, data in files.items():
                target = self.root / repo_id / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            self.commits.append({"repo": repo_id, "summary": header.get("summary"), "files": sorted(files)})
            return JSONResponse({"commitUrl": f"{self.url}/{repo_id}/commit/{SHA}", "commitOid": SHA,
                                 "success": True})

        async def validate_yaml(request: Request) -> JSONResponse:
            """The whole README.md: its YAML front matter must parse to a mapping."""
            import yaml

            self.requests.append(("POST", request.url.path))
            content = (await request.json()).get("content", "")
            try:
                if not content.startswith("---\n") or "\n---\n" not in content[4:]:
                    raise ValueError("README.md has no YAML front matter")
                meta = yaml.safe_load(content[4:].split("\n---\n", 1)[0])
                if not isinstance(meta, dict):
                    raise ValueError("metadata is not a mapping")
            except (ValueError, yaml.YAMLError) as e:
                self.card_errors.append(str(e))
                return JSONResponse({"errors": [{"message": str(e)}]}, status_code=400)
            self.cards.append(meta)
            return JSONResponse({"warnings": []})

        async def other(request: Request) -> JSONResponse:
            self.requests.append((request.method, request.url.path))
            return JSONResponse({"error": "not implemented by the fake hub"}, status_code=404)

        app = Starlette(routes=[
            Route("/api/repos/create", create, methods=["POST"]),
            Route("/api/validate-yaml", validate_yaml, methods=["POST"]),
            Route("/api/models/{owner}/{name}/preupload/{revision}", preupload, methods=["POST"]),
            Route("/api/models/{owner}/{name}/commit/{revision}", commit, methods=["POST"]),
            Route("/api/models/{owner}/{name}", info, methods=["GET"]),
            Route("/api/models/{owner}/{name}/revision/{revision}", info, methods=["GET"]),
            Route("/{path:path}", other, methods=["GET", "POST", "PUT", "HEAD", "DELETE"]),
        ])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake hub did not start")
            time.sleep(0.05)

    def files(self, repo_id: str) -> dict[str, bytes]:
        base = self.root / repo_id
        return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
