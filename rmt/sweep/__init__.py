"""Reports over a Hydra multirun of ``rmt-train -m`` (``rmt-report``)."""
