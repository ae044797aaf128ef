"""Generated code for the parley.v1 protos. Do not edit."""
