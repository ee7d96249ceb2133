"""One module per LLM provider; each turns a ChatMessage list into a ProviderReply (see base.py)."""
