"""Run configuration shared by the server and the clients: parsed once, checked, typed."""

from runconfig.fields import ConfigError
from runconfig.schema import RunConfig, parse_run_config

__all__ = ["ConfigError", "RunConfig", "parse_run_config"]
