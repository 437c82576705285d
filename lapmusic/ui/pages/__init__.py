"""One module per tab of the app; each has ``render(settings)``."""
