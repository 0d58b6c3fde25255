"""The router's A/B admin routes over HTTP (the same client works in front of the embedded server or vLLM)."""
from __future__ import annotations

import httpx

from qlora.serving.client import ServingClient, ServingError


class ABRouterApi:
    def __init__(self, client: ServingClient, timeout_s: float = 60.0):
        self.client = client
        headers = {"Authorization": f"Bearer {client.api_key}"} if client.api_key else {}
        self._http = httpx.Client(base_url=client.base_url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kw) -> dict:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ServingError(0, repr(exc), f"{method} {path}") from exc
        if response.status_code >= 400:
            raise ServingError(response.status_code, response.text, f"{method} {path}")
        return response.json()

    def start(self, alias: str, experiment_id: str, control: str, candidate: str, header: str) -> dict:
        return self._call("PUT", f"/admin/experiments/{alias}", json={
            "experiment_id": experiment_id, "control": control, "candidate": candidate, "assignment_header": header})

    def stop(self, alias: str) -> dict | None:
        try:
            return self._call("DELETE", f"/admin/experiments/{alias}")
        except ServingError as exc:
            if exc.status == 404:
                return None  # already stopped: stopping is idempotent
            raise

    def running(self) -> dict:
        return self._call("GET", "/admin/experiments")["experiments"]

    def journal_id(self) -> str:
        return self._call("GET", "/admin/journal/responses", params={"after": 0, "limit": 0})["journal_id"]

    def journal(self, table: str, after: int, page: int = 5000) -> list[dict]:
        """Every row of ``responses`` or ``feedback`` with seq > after, page by page, tagged with the journal's id."""
        rows: list[dict] = []
        while True:
            answer = self._call("GET", f"/admin/journal/{table}", params={"after": after, "limit": page})
            batch = answer["rows"]
            rows.extend({**row, "journal_id": answer["journal_id"]} for row in batch)
            if len(batch) < page:
                return rows
            after = batch[-1]["seq"]
