"""harbor gateway: LiteLLM's proxy with harbor's database layer (db.py) and disclosure docs."""
