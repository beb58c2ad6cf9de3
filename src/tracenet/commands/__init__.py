"""Implementations behind `tracenet` subcommands (imported lazily by tracenet.cli)."""
