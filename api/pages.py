"""The pages (go live, watch) and the JS client, served from web/.

`/static/*` is served with CORS headers so the platform's front end can import
`/static/bitbasel-media.js` from its own origin.
"""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, send_from_directory

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def create_pages_blueprint() -> Blueprint:
    pages = Blueprint("pages", __name__)

    @pages.get("/")
    async def go_live() -> Response:
        return await send_from_directory(WEB_DIR, "golive.html")

    @pages.get("/watch/<room_id>")
    async def watch(room_id: str) -> Response:
        del room_id  # the page reads it from its own URL
        return await send_from_directory(WEB_DIR, "watch.html")

    @pages.get("/static/<path:filename>")
    async def static_file(filename: str) -> Response:
        response = await send_from_directory(WEB_DIR, filename)
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Cache-Control"] = "no-cache"
        return response

    @pages.route("/static/<path:filename>", methods=["OPTIONS"])
    async def static_preflight(filename: str) -> Response:
        del filename
        return Response(
            "",
            status=204,
            headers={
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "GET, OPTIONS",
                "Access-Control-Allow-Headers": "*",
                "Access-Control-Max-Age": "86400",
            },
        )

    return pages
