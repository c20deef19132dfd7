"""Pixels in and out: decoding uploads, resampling, encoding maps and files, drawing overlays."""
