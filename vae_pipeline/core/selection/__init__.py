"""Choosing between models: promotion gates, version comparison, sweep variants and their table."""
