"""Chat, SFT and preference-data operators: formats, export to TRL, preference pairs."""
