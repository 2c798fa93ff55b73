"""The pages (go live, watch, the minimal WHEP player) and the JS client, served from web/.

`/static/*` is served with CORS headers so the platform's front end can import
`/static/bitbasel-media.js` from its own origin.
"""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, send_from_directory

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


async def send_web_file(name: str) -> Response:
    # conditional=False: no Range/If-None-Match handling. The files are a few KB, and
    # Quart 0.22's range code fails an assertion (a 500) on a Range past the end.
    return await send_from_directory(WEB_DIR, name, conditional=False)


def create_pages_blueprint() -> Blueprint:
    pages = Blueprint("pages", __name__)

    @pages.get("/")
    async def go_live() -> Response:
        return await send_web_file("golive.html")

    @pages.get("/watch/<room_id>")
    async def watch(room_id: str) -> Response:
        del room_id  # the page reads it from its own URL
        return await send_web_file("watch.html")

    @pages.get("/whep.html")
    async def whep_player() -> Response:
        return await send_web_file("whep.html")

    @pages.get("/static/<path:filename>")
    async def static_file(filename: str) -> Response:
        response = await send_web_file(filename)
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
