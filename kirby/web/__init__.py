"""Kirby's web package: the app factory is ``kirby.web.app.create_app``, the server ``kirby.web.server``.

Nothing is imported here: ``kirby.admin`` imports modules of this package (state, security,
run_now), and ``kirby.web.app`` — the one module here that imports ``kirby.admin`` — mounts it.
"""
