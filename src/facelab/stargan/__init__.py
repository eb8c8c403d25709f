"""StarGAN (Choi et al. 2018): one generator that edits facial attributes into several target domains."""
