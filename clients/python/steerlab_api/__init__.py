"""Generated from proto/steerlab/v1 by scripts/gen_proto.py. Do not edit."""
