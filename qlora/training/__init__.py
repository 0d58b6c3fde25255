"""Training: every module here may load transformers/peft, which load bitsandbytes; its offline
hub-kernel notice is dropped first (qlora/core/bnb_notice.py)."""
from qlora.core import bnb_notice  # noqa: F401
