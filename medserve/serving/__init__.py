"""The shared serving layer every BentoML service in `bentos/` is built from."""
