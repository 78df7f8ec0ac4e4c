"""Lung CT pattern classification (UIP vs NSIP): imaging, data, model, service."""
