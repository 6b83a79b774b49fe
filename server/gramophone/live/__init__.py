"""The live server: sessions, workers, the dry-answer watchdog, and the style library it serves."""
