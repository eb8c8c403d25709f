"""Face-swap training and inference: Original, SAEHD (DF / LIAE with -u -d -t) and Quick96."""
