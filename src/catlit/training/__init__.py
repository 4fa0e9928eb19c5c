"""The LightningModule and the Hydra-driven training pipeline."""
