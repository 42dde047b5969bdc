"""ebmkit's built-in plug-ins (import name ``ebmkit_plugins``).

Every module here is registered through the entry-point group ``ebmkit`` in
pyproject.toml -- the same way a third-party distribution registers its own.
The core package ``ebmkit`` never imports this package.
"""
