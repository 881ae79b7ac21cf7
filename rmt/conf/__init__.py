"""Packaged Hydra configs of rmt-train and rmt-eval (a package so Hydra finds them after install)."""
