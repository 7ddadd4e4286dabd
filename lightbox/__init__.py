"""Lightbox: validate third-party imaging AI inside the hospital firewall."""
