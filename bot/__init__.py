"""Étude: an LSTM that composes music, as a library, a command line and a Discord bot."""

__version__ = "0.1.0"
