"""rsql-agent: the host daemon that runs RSQL scripts for a Step Functions activity."""

__version__ = "0.1.0"
