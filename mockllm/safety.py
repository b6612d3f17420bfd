"""A mock content-safety service for tests and demos: ``python -m mockllm.safety --port N [--flag WORD=Category:S]``.

It speaks two protocols with deterministic answers:

- Azure AI Content Safety: ``POST /contentsafety/text:analyze`` and ``POST /contentsafety/text:shieldPrompt``
  (``api-version=2024-09-01`` required), with ``Ocp-Apim-Subscription-Key: <key>`` or ``Authorization: Bearer <key>``
  when ``--key`` is given;
- OpenAI moderation: ``POST /v1/moderations`` (and ``/moderations``), with ``Authorization: Bearer <key>``.

A text's severity in a category is the highest severity of the ``--flag`` words it contains (case-insensitive,
whole words). ``--blocklist NAME=WORD`` gives the resource a blocklist (matched when ``blocklistNames`` names it). A
user prompt containing the ``--attack`` phrase is an attack. A text containing ``--fail-word`` gets a 500. For
moderation, severity S is reported as the score ``S / 8`` (so Sluice's mapping, score times 8, gives S back).
``GET /stats`` counts the calls.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

CATEGORIES = ("Hate", "SelfHarm", "Sexual", "Violence")
MODERATION = {"Hate": "hate", "SelfHarm": "self-harm", "Sexual": "sexual", "Violence": "violence"}
API_VERSION = "2024-09-01"
MAX_CHARS = 10_000


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"error": {"code": code, "message": message}}, status)


class SafetyService:
    def __init__(
        self,
        flags: dict[str, tuple[str, int]],
        attack: str,
        key: str | None,
        fail_word: str = "",
        blocklists: dict[str, set[str]] | None = None,
    ) -> None:
        self.flags = flags
        self.blocklists = blocklists or {}
        self.fail_word = fail_word.lower()
        self.attack = attack.lower()
        self.key = key
        self.stats: Counter[str] = Counter()

    def severities(self, text: str) -> dict[str, int]:
        words = set(re.findall(r"\w+", text.lower()))
        found = dict.fromkeys(CATEGORIES, 0)
        for word, (category, severity) in self.flags.items():
            if word in words:
                found[category] = max(found[category], severity)
        return found

    def _authorised(self, request: web.Request, *, bearer_only: bool = False) -> bool:
        if self.key is None:
            return True
        if request.headers.get("Authorization") == f"Bearer {self.key}":
            return True
        return not bearer_only and request.headers.get("Ocp-Apim-Subscription-Key") == self.key

    async def _body(self, request: web.Request) -> dict[str, Any] | None:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    def _azure_refusal(self, request: web.Request, operation: str) -> web.Response | None:
        """Count the call; the error answer for a wrong api-version or key, else None."""
        self.stats[operation] += 1
        if request.query.get("api-version") != API_VERSION:
            return _error(404, "ApiVersionUnsupported", "api-version 2024-09-01 is required")
        if not self._authorised(request):
            return _error(401, "Unauthorized", "invalid key")
        return None

    async def analyze(self, request: web.Request) -> web.Response:
        refusal = self._azure_refusal(request, "analyze")
        if refusal is not None:
            return refusal
        body = await self._body(request)
        if body is None or not isinstance(body.get("text"), str):
            return _error(400, "InvalidRequestBody", "text is required")
        text = body["text"]
        if self.fail_word and self.fail_word in text.lower():
            return _error(500, "InternalServerError", "the service failed (--fail-word)")
        if len(text) > MAX_CHARS:
            return _error(400, "InvalidRequestBody", "text is longer than 10000 characters")
        four = body.get("outputType", "FourSeverityLevels") == "FourSeverityLevels"
        wanted = body.get("categories") or list(CATEGORIES)
        severities = self.severities(text)
        analysis = [
            {"category": name, "severity": severities[name] - severities[name] % 2 if four else severities[name]}
            for name in wanted
            if name in severities
        ]
        words = set(re.findall(r"\w+", text.lower()))
        matches = [
            {"blocklistName": name, "blocklistItemId": f"{name}-{word}", "blocklistItemText": word}
            for name in body.get("blocklistNames") or []
            for word in sorted(self.blocklists.get(name, set()) & words)
        ]
        if matches and body.get("haltOnBlocklistHit"):
            analysis = []
        return _json({"blocklistsMatch": matches, "categoriesAnalysis": analysis})

    async def shield(self, request: web.Request) -> web.Response:
        refusal = self._azure_refusal(request, "shield")
        if refusal is not None:
            return refusal
        body = await self._body(request)
        if body is None:
            return _error(400, "InvalidRequestBody", "a JSON object is required")
        prompt = str(body.get("userPrompt", "")).lower()
        documents = [str(d).lower() for d in body.get("documents") or []]
        return _json(
            {
                "userPromptAnalysis": {"attackDetected": bool(self.attack) and self.attack in prompt},
                "documentsAnalysis": [{"attackDetected": bool(self.attack) and self.attack in d} for d in documents],
            }
        )

    async def moderations(self, request: web.Request) -> web.Response:
        self.stats["moderations"] += 1
        if not self._authorised(request, bearer_only=True):
            return _error(401, "invalid_api_key", "invalid key")
        body = await self._body(request)
        inputs = body.get("input") if body is not None else None
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            return _error(400, "invalid_request_error", "input must be a string or a list of strings")
        results = []
        for text in inputs:
            severities = self.severities(text)
            scores = {MODERATION[name]: severities[name] / 8 for name in CATEGORIES}
            scores.update({"harassment": 0.0, "violence/graphic": 0.0, "illicit": 0.0})
            results.append(
                {
                    "flagged": any(score >= 0.5 for score in scores.values()),
                    "categories": {name: score >= 0.5 for name, score in scores.items()},
                    "category_scores": scores,
                }
            )
        return _json({"id": "modr-mock", "model": "omni-moderation-latest", "results": results})

    async def stats_view(self, request: web.Request) -> web.Response:
        return _json(dict(self.stats))

    async def health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/contentsafety/text:analyze", self.analyze)
        app.router.add_post("/contentsafety/text:shieldPrompt", self.shield)
        app.router.add_post("/v1/moderations", self.moderations)
        app.router.add_post("/moderations", self.moderations)
        app.router.add_get("/stats", self.stats_view)
        app.router.add_get("/health", self.health)
        return app


def _flag(value: str) -> tuple[str, tuple[str, int]]:
    word, _, rest = value.partition("=")
    category, _, severity = rest.partition(":")
    if not word or category not in CATEGORIES or not severity.isdigit() or int(severity) > 7:
        raise argparse.ArgumentTypeError(f"expected WORD=Category:0-7 with a category of {CATEGORIES}, got {value!r}")
    return word.lower(), (category, int(severity))


def _blocklist(value: str) -> tuple[str, str]:
    name, _, word = value.partition("=")
    if not name or not word:
        raise argparse.ArgumentTypeError(f"expected NAME=WORD, got {value!r}")
    return name, word.lower()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mockllm.safety", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--flag", type=_flag, action="append", default=[], help="WORD=Category:severity")
    parser.add_argument("--attack", default="ignore previous instructions", help="phrase that is a prompt attack")
    parser.add_argument("--key", default=None, help="require this key (Ocp-Apim-Subscription-Key or Bearer)")
    parser.add_argument("--fail-word", default="", help="text:analyze answers 500 for a text containing it")
    parser.add_argument(
        "--blocklist", type=_blocklist, action="append", default=[], help="NAME=WORD: a blocklist of the resource"
    )
    args = parser.parse_args(argv)
    blocklists: dict[str, set[str]] = {}
    for name, word in args.blocklist:
        blocklists.setdefault(name, set()).add(word)
    service = SafetyService(dict(args.flag), args.attack, args.key, args.fail_word, blocklists)
    web.run_app(service.app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
