"""GitOps metadata: load, validate and resolve feeds, schemas and environments.

The one loader both the collector and the operator use::

    files = read_directory(Path("exchanges"))           # or built from ConfigMaps
    resolved = resolve_environment(files, "kalshi-prod", today)
    problems = validate_tree(files, today)              # everything, for `ssmd validate`
"""

from .errors import MetadataInvalid, Problem
from .model import (
    DEFAULT_CHANNELS,
    Catalog,
    Environment,
    Feed,
    FeedVersion,
    KeySpec,
    MarketSelector,
    Resolved,
    Schema,
    SchemaVersion,
    Storage,
    Subscription,
    derive_rest_endpoint,
)
from .parse import parse_tree
from .resolve import resolve_environment, validate_tree
from .source import read_directory

__all__ = [
    "DEFAULT_CHANNELS",
    "Catalog",
    "Environment",
    "Feed",
    "FeedVersion",
    "KeySpec",
    "MarketSelector",
    "MetadataInvalid",
    "Problem",
    "Resolved",
    "Schema",
    "SchemaVersion",
    "Storage",
    "Subscription",
    "derive_rest_endpoint",
    "parse_tree",
    "read_directory",
    "resolve_environment",
    "validate_tree",
]
