"""Building messages and handing them to a mail provider."""
