"""The HTTP service (``querylife serve``): relevance, search and embeddings over a checkpoint and its store.

Example::

    from querylife.serve import ServeConfig, create_app, load_service
    app = create_app(ServeConfig(), load_service("runs/exp1/best", "runs/exp1/store", ServeConfig()))
"""

from .app import create_app
from .config import BatcherConfig, ServeConfig, load_serve_config
from .service import Service, load_service

__all__ = ["BatcherConfig", "ServeConfig", "Service", "create_app", "load_serve_config", "load_service"]
