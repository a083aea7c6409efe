"""Faust agents and tables. Each module opens with its contract."""
