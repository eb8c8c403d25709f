"""Reading and writing images and videos, with input problems turned into one-line errors."""
