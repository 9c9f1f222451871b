"""The map explorer: a local web page that draws a dataset's map and lets a curator work in it.

``atlas serve DATASET`` starts it; :func:`create_app` builds the Starlette application.
"""

from atlas_assets.explorer.server import create_app

__all__ = ["create_app"]
