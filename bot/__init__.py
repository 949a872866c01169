"""feedwatch: polls news feeds and posts keyword matches to Slack channels."""

__version__ = "0.1.0"
