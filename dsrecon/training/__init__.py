"""Generalized teacher forcing: data preparation, batches, the forcing schedule and the trainer."""
