"""The Quart-Trio application: blueprints and error handlers over one ServerContext."""

from __future__ import annotations

from quart_trio import QuartTrio

from api.context import ServerContext
from api.responses import MAX_BODY_BYTES
from api.rest import create_debug_blueprint, create_rest_blueprint, register_error_handlers


def create_app(ctx: ServerContext) -> QuartTrio:
    app = QuartTrio("bitbasel_media_server")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True
    app.register_blueprint(create_rest_blueprint(ctx))
    if ctx.config.debug.fault_injection:
        app.register_blueprint(create_debug_blueprint(ctx))
    register_error_handlers(app)
    return app
