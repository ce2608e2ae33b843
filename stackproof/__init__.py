"""stackproof's pytest plugin: target model, evidence and the validation report."""

__version__ = "0.1.0"
