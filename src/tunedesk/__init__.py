"""TuneDesk: fine-tune pre-trained models on a local workstation, offline."""

__version__ = "0.1.0"
